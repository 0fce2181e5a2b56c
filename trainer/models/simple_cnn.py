"""The simple CNN: conv-norm-act blocks with 2x2 max pooling, global average pooling, a linear head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainer.models.layers import ConvNormAct


class SimpleCNN(nn.Module):
    """One ConvNormAct block and a 2x2 max-pool per entry of `widths`, then pool, dropout and a linear head.

    No argument has a default of its own: the config supplies each (SimpleCNNConfig in trainer/schema/model.py).
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], act: str, norm: str,
                 dropout: float, spatial_dropout: float) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            # ceil_mode keeps a 1-pixel map at 1 pixel, so small inputs (8x8 digits) survive four pools.
            blocks += [ConvNormAct(channels, width, 3, norm=norm, act=act, spatial_dropout=spatial_dropout),
                       nn.MaxPool2d(2, ceil_mode=True)]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))
