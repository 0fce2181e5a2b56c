"""Schemas of the run itself: the `trainer`, `logger` and `paths` groups and the root config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from trainer.schema.checks import require

PRECISIONS = ("32", "bf16", "16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PROGRESS = ("auto", "rich", "plain", "none")
MODES = ("train", "eval", "summary", "predict", "export")
EXPORT_FORMATS = ("torchscript", "onnx")
CKPT_MODES = ("eval", "predict", "export")


@dataclass
class TrainerConfig:
    max_epochs: int = 6
    device: str = "auto"
    precision: str = "32"
    grad_clip_norm: float | None = None
    accumulate_grad_batches: int = 1
    deterministic: bool = False
    resume: str | None = None
    log_every_n_steps: int = 20
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    overfit_batches: int = 0
    save_checkpoints: bool = True
    checkpoint_every_n_steps: int | None = None
    skip_nonfinite: bool = False
    check_nonfinite_every_step: bool = True
    report: bool = True
    progress: str = "auto"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    compile_backend: str = "inductor"
    num_threads: int | None = None
    sync_batchnorm: bool = False

    def __post_init__(self) -> None:
        require(self.max_epochs >= 1, "max_epochs", ">= 1", self.max_epochs)
        require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                 "device", "auto, cpu, cuda or cuda:N", self.device)
        require(self.precision in PRECISIONS, "precision", "one of 32, bf16, 16", self.precision)
        require(self.grad_clip_norm is None or self.grad_clip_norm > 0, "grad_clip_norm", "> 0 or null",
                 self.grad_clip_norm)
        require(self.accumulate_grad_batches >= 1, "accumulate_grad_batches", ">= 1", self.accumulate_grad_batches)
        require(self.log_every_n_steps >= 1, "log_every_n_steps", ">= 1", self.log_every_n_steps)
        for key in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, ">= 1 or null", value)
        require(self.checkpoint_every_n_steps is None or self.checkpoint_every_n_steps >= 1,
                "checkpoint_every_n_steps", ">= 1 or null", self.checkpoint_every_n_steps)
        require(self.overfit_batches >= 0, "overfit_batches", ">= 0", self.overfit_batches)
        require(self.progress in PROGRESS, "progress", "one of " + ", ".join(PROGRESS), self.progress)
        require(self.compile_mode in COMPILE_MODES, "compile_mode", "one of " + ", ".join(COMPILE_MODES),
                self.compile_mode)
        require(bool(self.compile_backend), "compile_backend", "a torch.compile backend name", self.compile_backend)
        require(self.num_threads is None or self.num_threads >= 1, "num_threads", ">= 1 or null", self.num_threads)
        require(self.check_nonfinite_every_step or not self.skip_nonfinite, "skip_nonfinite",
                "false when check_nonfinite_every_step=false (skipping needs the per-step check)",
                self.skip_nonfinite)


@dataclass
class LoggerConfig:
    _target_: str = "trainer.reporting.loggers.TensorBoardLogger"
    log_dir: str = "tb"
    graph: bool = False  # also write the model graph (traced once, at the end of training)


@dataclass
class PathsConfig:
    output_root: str = "outputs"
    data_dir: str = "data"


@dataclass
class SummaryConfig:
    """`mode=summary`: how deep into the module tree the layer table goes."""

    depth: int = 2

    def __post_init__(self) -> None:
        require(self.depth >= 1, "depth", ">= 1", self.depth)


@dataclass
class PredictConfig:
    """`mode=predict`: the image file or folder to classify and how many top classes to list."""

    input: str | None = None
    topk: int = 5

    def __post_init__(self) -> None:
        require(self.topk >= 1, "topk", ">= 1", self.topk)


@dataclass
class ExportConfig:
    """`mode=export`: the serialised format written beside the run (TorchScript needs no extra package)."""

    format: str = "torchscript"

    def __post_init__(self) -> None:
        require(self.format in EXPORT_FORMATS, "format", "one of " + ", ".join(EXPORT_FORMATS), self.format)


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
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        require(self.mode in MODES, "mode", "one of " + ", ".join(MODES), self.mode)
        require(self.mode not in CKPT_MODES or bool(self.ckpt), "ckpt", f"a checkpoint path when mode={self.mode}",
                self.ckpt)
        require(self.mode != "predict" or bool(self.predict.input), "predict.input",
                "an image file or folder when mode=predict", self.predict.input)


SCHEMAS = {
    "trainer": {"trainer": TrainerConfig},
    "logger": {"logger": LoggerConfig},
    "paths": {"paths": PathsConfig},
}
