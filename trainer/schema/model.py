"""Schemas of the `model` group; every model reads `in_channels` and `num_classes` from the data config."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING, SI

from trainer.schema.checks import require

# Kept here rather than imported from trainer.models.layers so validation never imports torch.
ACTIVATION_NAMES = ("relu", "leaky_relu", "elu", "gelu", "silu", "swish", "sigmoid", "tanh", "none")
NORMS = ("batch", "group", "layer", "none")


@dataclass
class ModelConfig:
    """Every model takes its input channels and class count from the data config."""

    _target_: str = MISSING
    in_channels: int = SI("${data.in_channels}")
    num_classes: int = SI("${data.num_classes}")


@dataclass
class MLPConfig(ModelConfig):
    _target_: str = "trainer.models.mlp.MLP"
    image_size: int = SI("${data.image_size}")
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 128])
    act: str = "relu"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        require(self.act in ACTIVATION_NAMES, "act", "one of " + ", ".join(ACTIVATION_NAMES), self.act)
        require(all(h > 0 for h in self.hidden_sizes), "hidden_sizes", "all > 0", self.hidden_sizes)
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)


@dataclass
class SimpleCNNConfig(ModelConfig):
    _target_: str = "trainer.models.simple_cnn.SimpleCNN"
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    act: str = "relu"
    norm: str = "batch"
    dropout: float = 0.0
    spatial_dropout: float = 0.0

    def __post_init__(self) -> None:
        require(self.act in ACTIVATION_NAMES, "act", "one of " + ", ".join(ACTIVATION_NAMES), self.act)
        require(self.norm in NORMS, "norm", "one of " + ", ".join(NORMS), self.norm)
        require(0.0 <= self.spatial_dropout < 1.0, "spatial_dropout", "in [0, 1)", self.spatial_dropout)
        require(len(self.widths) > 0 and all(w > 0 for w in self.widths), "widths", "non-empty, all > 0",
                 self.widths)
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)


@dataclass
class ResNetConfig(ModelConfig):
    _target_: str = "trainer.models.resnet.ResNet"
    depth: int = 18
    stem: str = "imagenet"
    width: int = 64
    zero_init_residual: bool = False

    def __post_init__(self) -> None:
        require(self.depth in (18, 34, 50, 101, 152), "depth", "one of 18, 34, 50, 101, 152", self.depth)
        require(self.stem in ("imagenet", "cifar"), "stem", "imagenet or cifar", self.stem)
        require(self.width > 0, "width", "> 0", self.width)


@dataclass
class VGGConfig(ModelConfig):
    _target_: str = "trainer.models.vgg.VGG"
    depth: int = 16
    batch_norm: bool = False
    dropout: float = 0.5
    classifier_width: int = 4096
    pool_size: int = 7

    def __post_init__(self) -> None:
        require(self.depth in (11, 13, 16, 19), "depth", "one of 11, 13, 16, 19", self.depth)
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)
        require(self.classifier_width > 0, "classifier_width", "> 0", self.classifier_width)
        require(self.pool_size > 0, "pool_size", "> 0", self.pool_size)


@dataclass
class GoogLeNetConfig(ModelConfig):
    _target_: str = "trainer.models.googlenet.GoogLeNet"
    aux_logits: bool = False
    dropout: float = 0.2
    branch5x5_kernel: int = 5

    def __post_init__(self) -> None:
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)
        require(self.branch5x5_kernel in (3, 5), "branch5x5_kernel", "3 or 5", self.branch5x5_kernel)


@dataclass
class EfficientNetConfig(ModelConfig):
    _target_: str = "trainer.models.efficientnet.EfficientNet"
    variant: str = "b0"
    phi: float | None = None
    stochastic_depth: float = 0.2
    dropout: float | None = None

    def __post_init__(self) -> None:
        variants = ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7")
        require(self.variant in variants, "variant", "one of " + ", ".join(variants), self.variant)
        require(self.phi is None or self.phi >= 0, "phi", ">= 0 or null", self.phi)
        require(0.0 <= self.stochastic_depth < 1.0, "stochastic_depth", "in [0, 1)", self.stochastic_depth)
        require(self.dropout is None or 0.0 <= self.dropout < 1.0, "dropout", "in [0, 1) or null", self.dropout)


@dataclass
class TorchvisionConfig(ModelConfig):
    _target_: str = "trainer.models.torchvision_model.build"
    image_size: int = SI("${data.image_size}")
    name: str = "resnet18"
    weights: str | None = None


SCHEMAS = {"mlp": MLPConfig, "simple_cnn": SimpleCNNConfig, "resnet": ResNetConfig, "vgg": VGGConfig,
           "googlenet": GoogLeNetConfig, "efficientnet": EfficientNetConfig, "torchvision": TorchvisionConfig}
