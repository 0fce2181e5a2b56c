"""ResNet-18/34/50/101/152 (He et al., 2015): BasicBlock or Bottleneck stages with projection shortcuts.

Parameter counts match torchvision's reference models at 1000 classes.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.catalog import RESNET_STAGES, RESNET_STEMS
from trainer.models.layers import make_norm2d


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs; the shortcut is the identity unless the shape changes."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, norm: str) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = conv3x3(in_channels, width, stride)
        self.bn1 = make_norm2d(norm, width)
        self.conv2 = conv3x3(width, out_channels)
        self.bn2 = make_norm2d(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_channels, out_channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))

    def last_norm(self) -> nn.Module:
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, norm: str) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = make_norm2d(norm, width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = make_norm2d(norm, width)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = make_norm2d(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_channels, out_channels, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))

    def last_norm(self) -> nn.Module:
        return self.bn3


def projection(in_channels: int, out_channels: int, stride: int, norm: str) -> nn.Module:
    """The shortcut: identity when shapes match, else a strided 1x1 conv + norm."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), make_norm2d(norm, out_channels))


BLOCKS: dict[str, type[BasicBlock | Bottleneck]] = {"basic": BasicBlock, "bottleneck": Bottleneck}
ARCHITECTURES: dict[int, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    depth: (BLOCKS[block], list(repeats)) for depth, (block, repeats) in RESNET_STAGES.items()}


class ResNet(nn.Module):
    """ResNet-`depth`; the keyword defaults are the paper's (ImageNet stem, 64 base channels), as torchvision's.

    The config always passes every argument (its defaults are in trainer/schema/model.py's ResNetConfig).
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int, stem: str = "imagenet",
                 width: int = 64, zero_init_residual: bool = False, norm: str = "batch") -> None:
        super().__init__()
        if depth not in ARCHITECTURES:
            raise ValueError(f"unsupported ResNet depth {depth}; choose from {sorted(ARCHITECTURES)}")
        block, repeats = ARCHITECTURES[depth]
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, padding=3, bias=False), make_norm2d(norm, width),
                nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=1))
        elif stem == "cifar":
            self.stem = nn.Sequential(conv3x3(in_channels, width), make_norm2d(norm, width), nn.ReLU(inplace=True))
        else:
            raise ValueError(f"unknown stem {stem!r}; choose {' or '.join(RESNET_STEMS)}")

        stages: list[nn.Module] = []
        channels = width
        for index, count in enumerate(repeats):
            stage_width = width * 2**index
            blocks = []
            for i in range(count):
                stride = 2 if index > 0 and i == 0 else 1
                blocks.append(block(channels, stage_width, stride, norm))
                channels = stage_width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            # Each residual branch starts as zero, so every block starts as the identity.
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)) and hasattr(module.last_norm(), "weight"):
                    nn.init.zeros_(module.last_norm().weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))
