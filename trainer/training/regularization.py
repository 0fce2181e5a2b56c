"""Regularizers that act on the batch and the loss: label smoothing, mixup and cutmix.

`Regularization` is what the `regularization` config group instantiates; the loop asks it to mix each
training batch and to compute the loss against the (possibly mixed) targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MixedTargets:
    """Targets of a mixed batch: loss = lam * CE(logits, a) + (1 - lam) * CE(logits, b)."""

    a: torch.Tensor
    b: torch.Tensor
    lam: float

    def dominant(self) -> torch.Tensor:
        """The labels that make up most of each mixed image (for training accuracy)."""
        return self.a if self.lam >= 0.5 else self.b


class Regularization:
    def __init__(self, label_smoothing: float = 0.0, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 mix_prob: float = 1.0, dropout: float | None = None, stochastic_depth: float | None = None,
                 ema_decay: float | None = None) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.mix_prob = mix_prob
        # Applied when the model and the EMA copy are built (see trainer/build.py and trainer/training/setup.py).
        self.dropout = dropout
        self.stochastic_depth = stochastic_depth
        self.ema_decay = ema_decay

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def mix(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | MixedTargets]:
        """Mixup or cutmix (one of them, at random when both are on) with probability `mix_prob`."""
        if not self.mixes or torch.rand(()).item() >= self.mix_prob:
            return inputs, targets
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or torch.rand(()).item() < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(inputs.shape[0], device=inputs.device)
        if use_cutmix:
            inputs, lam = cutmix(inputs, inputs[perm], lam)
        else:
            inputs = lam * inputs + (1 - lam) * inputs[perm]
        return inputs, MixedTargets(targets, targets[perm], lam)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor | MixedTargets) -> torch.Tensor:
        if isinstance(targets, MixedTargets):
            return targets.lam * self.criterion(logits, targets.a) + (1 - targets.lam) * self.criterion(
                logits, targets.b)
        return self.criterion(logits, targets)


def cutmix(inputs: torch.Tensor, donors: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Paste a random box of area (1 - lam) from `donors`; returns the batch and lam for the true box area."""
    height, width = inputs.shape[-2:]
    cut = (1 - lam) ** 0.5
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = torch.randint(height, ()).item(), torch.randint(width, ()).item()
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    mixed = inputs.clone()
    mixed[..., top:bottom, left:right] = donors[..., top:bottom, left:right]
    return mixed, 1 - (bottom - top) * (right - left) / (height * width)
