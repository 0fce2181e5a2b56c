"""GoogLeNet / Inception v1 (Szegedy et al., 2014): inception modules of four parallel branches.

Each module concatenates a 1x1 conv, 1x1 -> 3x3, 1x1 -> 5x5 and 3x3 max-pool -> 1x1 branch. The two
auxiliary classifiers (after 4a and 4d) run only in training; the loop adds their losses with weight 0.3.
torchvision's reference weights use a 3x3 kernel in the "5x5" branch (6,624,904 parameters without aux
heads); `branch5x5_kernel=5` (the default) builds the paper's 5x5 (7,005,832).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBN(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels, eps=0.001),
            nn.ReLU(inplace=True),
        )


class Inception(nn.Module):
    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, branch5x5_kernel: int = 5) -> None:
        super().__init__()
        self.branch1 = ConvBN(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(ConvBN(in_channels, ch3x3red, 1), ConvBN(ch3x3red, ch3x3, 3))
        self.branch3 = nn.Sequential(ConvBN(in_channels, ch5x5red, 1), ConvBN(ch5x5red, ch5x5, branch5x5_kernel))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, padding=1, ceil_mode=True), ConvBN(in_channels, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: pool to 4x4 -> 1x1 conv 128 -> FC 1024 -> dropout 0.7 -> FC classes."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AdaptiveAvgPool2d(4), ConvBN(in_channels, 128, 1), nn.Flatten(),
            nn.Linear(2048, 1024), nn.ReLU(inplace=True), nn.Dropout(0.7), nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) for 3a, 3b | 4a..4e | 5a, 5b
STAGES = [
    [(192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64)],
    [(480, 192, 96, 208, 16, 48, 64), (512, 160, 112, 224, 24, 64, 64), (512, 128, 128, 256, 24, 64, 64),
     (512, 112, 144, 288, 32, 64, 64), (528, 256, 160, 320, 32, 128, 128)],
    [(832, 256, 160, 320, 32, 128, 128), (832, 384, 192, 384, 48, 128, 128)],
]


class GoogLeNet(nn.Module):
    """GoogLeNet; the keyword defaults are the reference layout without aux heads, as in torchvision's class.

    The config always passes every argument (its defaults are in trainer/schema/model.py's GoogLeNetConfig).
    """

    def __init__(self, in_channels: int, num_classes: int, aux_logits: bool = False, dropout: float = 0.2,
                 branch5x5_kernel: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            ConvBN(in_channels, 64, 7, stride=2), nn.MaxPool2d(3, 2, ceil_mode=True),
            ConvBN(64, 64, 1), ConvBN(64, 192, 3), nn.MaxPool2d(3, 2, ceil_mode=True))
        stage3, stage4, stage5 = ([Inception(*spec, branch5x5_kernel=branch5x5_kernel) for spec in stage]
                                  for stage in STAGES)
        self.inception3 = nn.Sequential(*stage3, nn.MaxPool2d(3, 2, ceil_mode=True))
        self.inception4a = stage4[0]
        self.inception4bcd = nn.Sequential(*stage4[1:4])
        self.inception4e = nn.Sequential(stage4[4], nn.MaxPool2d(2, 2, ceil_mode=True))
        self.inception5 = nn.Sequential(*stage5)
        self.aux1 = InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes) if aux_logits else None
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(1024, num_classes))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.01, a=-2, b=2)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.inception4a(self.inception3(self.stem(x)))
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4bcd(x)
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        logits = self.head(self.inception5(self.inception4e(x)))
        if aux1 is not None:
            return logits, aux1, aux2
        return logits
