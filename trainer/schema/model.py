"""Schemas of the `model` group; every model reads `in_channels` and `num_classes` from the data config."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING, SI

from trainer.schema.checks import require


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
        require(all(h > 0 for h in self.hidden_sizes), "hidden_sizes", "all > 0", self.hidden_sizes)
        require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)


@dataclass
class SimpleCNNConfig(ModelConfig):
    _target_: str = "trainer.models.simple_cnn.SimpleCNN"
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    act: str = "relu"
    norm: str = "batch"
    dropout: float = 0.0

    def __post_init__(self) -> None:
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


SCHEMAS = {"mlp": MLPConfig, "simple_cnn": SimpleCNNConfig, "resnet": ResNetConfig}
