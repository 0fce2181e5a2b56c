"""VGG-11/13/16/19 (Simonyan & Zisserman, 2014) from a layer table, optionally with batch norm.

Parameter counts match torchvision's reference models at 1000 classes. Pools use ceil_mode so that
28- and 32-pixel inputs survive all five of them; adaptive pooling feeds the classifier a fixed size.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.catalog import VGG_LAYERS


class VGG(nn.Module):
    """VGG-`depth` (its layers: `catalog.VGG_LAYERS`); the keyword defaults are the paper's, as torchvision's.

    The config always passes every argument (its defaults are in trainer/schema/model.py's VGGConfig).
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int, batch_norm: bool = False,
                 dropout: float = 0.5, classifier_width: int = 4096, pool_size: int = 7) -> None:
        super().__init__()
        if depth not in VGG_LAYERS:
            raise ValueError(f"unsupported VGG depth {depth}; choose from {sorted(VGG_LAYERS)}")
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG_LAYERS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                continue
            layers.append(nn.Conv2d(channels, item, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(item))
            layers.append(nn.ReLU(inplace=True))
            channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * pool_size * pool_size, classifier_width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(classifier_width, classifier_width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(classifier_width, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))
