"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Each option file in `configs/<group>/` starts from one of these dataclasses (through
`/schema/<group>@_here_` in its defaults list), so an unknown key or a wrong type fails at
composition. Value ranges are checked in `__post_init__`, which runs when `validate()` turns the
composed config into objects: before any data is loaded or torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, SI, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from trainer.errors import ConfigError

MODES = ("train", "eval")
PRECISIONS = ("32", "bf16", "16")
INTERVALS = ("epoch", "step")
PROGRESS = ("auto", "rich", "plain", "none")


def _require(ok: bool, key: str, requirement: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{key} must be {requirement} (got {value!r})")


# --------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    _target_: str = MISSING
    batch_size: int = 64
    num_workers: int = 0
    num_classes: int = MISSING
    in_channels: int = MISSING
    image_size: int = MISSING

    def __post_init__(self) -> None:
        _require(self.batch_size > 0, "batch_size", "> 0", self.batch_size)
        _require(self.num_workers >= 0, "num_workers", ">= 0", self.num_workers)
        _require(self.num_classes >= 2, "num_classes", ">= 2", self.num_classes)
        _require(self.in_channels >= 1, "in_channels", ">= 1", self.in_channels)
        _require(self.image_size >= 1, "image_size", ">= 1", self.image_size)


@dataclass
class DigitsConfig(DataConfig):
    _target_: str = "trainer.data.digits.DigitsDataModule"
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 8
    val_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0.0 < self.val_fraction < 1.0, "val_fraction", "in (0, 1)", self.val_fraction)


@dataclass
class FakeConfig(DataConfig):
    _target_: str = "trainer.data.fake.FakeDataModule"
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32
    train_size: int = 256
    val_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.train_size > 0, "train_size", "> 0", self.train_size)
        _require(self.val_size > 0, "val_size", "> 0", self.val_size)


# --------------------------------------------------------------------------- model


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
        _require(all(h > 0 for h in self.hidden_sizes), "hidden_sizes", "all > 0", self.hidden_sizes)
        _require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)


@dataclass
class SimpleCNNConfig(ModelConfig):
    _target_: str = "trainer.models.simple_cnn.SimpleCNN"
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    act: str = "relu"
    norm: str = "batch"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _require(len(self.widths) > 0 and all(w > 0 for w in self.widths), "widths", "non-empty, all > 0",
                 self.widths)
        _require(0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", self.dropout)


@dataclass
class ResNetConfig(ModelConfig):
    _target_: str = "trainer.models.resnet.ResNet"
    depth: int = 18
    stem: str = "imagenet"
    width: int = 64
    zero_init_residual: bool = False

    def __post_init__(self) -> None:
        _require(self.depth in (18, 34, 50, 101, 152), "depth", "one of 18, 34, 50, 101, 152", self.depth)
        _require(self.stem in ("imagenet", "cifar"), "stem", "imagenet or cifar", self.stem)
        _require(self.width > 0, "width", "> 0", self.width)


# --------------------------------------------------------------------------- optimisation


@dataclass
class OptimConfig:
    """A torch optimizer class, instantiated partially and then called with the parameter groups."""

    _target_: str = MISSING
    _partial_: bool = True
    lr: float = MISSING
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _require(self.lr > 0, "lr", "> 0", self.lr)
        _require(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)


@dataclass
class SGDConfig(OptimConfig):
    _target_: str = "torch.optim.SGD"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0.0 <= self.momentum < 1.0, "momentum", "in [0, 1)", self.momentum)


@dataclass
class AdamWConfig(OptimConfig):
    _target_: str = "torch.optim.AdamW"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas), "betas",
                 "two values in [0, 1)", self.betas)
        _require(self.eps > 0, "eps", "> 0", self.eps)


@dataclass
class SchedulerConfig:
    """A torch LR scheduler class; `interval` says whether the loop steps it per batch or per epoch."""

    _target_: str = MISSING
    _partial_: bool = True
    interval: str = "epoch"

    def __post_init__(self) -> None:
        _require(self.interval in INTERVALS, "interval", " or ".join(INTERVALS), self.interval)


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
        _require(self.T_max > 0, "T_max", "> 0", self.T_max)
        _require(self.eta_min >= 0, "eta_min", ">= 0", self.eta_min)


# --------------------------------------------------------------------------- augment, regularization


@dataclass
class AugmentConfig:
    """A builder that returns the train-time transform (or None for no augmentation)."""

    _target_: str = "trainer.augment.none"


@dataclass
class RegularizationConfig:
    """The training criterion; regularizers that live in the loss configure it here."""

    _target_: str = "torch.nn.CrossEntropyLoss"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        _require(0.0 <= self.label_smoothing < 1.0, "label_smoothing", "in [0, 1)", self.label_smoothing)


# --------------------------------------------------------------------------- trainer, logger, paths


@dataclass
class TrainerConfig:
    max_epochs: int = 6
    device: str = "auto"
    precision: str = "32"
    grad_clip_norm: float | None = None
    deterministic: bool = False
    resume: str | None = None
    log_every_n_steps: int = 20
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    overfit_batches: int = 0
    save_checkpoints: bool = True
    progress: str = "auto"

    def __post_init__(self) -> None:
        _require(self.max_epochs >= 1, "max_epochs", ">= 1", self.max_epochs)
        _require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                 "device", "auto, cpu, cuda or cuda:N", self.device)
        _require(self.precision in PRECISIONS, "precision", "one of 32, bf16, 16", self.precision)
        _require(self.grad_clip_norm is None or self.grad_clip_norm > 0, "grad_clip_norm", "> 0 or null",
                 self.grad_clip_norm)
        _require(self.log_every_n_steps >= 1, "log_every_n_steps", ">= 1", self.log_every_n_steps)
        for key in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, key)
            _require(value is None or value >= 1, key, ">= 1 or null", value)
        _require(self.overfit_batches >= 0, "overfit_batches", ">= 0", self.overfit_batches)
        _require(self.progress in PROGRESS, "progress", "one of " + ", ".join(PROGRESS), self.progress)


@dataclass
class LoggerConfig:
    _target_: str = "trainer.loggers.TensorBoardLogger"
    log_dir: str = "tb"


@dataclass
class PathsConfig:
    output_root: str = "outputs"
    data_dir: str = "data"


@dataclass
class TrainConfig:
    """The root of the composed config (`configs/train.yaml`)."""

    mode: str = "train"
    seed: int = 42
    ckpt: str | None = None
    data: Any = MISSING
    model: Any = MISSING
    optim: Any = MISSING
    scheduler: Any = MISSING
    augment: Any = MISSING
    regularization: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Any = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)

    def __post_init__(self) -> None:
        _require(self.mode in MODES, "mode", "one of " + ", ".join(MODES), self.mode)
        _require(self.mode != "eval" or bool(self.ckpt), "ckpt", "a checkpoint path when mode=eval", self.ckpt)


GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"digits": DigitsConfig, "fake": FakeConfig},
    "model": {"mlp": MLPConfig, "simple_cnn": SimpleCNNConfig, "resnet": ResNetConfig},
    "optim": {"sgd": SGDConfig, "adamw": AdamWConfig},
    "scheduler": {"constant": ConstantSchedulerConfig, "cosine": CosineSchedulerConfig},
    "augment": {"augment": AugmentConfig},
    "regularization": {"regularization": RegularizationConfig},
    "trainer": {"trainer": TrainerConfig},
    "logger": {"logger": LoggerConfig},
    "paths": {"paths": PathsConfig},
}


def register_configs() -> None:
    """Put the root schema and every group schema into Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)


def validate(cfg: DictConfig) -> None:
    """Check every value's range; raise ConfigError with a one-line message naming the key."""
    # trainer and data first: other groups interpolate their values (T_max, num_classes).
    groups = sorted((key for key in cfg if OmegaConf.is_dict(cfg[key])),
                    key=lambda key: (key not in ("trainer", "data"), key != "trainer"))
    keys = [*groups, None]
    for key in keys:
        node = cfg if key is None else cfg[key]
        try:
            OmegaConf.to_object(node)
        except ValueError as err:
            prefix = f"{key}." if key else ""
            raise ConfigError(f"invalid config: {prefix}{err}") from None
        except OmegaConfBaseException as err:
            first_line = str(err).splitlines()[0]
            full_key = getattr(err, "full_key", None)
            raise ConfigError(f"invalid config at {full_key or key}: {first_line}") from None
