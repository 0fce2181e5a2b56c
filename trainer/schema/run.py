"""Schemas of the run itself: the `trainer` and `paths` groups and the root config (`logger`: logger.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from trainer.schema.checks import require

PRECISIONS = ("32", "bf16", "16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PROGRESS = ("auto", "rich", "plain", "none")
MODES = ("train", "eval", "summary", "predict", "export", "lr_find")
EXPORT_FORMATS = ("torchscript", "onnx", "torch_export")
CKPT_MODES = ("eval", "predict", "export")
# What trainer.monitor can select best.pt (and the top-k checkpoints) on: the history row's val metrics.
MONITORS = ("val/acc", "val/loss", "val/top5", "val_ema/acc", "val_ema/loss")
MONITOR_MODES = ("max", "min")
EVAL_SPLITS = ("val", "test")
TTA_MODES = ("none", "flip", "flip_translate")
TTA_TRANSLATE_PX = 2  # flip_translate shifts by this many pixels in both axes (reflect padding fills the border)


def monitor_mode(monitor: str, mode: str | None) -> str:
    """`trainer.monitor_mode`, or when unset the direction the metric improves in: min for a loss, max otherwise."""
    return mode or ("min" if monitor.endswith("loss") else "max")


@dataclass
class EarlyStoppingConfig:
    """`trainer.early_stopping`: end the run when trainer.monitor has not improved for `patience` epochs."""

    patience: int | None = None  # epochs without an improvement before the run stops; null: never stop early
    min_delta: float = 0.0  # an improvement must beat the best so far by more than this

    def __post_init__(self) -> None:
        require(self.patience is None or self.patience >= 1, "patience", ">= 1 or null", self.patience)
        require(self.min_delta >= 0, "min_delta", ">= 0", self.min_delta)


@dataclass
class TrainerConfig:
    """`trainer=default`: how the loop runs: length, device, precision, checkpointing, console."""

    max_epochs: int = 6
    unfreeze_at_epoch: int | None = None  # with model.freeze: after N epochs everything trains; null: frozen throughout
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    precision: str = "32"  # 32 | bf16 | 16 (autocast; fp16 adds a gradient scaler)
    grad_clip_norm: float | None = None  # clip the global gradient norm to this value
    accumulate_grad_batches: int = 1  # sum gradients over N batches per optimizer step
    deterministic: bool = False  # torch.use_deterministic_algorithms
    resume: str | None = None  # PATH to a last.pt, or auto: checkpoints/last.pt of this run dir if present
    # true: a resume from an epoch-boundary checkpoint with a raised max_epochs runs a fresh schedule over the
    # added epochs (from optim.lr, as if the run began there); false: such a resume is refused (README, Reliability)
    extend_schedule: bool = False
    log_every_n_steps: int = 20
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    limit_test_batches: int | None = None  # caps the test pass after training (and mode=eval) too
    overfit_batches: int = 0  # > 0: train and validate on the first N training batches
    save_checkpoints: bool = True
    # Model selection (README, Choosing the model): best.pt holds the epoch with the best `monitor` value
    monitor: str = "val/acc"  # val/acc | val/loss | val/top5 | val_ema/acc | val_ema/loss (needs ema_decay)
    monitor_mode: str | None = None  # max | min; null: min for a loss, max otherwise
    save_top_k: int = 1  # > 1: keep the k best as checkpoints/epoch=E-<metric>=V.pt too (1: best.pt; 0: none)
    save_every_n_epochs: int | None = None  # also keep checkpoints/epoch=E.pt every N epochs
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    checkpoint_every_n_steps: int | None = None  # also write last.pt every N optimizer steps (exact mid-epoch resume)
    skip_nonfinite: bool = False  # true: drop batches with a NaN/inf loss (counted in summary.json) instead of stopping
    check_nonfinite_every_step: bool = True  # false: no per-step host sync; a NaN stops the run at the next log read
    report: bool = True  # curves.png, confusion_matrix.png, per_class.csv, TensorBoard figures at the end
    progress: str = "auto"  # auto (bar on a terminal, plain lines otherwise) | rich | plain | none
    # Speed (see BENCHMARKS.md): channels_last suits convnets under AMP on CUDA; compile costs start-up time.
    channels_last: bool = False  # NHWC memory format for the model and its inputs
    compile: bool = False  # torch.compile the model
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    compile_backend: str = "inductor"  # inductor generates code; aot_eager only traces (a quick check that it compiles)
    num_threads: int | None = None  # CPU threads for torch (null: torch's default, or a fair share under joblib)
    sync_batchnorm: bool = False  # torchrun: BatchNorm statistics over all processes (SyncBatchNorm)

    def __post_init__(self) -> None:
        require(self.max_epochs >= 1, "max_epochs", ">= 1", self.max_epochs)
        require(self.unfreeze_at_epoch is None or self.unfreeze_at_epoch >= 1, "unfreeze_at_epoch", ">= 1 or null",
                self.unfreeze_at_epoch)
        require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                 "device", "auto, cpu, cuda or cuda:N", self.device)
        require(self.precision in PRECISIONS, "precision", "one of 32, bf16, 16", self.precision)
        require(self.grad_clip_norm is None or self.grad_clip_norm > 0, "grad_clip_norm", "> 0 or null",
                 self.grad_clip_norm)
        require(self.accumulate_grad_batches >= 1, "accumulate_grad_batches", ">= 1", self.accumulate_grad_batches)
        require(self.log_every_n_steps >= 1, "log_every_n_steps", ">= 1", self.log_every_n_steps)
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, ">= 1 or null", value)
        require(self.checkpoint_every_n_steps is None or self.checkpoint_every_n_steps >= 1,
                "checkpoint_every_n_steps", ">= 1 or null", self.checkpoint_every_n_steps)
        require(self.monitor in MONITORS, "monitor", "one of " + ", ".join(MONITORS), self.monitor)
        require(self.monitor_mode is None or self.monitor_mode in MONITOR_MODES, "monitor_mode", "max, min or null",
                self.monitor_mode)
        require(self.save_top_k >= 0, "save_top_k", ">= 0", self.save_top_k)
        require(self.save_every_n_epochs is None or self.save_every_n_epochs >= 1, "save_every_n_epochs",
                ">= 1 or null", self.save_every_n_epochs)
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
class PathsConfig:
    """Where runs and data sets live; relative paths are taken from the directory you launch in."""

    output_root: str = "outputs"
    data_dir: str = "data"


@dataclass
class SummaryConfig:
    """`mode=summary`: how deep into the module tree the layer table goes."""

    depth: int = 2  # module-tree depth of the layer table

    def __post_init__(self) -> None:
        require(self.depth >= 1, "depth", ">= 1", self.depth)


@dataclass
class PredictConfig:
    """`mode=predict`: the image file or folder to classify and how many top classes to list."""

    input: str | None = None  # an image file (PNG/JPEG) or a folder of them
    topk: int = 5  # classes listed per image (capped at the checkpoint's num_classes)

    def __post_init__(self) -> None:
        require(self.topk >= 1, "topk", ">= 1", self.topk)


@dataclass
class ExportConfig:
    """`mode=export`: the serialised format written beside the run (TorchScript needs no extra package)."""

    # torchscript | onnx (needs: pip install -e '.[onnx]') | torch_export (torch.export's ExportedProgram, .pt2)
    format: str = "torchscript"

    def __post_init__(self) -> None:
        require(self.format in EXPORT_FORMATS, "format", "one of " + ", ".join(EXPORT_FORMATS), self.format)


@dataclass
class LrFindConfig:
    """`mode=lr_find`: an exponential lr sweep over training steps, the loss recorded at each (nothing is saved
    but lr_find.json and lr_find.png); the suggestion is the lr where the smoothed loss falls fastest."""

    min_lr: float = 1e-7  # the first step's lr
    max_lr: float = 10.0  # the last step's lr
    num_steps: int = 100  # optimizer steps of the sweep (the train loader is cycled when it is shorter)
    smoothing: float = 0.05  # weight of each new loss in the running (bias-corrected) average of the curve
    early_stop_threshold: float | None = 4.0  # stop once the smoothed loss exceeds this x its best; null: never

    def __post_init__(self) -> None:
        require(self.min_lr > 0, "min_lr", "> 0", self.min_lr)
        require(self.max_lr > self.min_lr, "max_lr", f"> lr_find.min_lr ({self.min_lr:g})", self.max_lr)
        require(self.num_steps >= 2, "num_steps", ">= 2", self.num_steps)
        require(0 < self.smoothing <= 1, "smoothing", "in (0, 1]", self.smoothing)
        require(self.early_stop_threshold is None or self.early_stop_threshold > 1, "early_stop_threshold",
                "> 1 or null", self.early_stop_threshold)


@dataclass
class EvalConfig:
    """How a checkpoint is scored: by `mode=eval`, and (`tta`) by the test pass after training and `mode=predict`."""

    split: str = "test"  # mode=eval: val | test (data sets without a test split score their val split)
    tta: str = "none"  # test-time augmentation: none | flip | flip_translate (flips and +-2 px shifts, logits averaged)

    def __post_init__(self) -> None:
        require(self.split in EVAL_SPLITS, "split", "one of " + ", ".join(EVAL_SPLITS), self.split)
        require(self.tta in TTA_MODES, "tta", "one of " + ", ".join(TTA_MODES), self.tta)


@dataclass
class ExtrasConfig:
    """`extras.*`: what the console shows beyond the run's own tables."""

    print_config: bool = False  # true: print the composed config tree at start (always written to config_tree.txt)


@dataclass
class TrainConfig:
    """The root of the composed config (`configs/train.yaml`).

    mode: train fits the model (then scores best.pt once on the test split); eval scores `ckpt` on eval.split;
    summary prints the model's layer table; predict classifies image files with `ckpt`; export writes `ckpt` as
    TorchScript, ONNX or a torch.export program; lr_find sweeps the lr over training steps and suggests one.
    """

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
    eval: EvalConfig = field(default_factory=EvalConfig)
    extras: ExtrasConfig = field(default_factory=ExtrasConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    lr_find: LrFindConfig = field(default_factory=LrFindConfig)

    def __post_init__(self) -> None:
        require(self.mode in MODES, "mode", "one of " + ", ".join(MODES), self.mode)
        require(self.mode not in CKPT_MODES or bool(self.ckpt), "ckpt", f"a checkpoint path when mode={self.mode}",
                self.ckpt)
        require(self.mode != "predict" or bool(self.predict.input), "predict.input",
                "an image file or folder when mode=predict", self.predict.input)


def check_evaluation(cfg: Any) -> None:
    """Refuse, for a training run, a trainer.monitor that the run would never measure, and (training or eval)
    an eval.tta=flip_translate on images too small to shift; a ValueError naming the key."""
    if cfg.get("mode") in ("train", "eval") and cfg.eval.tta == "flip_translate":
        require(cfg.data.image_size > TTA_TRANSLATE_PX, "eval.tta", f"none or flip for images of "
                f"{TTA_TRANSLATE_PX} px or less (data.image_size={cfg.data.image_size})", cfg.eval.tta)
    if cfg.get("mode") != "train":
        return
    monitor = cfg.trainer.monitor
    require(not monitor.startswith("val_ema/") or cfg.regularization.get("ema_decay") is not None,
            "trainer.monitor", "val/* unless regularization.ema_decay is set (val_ema/* scores the EMA weights)",
            monitor)
    require(monitor != "val/top5" or cfg.data.num_classes > 5, "trainer.monitor",
            "val/acc or val/loss: top-5 accuracy is measured only with more than 5 classes", monitor)


SCHEMAS = {
    "trainer": {"trainer": TrainerConfig},
    "paths": {"paths": PathsConfig},
}
