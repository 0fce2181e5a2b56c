"""Regularizers that act on the batch and the loss: label smoothing, class weights, mixup and cutmix.

`Regularization` is what the `regularization` config group instantiates; the loop asks it to mix each
training batch and to compute the loss against the (possibly mixed) targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from trainer.errors import ConfigError, DataError


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
                 ema_decay: float | None = None, ema_warmup: bool = False, ema_every_n_steps: int = 1,
                 class_weights: str | Sequence[float] | None = None) -> None:
        self.label_smoothing = label_smoothing
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.mix_prob = mix_prob
        # Applied when the model and the EMA copy are built (see trainer/build.py and trainer/training/setup.py).
        self.dropout = dropout
        self.stochastic_depth = stochastic_depth
        self.ema_decay = ema_decay
        self.ema_warmup = ema_warmup
        self.ema_every_n_steps = ema_every_n_steps
        # None, "auto" or one weight per class; use_class_weights() resolves it once the data set is known.
        self.class_weights = (class_weights if class_weights is None or isinstance(class_weights, str)
                              else [float(w) for w in class_weights])

    def use_class_weights(self, train_labels: torch.Tensor, num_classes: int,
                          device: torch.device) -> torch.Tensor | None:
        """Weight the cross-entropy (mixed targets too) by `class_weights`; returns the weights, or None.

        "auto" weighs class c by N / (num_classes * n_c) over the N training labels, so every class adds the same
        total to the loss; a list gives one weight per class.
        """
        weights = resolve_class_weights(self.class_weights, train_labels, num_classes)
        if weights is not None:
            weights = weights.to(device)
        self.criterion = nn.CrossEntropyLoss(weight=weights, label_smoothing=self.label_smoothing)
        return weights

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


def resolve_class_weights(class_weights: str | Sequence[float] | None, train_labels: torch.Tensor,
                          num_classes: int) -> torch.Tensor | None:
    """The float32 weight of each class for `regularization.class_weights` (None: no weights)."""
    if class_weights is None:
        return None
    if class_weights != "auto":
        if len(class_weights) != num_classes:
            raise ConfigError(f"regularization.class_weights has {len(class_weights)} entries but the data set has "
                              f"{num_classes} classes: give one weight per class, or use auto")
        return torch.tensor([float(w) for w in class_weights], dtype=torch.float32)
    labels = train_labels.detach().long().flatten().cpu()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"training labels span {int(labels.min())}..{int(labels.max())} but the data set has "
                        f"{num_classes} classes")
    counts = torch.bincount(labels, minlength=num_classes)
    absent = (counts == 0).nonzero().flatten().tolist()
    if absent:
        raise ConfigError(f"regularization.class_weights=auto: class {absent[0]} has no training labels, so it has "
                          "no inverse frequency; give a list of weights or null")
    return (labels.numel() / (num_classes * counts.double())).float()


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
