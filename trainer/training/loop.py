"""One training epoch and one validation pass: the guide's train_epoch and validate."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from trainer.errors import TrainerError
from trainer.training.ema import ModelEma
from trainer.training.metrics import EpochStats, PredictionCollector, RunningStats
from trainer.training.optim import Scheduler
from trainer.training.regularization import MixedTargets, Regularization
from trainer.training.runtime import Precision

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class NonFiniteLoss(TrainerError):
    """The loss became NaN or infinite; `batch` counts from 1 within the epoch."""

    def __init__(self, batch: int) -> None:
        super().__init__(f"non-finite loss at batch {batch}")
        self.batch = batch


def local_finite(loss: torch.Tensor) -> bool:
    """Whether this process's loss is finite (reads it on the host: a sync on CUDA)."""
    return bool(torch.isfinite(loss))


@dataclass(frozen=True)
class LoopSettings:
    """How `train_epoch` runs each batch, from the `trainer` config group (see trainer/training/setup.py)."""

    precision: Precision
    memory_format: torch.memory_format = torch.preserve_format  # channels_last for the inputs, or as they are
    grad_clip_norm: float | None = None
    accumulate: int = 1  # batches whose gradients are summed per optimizer step
    skip_nonfinite: bool = False  # drop a batch whose loss is not finite (counted) instead of stopping
    log_every: int = 20  # the host reads the running loss every this many batches
    # The per-batch loss check (a host sync; under DDP an all-reduce so that ranks agree); None: the loss is
    # checked only where the host reads it anyway, every `log_every` batches and at the end of the epoch.
    is_finite: Callable[[torch.Tensor], bool] | None = local_finite


def train_epoch(model: nn.Module, batches: Batches, regularization: Regularization,
                optimizer: torch.optim.Optimizer, scheduler: Scheduler, scaler: torch.amp.GradScaler,
                settings: LoopSettings, *, ema: ModelEma | None = None, stats: RunningStats | None = None,
                start_batch: int = 0, on_step: Callable[[int, float | None], None] = lambda done, loss: None,
                after_step: Callable[[int, RunningStats], None] = lambda done, stats: None) -> EpochStats:
    """forward -> loss -> backward, and every `settings.accumulate` batches: clip -> step -> scheduler -> EMA.

    Loss and accuracy are summed on the device; the host reads them only every `log_every` batches.
    A resumed epoch passes its partial `stats` and the `start_batch` it stopped at. `after_step(batches
    done, stats)` runs after every optimizer step (the run's hooks: checkpoints, a graceful stop).
    A non-finite loss raises NonFiniteLoss, or with `skip_nonfinite` drops that batch and counts it in
    `stats.skipped`. `EpochStats.steps` counts optimizer steps (a partial accumulation at the end steps too).
    """
    device, precision, accumulate = settings.precision.device, settings.precision, settings.accumulate
    model.train()
    stats = stats or RunningStats(device)
    optimizer_steps = pending = 0
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    batch = start_batch
    for batch, (inputs, targets) in enumerate(batches, start=start_batch + 1):
        inputs = inputs.to(device, non_blocking=True, memory_format=settings.memory_format)
        targets = targets.to(device, non_blocking=True)
        inputs, mixed_targets = regularization.mix(inputs, targets)
        with precision.autocast():
            logits, loss = forward_with_aux(model, inputs, mixed_targets, regularization.loss)
        if settings.is_finite is not None and not settings.is_finite(loss):
            if not settings.skip_nonfinite:
                raise NonFiniteLoss(batch)
            stats.skipped += 1
        else:
            scaler.scale(loss / accumulate).backward()
            pending += 1
            hits_on = mixed_targets.dominant() if isinstance(mixed_targets, MixedTargets) else targets
            stats.update(loss, logits, hits_on)
        if pending == accumulate:
            optimizer_step(model, optimizer, scheduler, scaler, ema, settings.grad_clip_norm)
            optimizer_steps, pending = optimizer_steps + 1, 0
            after_step(batch, stats)
        # a host read every log_every batches, and at the first (the progress bar shows a loss at once)
        mean_loss = stats.mean_loss() if batch % settings.log_every == 0 or batch == start_batch + 1 else None
        if mean_loss is not None and not math.isfinite(mean_loss):
            raise NonFiniteLoss(batch)
        on_step(batch, mean_loss)
    if pending:
        optimizer_step(model, optimizer, scheduler, scaler, ema, settings.grad_clip_norm)
        optimizer_steps += 1
        after_step(batch, stats)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    epoch_stats = replace(stats.snapshot(time.perf_counter() - start), steps=optimizer_steps)
    if not math.isfinite(epoch_stats.loss):
        raise NonFiniteLoss(batch)
    return epoch_stats


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Scheduler,
                   scaler: torch.amp.GradScaler, ema: ModelEma | None, grad_clip_norm: float | None) -> None:
    """Clip (after unscaling), step, clear the gradients, advance a per-step schedule, update the EMA."""
    if grad_clip_norm is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step_batch()
    if ema is not None:
        ema.update(model)


AUX_LOSS_WEIGHT = 0.3  # GoogLeNet's weight for its auxiliary classifiers' losses


def forward_with_aux(model: nn.Module, inputs: torch.Tensor, targets: Any,
                     criterion: Callable[[torch.Tensor, Any], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and loss; a model that returns (logits, *aux_logits) in training adds 0.3 x each aux loss."""
    outputs = model(inputs)
    if not isinstance(outputs, tuple):
        return outputs, criterion(outputs, targets)
    logits, *aux = outputs
    loss = criterion(logits, targets)
    for aux_logits in aux:
        loss = loss + AUX_LOSS_WEIGHT * criterion(aux_logits, targets)
    return logits, loss


def validate(model: nn.Module, batches: Batches, criterion: nn.Module, precision: Precision,
             memory_format: torch.memory_format = torch.preserve_format,
             collect: PredictionCollector | None = None) -> EpochStats:
    """Loss and accuracy of `model` in eval mode over `batches`, summed on the device (the host reads them once,
    at the end). With `collect`, the pass also gathers the report's predictions: read them with
    `collect.result()`."""
    return validate_models({"model": model}, batches, criterion, precision, memory_format,
                           {"model": collect} if collect is not None else None)["model"]


@torch.inference_mode()
def validate_models(models: dict[str, nn.Module], batches: Batches, criterion: nn.Module, precision: Precision,
                    memory_format: torch.memory_format = torch.preserve_format,
                    collect: dict[str, PredictionCollector] | None = None) -> dict[str, EpochStats]:
    """`validate` for several models (the weights and their EMA) in one read of `batches`: each batch is loaded,
    decoded and moved once, then scored by every model. `collect` names the models whose predictions to gather."""
    device, collect = precision.device, collect or {}
    for model in models.values():
        model.eval()
    stats = {name: RunningStats(device) for name in models}
    start = time.perf_counter()
    for raw, targets in batches:
        inputs = raw.to(device, non_blocking=True, memory_format=memory_format)
        targets = targets.to(device, non_blocking=True)
        for name, model in models.items():
            with precision.autocast():
                logits = model(inputs)
                loss = criterion(logits, targets)
            stats[name].update(loss, logits, targets)
            if name in collect:
                collect[name].add(raw, logits, targets)
    seconds = time.perf_counter() - start
    return {name: running.snapshot(seconds) for name, running in stats.items()}
