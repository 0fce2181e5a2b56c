"""What a training run builds from its config before its first epoch: device, data, model, optimisation.

trainer/training/train.py builds it, restores a checkpoint into it and runs its epoch loop; scripts/benchmark.py
(scripts/bench_measure.py) builds the very same objects to time the loop against a hand-written one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from trainer.build import build_data, build_model, without_weight_sources
from trainer.data.base import DataModule
from trainer.training.distributed import Distributed, wrap_model
from trainer.training.ema import ModelEma, create_ema
from trainer.training.freeze import freeze
from trainer.training.init_from import start_model
from trainer.training.loop import Batches, LoopSettings, local_finite, train_epoch
from trainer.training.metrics import EpochStats
from trainer.training.optim import Scheduler, create_optimizer, create_scheduler
from trainer.training.regularization import Regularization
from trainer.training.runtime import (
    Precision,
    compile_model,
    configure_determinism,
    memory_format,
    seed_everything,
    select_device,
)
from trainer.training.whitening import whiten_first_layer


@dataclass
class RunSetup:
    """The objects of one training run, and the settings its `train_epoch` runs with."""

    cfg: DictConfig
    ctx: Distributed  # this process's place in a torchrun job (one process: world_size 1)
    device: torch.device
    datamodule: DataModule
    model: nn.Module  # the module whose weights checkpoints save
    train_model: nn.Module  # the module that trains: `model`, DDP-wrapped under torchrun, compiled when asked
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    regularization: Regularization
    ema: ModelEma | None  # the EMA of the weights (regularization.ema_decay), validated beside the model
    scaler: torch.amp.GradScaler
    settings: LoopSettings  # precision, memory format, clipping, accumulation, the non-finite loss check
    train_loader: Iterable
    val_loader: Iterable
    train_steps: int  # batches an epoch trains on (limit_train_batches applied)
    val_steps: int
    notes: list[str] = field(default_factory=list)  # console lines on how the model started (init_from, freeze)

    @property
    def precision(self) -> Precision:
        return self.settings.precision

    def train_epoch(self, batches: Batches, **progress: Any) -> EpochStats:
        """`train_epoch(batches)` with this run's parts; `progress` passes stats, start_batch, on_step, after_step."""
        return train_epoch(self.train_model, batches, self.regularization, self.optimizer, self.scheduler,
                           self.scaler, self.settings, ema=self.ema, **progress)


def build_run(cfg: DictConfig, ctx: Distributed | None = None,
              rank_device: torch.device | None = None, resumed: bool = False) -> RunSetup:
    """Seed, pick the device, build data, model (wrapped and compiled), optimizer, scheduler, EMA and scaler.

    The model starts from `model.init_from`'s weights unless the run is `resumed` (its checkpoint holds them),
    its whitening layer (`model.whiten_init`) set from the training images before that;
    `model.freeze` freezes part of it once the optimizer holds every parameter, before DDP wraps it.

    Under torchrun (`ctx`) each rank seeds `seed + rank` (its own dropout and mixup draws; DDP copies rank 0's
    initial weights), trains on `rank_device` and its shard of the data, and rank 0 alone downloads.
    """
    ctx = ctx or Distributed()
    tcfg = cfg.trainer
    seed_everything(cfg.seed + ctx.rank)
    device = rank_device or select_device(tcfg.device)
    configure_determinism(tcfg.deterministic, device)
    precision = Precision(tcfg.precision, device)
    fmt = memory_format(tcfg.channels_last)
    first_rank_prepares = ctx.enabled and bool(cfg.data.get("download"))  # one download, not one per rank
    if first_rank_prepares and not ctx.is_main:
        ctx.barrier()
    datamodule = build_data(cfg)
    if first_rank_prepares and ctx.is_main:
        ctx.barrier()
    model = build_model(without_weight_sources(cfg.model) if resumed else cfg.model)
    notes = whiten_first_layer(model, datamodule, bool(cfg.model.get("whiten_init")), resumed)
    notes += start_model(model, cfg.model.get("init_from"), resumed, datamodule.classes)
    if ctx.enabled and tcfg.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device, memory_format=fmt)
    optimizer = create_optimizer(cfg.optim, model)
    notes += freeze(model, list(cfg.model.get("freeze") or []))
    regularization = instantiate(cfg.regularization)
    if regularization.class_weights is not None:  # each rank computes the same weights from the same labels
        regularization.use_class_weights(datamodule.train_labels(), cfg.data.num_classes, device)
    ema = create_ema(model, regularization.ema_decay, warmup=regularization.ema_warmup,
                     every_n_steps=regularization.ema_every_n_steps) if regularization.ema_decay else None
    train_model = compile_model(wrap_model(model, ctx, device), tcfg.compile, tcfg.compile_mode,
                                tcfg.compile_backend)
    pin_memory = device.type == "cuda"  # the auto value, which data.pin_memory overrides (DataModule.pins)
    shard = {"device": device, "rank": ctx.rank, "world_size": ctx.world_size}
    train_loader = datamodule.train_loader(cfg.seed, pin_memory, **shard)
    val_loader = datamodule.val_loader(pin_memory, **shard)
    train_steps = min(len(train_loader), tcfg.limit_train_batches or len(train_loader))
    val_steps = min(len(val_loader), tcfg.limit_val_batches or len(val_loader))
    scheduler = create_scheduler(cfg.scheduler, optimizer,
                                 steps_per_epoch=math.ceil(train_steps / tcfg.accumulate_grad_batches),
                                 max_epochs=tcfg.max_epochs)
    return RunSetup(cfg, ctx, device, datamodule, model, train_model, optimizer, scheduler, regularization, ema,
                    precision.grad_scaler(), loop_settings(tcfg, ctx, precision, fmt), train_loader, val_loader,
                    train_steps, val_steps, notes)


def loop_settings(tcfg: DictConfig, ctx: Distributed, precision: Precision,
                  fmt: torch.memory_format) -> LoopSettings:
    """The `trainer` group's loop settings. Under torchrun every rank checks every step's loss (an all-reduce),
    so that all of them skip or stop together."""
    is_finite = ctx.all_finite if ctx.enabled else local_finite if tcfg.check_nonfinite_every_step else None
    return LoopSettings(precision, fmt, tcfg.grad_clip_norm, tcfg.accumulate_grad_batches, tcfg.skip_nonfinite,
                        tcfg.log_every_n_steps, is_finite)
