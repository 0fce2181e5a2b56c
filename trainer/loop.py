"""One training epoch and one validation pass: the guide's train_epoch and validate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from trainer.metrics import EpochStats, RunningStats
from trainer.optim import Scheduler
from trainer.runtime import Precision

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def train_epoch(model: nn.Module, batches: Batches, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Scheduler, scaler: torch.amp.GradScaler, precision: Precision, *,
                grad_clip_norm: float | None = None, log_every: int = 20,
                on_step: Callable[[int, float | None], None] = lambda done, loss: None) -> EpochStats:
    """zero_grad -> forward -> loss -> backward -> clip -> step -> per-step scheduler, over `batches`.

    Loss and accuracy are summed on the device; the host reads them only every `log_every` steps.
    """
    device = precision.device
    model.train()
    stats = RunningStats(device)
    start = time.perf_counter()
    for step, (inputs, targets) in enumerate(batches, start=1):
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            logits = model(inputs)
            loss = criterion(logits, targets)
        scaler.scale(loss).backward()
        if grad_clip_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        if scheduler.interval == "step":
            scheduler.scheduler.step()
        stats.update(loss, logits, targets)
        on_step(step, stats.mean_loss() if step % log_every == 0 else None)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return stats.snapshot(time.perf_counter() - start)


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

