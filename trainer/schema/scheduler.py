"""Schemas of the `scheduler` group: torch LR schedulers and the interval the loop steps them at."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, SI

from trainer.schema.checks import require

INTERVALS = ("epoch", "step")


@dataclass
class SchedulerConfig:
    """A torch LR scheduler class; `interval` says whether the loop steps it per batch or per epoch."""

    _target_: str = MISSING
    _partial_: bool = True
    interval: str = "epoch"

    def __post_init__(self) -> None:
        require(self.interval in INTERVALS, "interval", " or ".join(INTERVALS), self.interval)


@dataclass
class ConstantSchedulerConfig(SchedulerConfig):
    """`scheduler=none`: the learning rate stays at `optim.lr`."""

    _target_: str = "torch.optim.lr_scheduler.ConstantLR"
    factor: float = 1.0
    total_iters: int = 0


@dataclass
class CosineSchedulerConfig(SchedulerConfig):
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: int = SI("${trainer.max_epochs}")
    eta_min: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.T_max > 0, "T_max", "> 0", self.T_max)
        require(self.eta_min >= 0, "eta_min", ">= 0", self.eta_min)


SCHEMAS = {"constant": ConstantSchedulerConfig, "cosine": CosineSchedulerConfig}
