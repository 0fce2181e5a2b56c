"""Small seeded models for in-process tests of the loop, the optimizers and the fast paths."""

from __future__ import annotations

import torch
from torch import nn


def convnet(in_channels: int = 3, num_classes: int = 2, *, width: int = 8,
            every_parameter_kind: bool = False) -> nn.Sequential:
    """A seeded convnet on 8x8 images: conv, BatchNorm and ReLU, then global pooling and a linear head.

    `every_parameter_kind`: a bias-free conv with GroupNorm and a 2-D LayerNorm instead of the pooling, so that the
    model holds every kind of parameter (conv and linear weights, biases, BatchNorm, GroupNorm, LayerNorm).
    """
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
    if every_parameter_kind:
        layers += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.GroupNorm(2, width), nn.LayerNorm([8, 8]),
                   nn.Flatten(), nn.Linear(width * 8 * 8, num_classes)]
    else:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


def mlp(in_features: int = 6, num_classes: int = 3, hidden: int = 32) -> nn.Sequential:
    """A seeded one-hidden-layer MLP: enough to fit `toy_batches()`."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class NaNAfter(nn.Module):
    """`model`'s logits for the first `good` calls, then NaN."""

    def __init__(self, model: nn.Module, good: int) -> None:
        super().__init__()
        self.model, self.calls, self.good = model, 0, good

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = self.model(x)
        return out if self.calls <= self.good else out * float("nan")
