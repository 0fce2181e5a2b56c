"""Accuracy counting that stays on the device, so the hot loop never waits for the host."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def topk_correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """How many rows have `target` among their k highest logits (a 0-dim tensor on logits' device)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == target.unsqueeze(1)).any(dim=1).sum()


class RunningStats:
    """Sums of loss, top-1 and top-5 hits kept as device tensors; read them with `snapshot()`.

    Top-5 is tracked only when there are more than 5 classes.
    """

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.top1 = torch.zeros((), device=device, dtype=torch.long)
        self.top5: torch.Tensor | None = None
        self.samples = 0
        self.skipped = 0  # batches dropped for a non-finite loss

    def update(self, loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> None:
        batch = target.shape[0]
        if self.samples == 0 and logits.shape[1] > 5:
            self.top5 = torch.zeros_like(self.top1)
        self.loss_sum += loss.detach().double() * batch
        self.top1 += topk_correct(logits.detach(), target, 1)
        if self.top5 is not None:
            self.top5 += topk_correct(logits.detach(), target, 5)
        self.samples += batch

    def state_dict(self) -> dict:
        """Partial sums of an unfinished epoch, for a mid-epoch checkpoint."""
        return {"loss_sum": self.loss_sum.cpu(), "top1": self.top1.cpu(),
                "top5": None if self.top5 is None else self.top5.cpu(), "samples": self.samples,
                "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        device = self.loss_sum.device
        self.loss_sum, self.top1 = state["loss_sum"].to(device), state["top1"].to(device)
        self.top5 = None if state["top5"] is None else state["top5"].to(device)
        self.samples, self.skipped = state["samples"], state["skipped"]

    def mean_loss(self) -> float:
        return self.loss_sum.item() / max(self.samples, 1)

    def snapshot(self, seconds: float) -> EpochStats:
        n = max(self.samples, 1)
        return EpochStats(
            loss=self.loss_sum.item() / n, acc=self.top1.item() / n,
            top5=None if self.top5 is None else self.top5.item() / n,
            samples=self.samples, seconds=seconds, skipped=self.skipped)


@dataclass
class EpochStats:
    loss: float
    acc: float
    top5: float | None
    samples: int
    seconds: float
    steps: int = 0  # optimizer steps taken (training only)
    skipped: int = 0  # batches dropped for a non-finite loss (training only)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0

