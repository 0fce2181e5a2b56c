"""Accuracy counting that stays on the device, so the hot loop never waits for the host; and the predictions a
validation pass collects for the end-of-run report."""

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


REPORT_SAMPLES = 16  # the first inputs of a split that the report's samples.png shows


@dataclass(frozen=True)
class Predictions:
    """One pass over a split, as the report draws it: every sample's predicted and true label (int64, on the CPU,
    in the split's order) and the split's first `REPORT_SAMPLES` inputs."""

    predicted: torch.Tensor
    targets: torch.Tensor
    samples: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


class PredictionCollector:
    """What `validate` collects for the report when asked: labels stay on the device during the pass and reach
    the host once, in `result()`; the first `keep` inputs are kept as the loader gave them."""

    def __init__(self, keep: int = REPORT_SAMPLES) -> None:
        self.keep, self.kept = keep, 0
        self.predicted: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.samples: list[torch.Tensor] = []

    def add(self, inputs: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """One batch: its raw `inputs`, the model's `logits` and the `targets` (on the device; no host read)."""
        self.predicted.append(logits.argmax(dim=1))
        self.targets.append(targets.long())
        if self.kept < self.keep:
            self.samples.append(inputs[:self.keep - self.kept].clone())
            self.kept += len(self.samples[-1])

    def result(self) -> Predictions:
        """The pass's Predictions on the CPU, as ordinary tensors (usable outside inference mode)."""
        with torch.inference_mode(False):
            if not self.targets:
                empty = torch.zeros(0, dtype=torch.long)
                return Predictions(empty, empty, torch.zeros(0))
            labels = torch.stack([torch.cat(self.predicted), torch.cat(self.targets)]).cpu()  # one device copy
            return Predictions(labels[0], labels[1], torch.cat(self.samples).cpu())


def merge_shards(parts: list[Predictions], keep: int = REPORT_SAMPLES) -> Predictions:
    """Every rank's Predictions as one, in the split's order: under torchrun rank r scores the split's samples
    r, r + world_size, ... (the eval loaders' sharding), and its first samples come first within its shard."""
    world = len(parts)

    def in_order(tensors: list[torch.Tensor]) -> torch.Tensor:
        positions = torch.cat([torch.arange(len(t)) * world + rank for rank, t in enumerate(tensors)])
        return torch.cat(tensors)[positions.argsort()]

    return Predictions(in_order([p.predicted for p in parts]), in_order([p.targets for p in parts]),
                       in_order([p.samples for p in parts])[:keep])
