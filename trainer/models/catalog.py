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

# EfficientNet-B0's stages: (expand ratio, kernel, stride, in channels, out channels, repeats).
EFFICIENTNET_B0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

# Vision transformer: how the tokens become one vector for the head (the class token, or the patch tokens' mean).
VIT_POOLS = ("cls", "mean")

# Recurrent cells of `model=rnn` (torch.nn.LSTM, torch.nn.GRU).
RNN_CELLS = ("lstm", "gru")

# `model=timm`: the timm arguments the config sets through its own keys, so model.kwargs may not hold them
# (argument -> the key that sets it), and the rates a key sets only when it is not null (key -> argument).
TIMM_SET_BY_KEYS: dict[str, str] = {
    "num_classes": "data.num_classes",
    "in_chans": "data.in_channels",
    "pretrained": "model.pretrained_file",
    "pretrained_cfg": "model.pretrained_file",
    "pretrained_cfg_overlay": "model.pretrained_file",
}
TIMM_RATES: dict[str, str] = {"dropout": "drop_rate", "stochastic_depth": "drop_path_rate"}

# `model=torchvision`: the builder arguments the config sets through its own keys.
TORCHVISION_SET_BY_KEYS: dict[str, str] = {"num_classes": "data.num_classes", "weights": "model.weights"}

# ---- the smallest input each model can use
#
# A layer that changes the spatial size, as (kernel, stride, padding, ceil_mode). A model degenerates on a
# small input when its map shrinks to 1 px before its last stage (the convs at its lowest resolution): the
# stages before it then see one pixel (a 3x3 conv uses only its centre tap, a pool window covers more than
# the map) and the run trains to chance or a pool fails with "Output size is too small". So each model's
# minimum is the smallest input whose map is still >= 2 px after every size change before its last stage.
# The last stage itself may reach 1 px (ResNet's stage 4 at 17 px; simple_cnn's last block at 8 px, whose
# 2x2 ceil-mode pool on one pixel is the identity before the global average pool).
Resize = tuple[int, int, int, bool]

RESNET_STEM_RESIZES: dict[str, tuple[Resize, ...]] = {
    "imagenet": ((7, 2, 3, False), (3, 2, 1, False)),  # 7x7/2 conv, 3x3/2 max-pool
    "cifar": (),  # 3x3/1 conv: keeps the size
}
RESNET_DOWNSAMPLE: Resize = (3, 2, 1, False)  # first 3x3 conv of stages 2-4 (its 1x1/2 shortcut: same size)
POOL_2X2: Resize = (2, 2, 0, True)  # simple_cnn's and VGG's max-pool
# GoogLeNet: 7x7/2 conv, 3x3/2 pool (stem), 3x3/2 pool (end of stem), 3x3/2 pool (after 3b), 2x2/2 (after 4e).
GOOGLENET_RESIZES: tuple[Resize, ...] = ((7, 2, 3, False), (3, 2, 0, True), (3, 2, 0, True), (3, 2, 0, True),
                                        (2, 2, 0, True))
EFFICIENTNET_STEM: Resize = (3, 2, 1, False)  # 3x3/2 conv; each stage's first depthwise conv has padding k // 2

MAX_CHECKED_SIZE = 4096  # smallest_input searches up to this size


def output_size(size: int, resize: Resize) -> int:
    """The output size of a conv or pool on a `size` map, by torch's formula (0: the layer would fail)."""
    kernel, stride, padding, ceil_mode = resize
    span = size + 2 * padding - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:  # the last window must start inside the input
        out -= 1
    return max(out, 0)


def smallest_input(resizes: tuple[Resize, ...] | list[Resize]) -> int:
    """The smallest input size whose map is still >= 2 px after `resizes`."""
    for size in range(1, MAX_CHECKED_SIZE + 1):
        out = size
        for resize in resizes:
            out = output_size(out, resize)
        if out >= 2:
            return size
    return MAX_CHECKED_SIZE


def resnet_min_size(stem: str) -> int:
    """The stem's resizes, then stages 2 and 3 (stage 4 is the last)."""
    return smallest_input([*RESNET_STEM_RESIZES[stem], RESNET_DOWNSAMPLE, RESNET_DOWNSAMPLE])


def vgg_min_size(depth: int) -> int:
    """Each conv group ends with a pool: the last group's convs see the map after all pools but the last one."""
    pools = VGG_LAYERS[depth].count("M")
    return smallest_input([POOL_2X2] * (pools - 2)) if pools >= 2 else 1


def simple_cnn_min_size(blocks: int) -> int:
    """Each block is a conv and a pool: the last block's conv sees the map after `blocks - 1` pools."""
    return smallest_input([POOL_2X2] * (blocks - 2)) if blocks >= 2 else 1


def googlenet_min_size() -> int:
    """Inception 5a/5b are the last stage: 4a-4e (after all resizes but the last) must see >= 2 px."""
    return smallest_input(GOOGLENET_RESIZES[:-1])


def efficientnet_min_size() -> int:
    """The stem and the strided stages but the last (the blocks after it, and the head, are the last stage)."""
    strided = [(kernel, stride, kernel // 2, False) for _, kernel, stride, *_ in EFFICIENTNET_B0_STAGES if stride > 1]
    return smallest_input([EFFICIENTNET_STEM, *strided[:-1]])


def airbench_min_size(groups: int, whiten_kernel: int) -> int:
    """The whitening conv (no padding), then each conv group's 2x2 max-pool but the last group's."""
    return smallest_input([(whiten_kernel, 1, 0, False), *[(2, 2, 0, False)] * (groups - 1)])
