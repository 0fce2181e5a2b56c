"""The names and tables that choose each architecture, free of torch.

The models build from these tables and the config schema (trainer/schema/model.py) checks choices against
the same tables, so a name is written once and validation never imports torch.
"""

from __future__ import annotations

# Activation name -> the torch.nn class that implements it (trainer/models/layers.py builds from this).
ACTIVATIONS: dict[str, str] = {
    "relu": "ReLU",
    "leaky_relu": "LeakyReLU",
    "elu": "ELU",
    "gelu": "GELU",
    "silu": "SiLU",
    "swish": "SiLU",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "none": "Identity",
}

# 2-D normalisations of `layers.make_norm2d`.
NORMS = ("batch", "group", "layer", "none")

# ResNet depth -> (block, repeats of its four stages).
RESNET_STAGES: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
RESNET_STEMS = ("imagenet", "cifar")  # 7x7/2 conv + max-pool | 3x3/1 conv, no pool (32-px images)

# VGG depth -> its layers: numbers are 3x3 conv widths, "M" is a 2x2 max-pool.
VGG_LAYERS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}

# EfficientNet variant -> (width multiplier, depth multiplier, resolution, dropout), as published.
EFFICIENTNET_VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}
