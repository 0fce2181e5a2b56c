"""What a training run builds from its config before its first epoch: device, data, model, optimisation.

trainer/train.py builds it, resumes into it and runs its epoch loop; scripts/benchmark.py builds the very
same objects to time the loop against a hand-written one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from trainer.build import build_data, build_model
from trainer.data.base import DataModule
from trainer.training.distributed import Distributed, wrap_model
from trainer.training.ema import create_ema
from trainer.training.loop import Batches, local_finite, train_epoch
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


@dataclass
class RunSetup:
    """The objects of one training run, and `train_epoch` with the run's settings."""

    cfg: DictConfig
    device: torch.device
    precision: Precision
    memory_format: torch.memory_format  # channels_last or preserve, for the model and its inputs
    datamodule: DataModule
    model: nn.Module  # the module whose weights checkpoints save
    train_model: nn.Module  # the module that trains: `model`, DDP-wrapped under torchrun, compiled when asked
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler
    regularization: Regularization
    ema: nn.Module | None
    scaler: torch.amp.GradScaler
    train_loader: Iterable
    val_loader: Iterable
    train_steps: int  # batches an epoch trains on (limit_train_batches applied)
    val_steps: int
    is_finite: Callable[[torch.Tensor], bool] | None  # the per-step loss check; None: only at log reads

    def train_epoch(self, batches: Batches, **progress: Any) -> EpochStats:
        """`trainer.training.loop.train_epoch` over `batches` with this run's model, optimisation and trainer settings;
        `progress` passes the loop's resume and hook arguments (stats, start_batch, on_step, after_step)."""
        tcfg = self.cfg.trainer
        return train_epoch(self.train_model, batches, self.regularization, self.optimizer, self.scheduler,
                           self.scaler, self.precision, grad_clip_norm=tcfg.grad_clip_norm,
                           accumulate=tcfg.accumulate_grad_batches, ema=self.ema,
                           skip_nonfinite=tcfg.skip_nonfinite, log_every=tcfg.log_every_n_steps,
                           memory_format=self.memory_format, is_finite=self.is_finite, **progress)


def build_run(cfg: DictConfig, ctx: Distributed | None = None,
              rank_device: torch.device | None = None) -> RunSetup:
    """Seed, pick the device, build data, model (wrapped and compiled), optimizer, scheduler, EMA and scaler.

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
    model = build_model(cfg.model)
    if ctx.enabled and tcfg.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device, memory_format=fmt)
    optimizer = create_optimizer(cfg.optim, model)
    regularization = instantiate(cfg.regularization)
    ema = create_ema(model, regularization.ema_decay) if regularization.ema_decay else None
    train_model = compile_model(wrap_model(model, ctx, device), tcfg.compile, tcfg.compile_mode,
                                tcfg.compile_backend)
    # Under torchrun every rank checks every step (an all-reduce), so that all of them stop together.
    is_finite = ctx.all_finite if ctx.enabled else local_finite if tcfg.check_nonfinite_every_step else None
    pin_memory = device.type == "cuda"
    shard = {"device": device, "rank": ctx.rank, "world_size": ctx.world_size}
    train_loader = datamodule.train_loader(cfg.seed, pin_memory, **shard)
    val_loader = datamodule.val_loader(pin_memory, **shard)
    train_steps = min(len(train_loader), tcfg.limit_train_batches or len(train_loader))
    val_steps = min(len(val_loader), tcfg.limit_val_batches or len(val_loader))
    scheduler = create_scheduler(cfg.scheduler, optimizer,
                                 steps_per_epoch=math.ceil(train_steps / tcfg.accumulate_grad_batches),
                                 max_epochs=tcfg.max_epochs)
    return RunSetup(cfg, device, precision, fmt, datamodule, model, train_model, optimizer, scheduler,
                    regularization, ema, precision.grad_scaler(), train_loader, val_loader, train_steps, val_steps,
                    is_finite)
