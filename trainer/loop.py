"""One training epoch and one validation pass: the guide's train_epoch and validate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from trainer.metrics import EpochStats, RunningStats
from trainer.optim import Scheduler
from trainer.regularization import MixedTargets, Regularization
from trainer.runtime import Precision

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def train_epoch(model: nn.Module, batches: Batches, regularization: Regularization,
                optimizer: torch.optim.Optimizer, scheduler: Scheduler, scaler: torch.amp.GradScaler,
                precision: Precision, *, grad_clip_norm: float | None = None, accumulate: int = 1,
                ema: AveragedModel | None = None, log_every: int = 20,
                on_step: Callable[[int, float | None], None] = lambda done, loss: None) -> EpochStats:
    """forward -> loss -> backward, and every `accumulate` batches: clip -> step -> scheduler -> EMA.

    Loss and accuracy are summed on the device; the host reads them only every `log_every` batches.
    `EpochStats.steps` counts optimizer steps (a partial accumulation at the end of the epoch steps too).
    """
    device = precision.device
    model.train()
    stats = RunningStats(device)
    optimizer_steps = pending = 0

    def optimizer_step() -> None:
        if grad_clip_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step_batch()
        if ema is not None:
            ema.update_parameters(model)

    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for batch, (inputs, targets) in enumerate(batches, start=1):
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        inputs, mixed_targets = regularization.mix(inputs, targets)
        with precision.autocast():
            logits, loss = forward_with_aux(model, inputs, mixed_targets, regularization.loss)
        scaler.scale(loss / accumulate).backward()
        pending += 1
        if pending == accumulate:
            optimizer_step()
            optimizer_steps, pending = optimizer_steps + 1, 0
        hits_on = mixed_targets.dominant() if isinstance(mixed_targets, MixedTargets) else targets
        stats.update(loss, logits, hits_on)
        on_step(batch, stats.mean_loss() if batch % log_every == 0 else None)
    if pending:
        optimizer_step()
        optimizer_steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return replace(stats.snapshot(time.perf_counter() - start), steps=optimizer_steps)


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


@torch.inference_mode()
def validate(model: nn.Module, batches: Batches, criterion: nn.Module, precision: Precision) -> EpochStats:
    device = precision.device
    model.eval()
    stats = RunningStats(device)
    start = time.perf_counter()
    for inputs, targets in batches:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(inputs)
            loss = criterion(logits, targets)
        stats.update(loss, logits, targets)
    return stats.snapshot(time.perf_counter() - start)

