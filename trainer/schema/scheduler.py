"""Schemas of the `scheduler` group: torch LR schedulers and the interval the loop steps them at."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import ClassVar

from omegaconf import MISSING, SI

from trainer.schema.checks import require

INTERVALS = ("epoch", "step")
DEFAULT_WARMUP_EPOCHS = 1  # what `warmup_epochs: null` warms up for, when warmup_steps is 0


def warmup_epochs(epochs: int | None, steps: int) -> int:
    """The epochs of a warm-up set as `warmup_epochs` `epochs` and `warmup_steps` `steps`: null means
    DEFAULT_WARMUP_EPOCHS unless the warm-up is counted in steps."""
    if epochs is None:
        return 0 if steps else DEFAULT_WARMUP_EPOCHS
    return epochs


def with_warmup_resolved(scheduler: dict) -> dict:
    """A scheduler section (a plain dict, as checkpoints store it) with a null `warmup_epochs` replaced by the
    epochs it means: two configs that warm up alike then compare equal."""
    if "warmup_epochs" not in scheduler:
        return scheduler
    return {**scheduler, "warmup_epochs": warmup_epochs(scheduler["warmup_epochs"], scheduler.get("warmup_steps") or 0)}


@dataclass
class SchedulerConfig:
    """A torch LR scheduler class; `interval` says whether the loop steps it per batch or per epoch.

    `intervals` (a class constant, not a config key) lists the intervals at which the schedule means what its
    keys say: an epoch-counting schedule stepped per batch would run through its whole course in one epoch.

    `warmup_epochs` or `warmup_steps` (at most one) puts a linear warm-up in front of any schedule, ramped after
    every optimizer step from 1/N of the schedule's starting lr up to it (`warmup_epochs: null`, warmup_cosine's
    default: DEFAULT_WARMUP_EPOCHS epoch unless warmup_steps is set); the schedule then runs the rest of the
    run (a cosine T_max that follows trainer.max_epochs and a null total_steps shrink by the warm-up). A per-epoch
    schedule starts at the first whole epoch after the warm-up; its epochs (step_size, milestones) count from there.
    """

    intervals: ClassVar[tuple[str, ...]] = INTERVALS
    _target_: str = MISSING
    _partial_: bool = True
    interval: str = "epoch"
    warmup_epochs: int | None = 0  # a linear warm-up over the first N epochs, stepped per batch (null: see above)
    warmup_steps: int = 0  # or over the first N optimizer steps

    def __post_init__(self) -> None:
        require(self.interval in self.intervals, "interval", " or ".join(self.intervals), self.interval)
        require(self.warmup_epochs is None or self.warmup_epochs >= 0, "warmup_epochs", ">= 0 or null",
                self.warmup_epochs)
        require(self.warmup_steps >= 0, "warmup_steps", ">= 0", self.warmup_steps)
        if self.warmup_epochs and self.warmup_steps:
            raise ValueError(f"warmup_steps and warmup_epochs are both set ({self.warmup_steps} and "
                             f"{self.warmup_epochs}): keep one, set the other to 0")


@dataclass
class ConstantSchedulerConfig(SchedulerConfig):
    """`scheduler=none`: the learning rate stays at `optim.lr`."""

    _target_: str = "torch.optim.lr_scheduler.ConstantLR"
    factor: float = 1.0
    total_iters: int = 0


@dataclass
class StepSchedulerConfig(SchedulerConfig):
    """`scheduler=step`: multiply the lr by `gamma` every `step_size` epochs."""

    intervals: ClassVar[tuple[str, ...]] = ("epoch",)  # epoch only: step_size counts epochs
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    step_size: int = 3
    gamma: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.step_size >= 1, "step_size", ">= 1", self.step_size)
        require(0 < self.gamma <= 1, "gamma", "in (0, 1]", self.gamma)


@dataclass
class MultiStepSchedulerConfig(SchedulerConfig):
    """`scheduler=multistep`: multiply the lr by `gamma` at each epoch in `milestones`."""

    intervals: ClassVar[tuple[str, ...]] = ("epoch",)  # epoch only: milestones count epochs
    _target_: str = "torch.optim.lr_scheduler.MultiStepLR"
    milestones: list[int] = field(default_factory=lambda: [3, 5])
    gamma: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        ms = list(self.milestones)
        require(bool(ms) and ms[0] >= 1 and all(a < b for a, b in pairwise(ms)), "milestones",
                "increasing epochs >= 1", ms)
        require(0 < self.gamma <= 1, "gamma", "in (0, 1]", self.gamma)


@dataclass
class CosineSchedulerConfig(SchedulerConfig):
    """`scheduler=cosine`: cosine annealing from optim.lr to `eta_min` over `T_max` epochs (the run)."""

    intervals: ClassVar[tuple[str, ...]] = ("epoch",)  # epoch only: T_max counts epochs
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    T_max: int = SI("${trainer.max_epochs}")
    eta_min: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.T_max > 0, "T_max", "> 0", self.T_max)
        require(self.eta_min >= 0, "eta_min", ">= 0", self.eta_min)


@dataclass
class OneCycleSchedulerConfig(SchedulerConfig):
    """`scheduler=onecycle`: warm up to `max_lr`, then anneal far below the start, once over the run, per batch.

    `total_steps: null` is the run's length: batches per epoch (after limit_train_batches) x max_epochs (less a
    warm-up). With per-group lrs (optim.layer_decay, head_lr_mult) each group peaks at max_lr x its lr scale.
    """

    intervals: ClassVar[tuple[str, ...]] = ("step",)  # step only
    _target_: str = "torch.optim.lr_scheduler.OneCycleLR"
    interval: str = "step"
    max_lr: float = SI("${optim.lr}")  # the peak: the optimizer's own lr by default
    total_steps: int | None = None  # null: batches per epoch (honouring limit_train_batches) x max_epochs
    pct_start: float = 0.3
    anneal_strategy: str = "cos"  # cos | linear
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.max_lr > 0, "max_lr", "> 0", self.max_lr)
        require(self.total_steps is None or self.total_steps >= 1, "total_steps", ">= 1 or null", self.total_steps)
        require(0 < self.pct_start < 1, "pct_start", "in (0, 1)", self.pct_start)
        require(self.anneal_strategy in ("cos", "linear"), "anneal_strategy", "cos or linear",
                self.anneal_strategy)
        require(self.div_factor > 0, "div_factor", "> 0", self.div_factor)
        require(self.final_div_factor > 0, "final_div_factor", "> 0", self.final_div_factor)
        require(0 <= self.base_momentum <= self.max_momentum < 1, "base_momentum",
                "<= max_momentum, both in [0, 1)", self.base_momentum)


@dataclass
class WarmupCosineSchedulerConfig(SchedulerConfig):
    """`scheduler=warmup_cosine`: a linear warm-up (`warmup_steps` steps, or `warmup_epochs` epochs; by default,
    null, DEFAULT_WARMUP_EPOCHS epoch unless warmup_steps is set), then cosine from optim.lr down to
    `min_lr_ratio` x optim.lr at the end of the run; stepped per batch.

    `total_steps` left null is the run's length after the warm-up (the loader's batches x trainer.max_epochs).
    """

    intervals: ClassVar[tuple[str, ...]] = ("step",)  # step only
    _target_: str = "trainer.training.optim.warmup_cosine"
    interval: str = "step"
    warmup_epochs: int | None = None  # null: DEFAULT_WARMUP_EPOCHS unless warmup_steps is set
    min_lr_ratio: float = 0.0
    total_steps: int | None = None  # null: the run's length after the warm-up

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "in [0, 1]", self.min_lr_ratio)
        require(self.total_steps is None or self.total_steps >= 1, "total_steps", ">= 1 or null", self.total_steps)


@dataclass
class PlateauSchedulerConfig(SchedulerConfig):
    """`scheduler=plateau`: multiply the lr by `factor` when the val loss has not improved for `patience`
    epochs (torch's ReduceLROnPlateau, mode min)."""

    intervals: ClassVar[tuple[str, ...]] = ("epoch",)  # epoch only: judged on each epoch's val loss
    _target_: str = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    factor: float = 0.1
    patience: int = 2  # epochs without improvement before the lr drops
    threshold: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 < self.factor < 1, "factor", "in (0, 1)", self.factor)
        require(self.patience >= 0, "patience", ">= 0", self.patience)
        require(self.threshold >= 0, "threshold", ">= 0", self.threshold)
        require(self.cooldown >= 0, "cooldown", ">= 0", self.cooldown)
        require(self.min_lr >= 0, "min_lr", ">= 0", self.min_lr)


SCHEMAS = {
    "constant": ConstantSchedulerConfig,
    "step": StepSchedulerConfig,
    "multistep": MultiStepSchedulerConfig,
    "cosine": CosineSchedulerConfig,
    "onecycle": OneCycleSchedulerConfig,
    "warmup_cosine": WarmupCosineSchedulerConfig,
    "plateau": PlateauSchedulerConfig,
}
