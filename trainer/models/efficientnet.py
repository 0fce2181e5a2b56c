"""EfficientNet-B0..B7 (Tan & Le, 2019): MBConv blocks with squeeze-excitation, scaled by compound rules.

B0's stage table is scaled in width (channels, rounded to multiples of 8) and depth (repeats, rounded up).
The named variants use the published (width, depth, resolution, dropout) coefficients, so parameter
counts match the reference models; `phi` instead scales B0 by the guide's compound rule
(depth 1.2^phi, width 1.1^phi, resolution 1.15^phi).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from trainer.models.catalog import EFFICIENTNET_B0_STAGES as B0_STAGES  # (expand, kernel, stride, in, out, repeats)
from trainer.models.catalog import EFFICIENTNET_VARIANTS as VARIANTS
from trainer.models.layers import ConvNormAct

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases of the compound rule


def compound_coefficients(phi: float) -> tuple[float, float, int]:
    """(width, depth, resolution) for compound coefficient phi: beta^phi, alpha^phi, 224 * gamma^phi."""
    return BETA**phi, ALPHA**phi, int(round(224 * GAMMA**phi))


def round_filters(channels: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor`, never going more than 10% below the input."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class SqueezeExcitation(nn.Module):
    """Global-average-pool -> 1x1 reduce -> SiLU -> 1x1 expand -> sigmoid, scaling each channel."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze_channels, 1)
        self.expand = nn.Conv2d(squeeze_channels, channels, 1)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.expand(self.act(self.reduce(self.pool(x)))))


class MBConv(nn.Module):
    """1x1 expand -> k x k depthwise -> squeeze-excitation -> 1x1 project; residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel_size: int, stride: int,
                 drop_prob: float) -> None:
        super().__init__()
        hidden = round_filters(in_channels * expand_ratio)
        layers: list[nn.Module] = []
        if hidden != in_channels:
            layers.append(ConvNormAct(in_channels, hidden, 1, act="silu"))
        layers += [
            ConvNormAct(hidden, hidden, kernel_size, stride, groups=hidden, act="silu"),
            SqueezeExcitation(hidden, max(1, in_channels // 4)),
            ConvNormAct(hidden, out_channels, 1, act="none"),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_path = StochasticDepth(drop_prob, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + self.drop_path(out) if self.use_residual else out


class EfficientNet(nn.Module):
    """EfficientNet-`variant` (coefficients: `catalog.EFFICIENTNET_VARIANTS`), or B0 scaled by `phi`.

    The keyword defaults are the published ones, as torchvision's; the config always passes every argument
    (its defaults are in trainer/schema/model.py's EfficientNetConfig).
    """

    def __init__(self, in_channels: int, num_classes: int, variant: str, phi: float | None = None,
                 stochastic_depth: float = 0.2, dropout: float | None = None) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet variant {variant!r}; choose from {', '.join(VARIANTS)}")
        width, depth, self.resolution, default_dropout = VARIANTS[variant]
        if phi is not None:
            width, depth, self.resolution = compound_coefficients(phi)
        stages = [(e, k, s, round_filters(cin * width), round_filters(cout * width), math.ceil(n * depth))
                  for e, k, s, cin, cout, n in B0_STAGES]

        total_blocks = sum(stage[-1] for stage in stages)
        blocks: list[nn.Module] = []
        for expand, kernel, stride, cin, cout, repeats in stages:
            for i in range(repeats):
                # Stochastic depth grows linearly with block index, from 0 to `stochastic_depth`.
                drop = stochastic_depth * len(blocks) / total_blocks
                blocks.append(MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1, drop))
        head_channels = 4 * stages[-1][4]
        self.features = nn.Sequential(
            ConvNormAct(in_channels, stages[0][3], 3, stride=2, act="silu"),
            *blocks,
            ConvNormAct(stages[-1][4], head_channels, 1, act="silu"),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Dropout(default_dropout if dropout is None else dropout),
                                  nn.Linear(head_channels, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
