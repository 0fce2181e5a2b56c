"""Schemas of the `optim` group: torch optimizer classes, instantiated partially."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from trainer.schema.checks import require


@dataclass
class OptimConfig:
    """A torch optimizer class, instantiated partially and then called with the parameter groups.

    `no_decay_norm_bias` is ours, not torch's: true puts biases and normalisation weights (every 1-D
    parameter) in a second group with weight_decay 0.
    """

    _target_: str = MISSING
    _partial_: bool = True
    lr: float = MISSING
    weight_decay: float = 0.0
    no_decay_norm_bias: bool = False  # true: biases and norm weights (1-D parameters) get no weight decay

    def __post_init__(self) -> None:
        require(self.lr > 0, "lr", "> 0", self.lr)
        require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False  # true: Nesterov momentum
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.momentum < 1.0, "momentum", "in [0, 1)", self.momentum)
        require(not self.nesterov or self.momentum > 0, "nesterov", "false when momentum is 0", self.nesterov)


@dataclass
class RMSpropConfig(OptimConfig):
    _target_: str = "torch.optim.RMSprop"
    lr: float = 1e-3
    alpha: float = 0.99  # smoothing of the squared-gradient average
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.alpha < 1.0, "alpha", "in [0, 1)", self.alpha)
        require(self.eps > 0, "eps", "> 0", self.eps)
        require(0.0 <= self.momentum < 1.0, "momentum", "in [0, 1)", self.momentum)


@dataclass
class AdamConfig(OptimConfig):
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas), "betas",
                 "two values in [0, 1)", self.betas)
        require(self.eps > 0, "eps", "> 0", self.eps)


@dataclass
class AdamWConfig(AdamConfig):
    """Adam with decoupled weight decay: the decay does not pass through the adaptive scaling."""

    _target_: str = "torch.optim.AdamW"
    lr: float = 3e-3
    weight_decay: float = 0.01


SCHEMAS = {"sgd": SGDConfig, "rmsprop": RMSpropConfig, "adam": AdamConfig, "adamw": AdamWConfig}
