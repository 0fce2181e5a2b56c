"""Experiment loggers, one per `configs/logger/*.yaml` option, and `Loggers`: the run's loggers as one.

Every logger is built as `Logger(run_dir=..., params=..., name=..., **its config)` and has the methods `Loggers`
forwards: log_scalars, log_images, log_artifact, log_hparams, log_graph, close. TensorBoard's is here; CSV,
MLflow and W&B are in trackers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import OutputError, Preempted
from trainer.reporting.run_files import write_failure

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig
    from torch import nn

Params = dict[str, str | int | float | bool]

# What run_params leaves out: where files go and how the console looks, not what the run is.
DROPPED_ROOTS = ("paths", "predict", "export", "summary", "lr_find", "hydra", "logger", "extras")
DROPPED_KEYS = ("ckpt", "mode", "eval.split", "trainer.resume", "trainer.progress")
DROPPED_LEAVES = ("_target_", "_partial_")
OPTION_GROUPS = ("data", "model", "optim", "scheduler", "augment", "regularization")
NAME_GROUPS = ("model", "optim", "scheduler")  # a run's default name in MLflow and W&B: "resnet18 adamw cosine"


@contextmanager
def ended_on_error(logger: Loggers) -> Iterator[None]:
    """Run a block; when it raises, end the loggers' runs (MLflow, W&B) as KILLED for a stop signal (the run is
    resumed later) or FAILED otherwise, so that none is left RUNNING, then let the error go on."""
    try:
        yield
    except BaseException as err:
        logger.close("KILLED" if isinstance(err, Preempted | KeyboardInterrupt) else "FAILED")
        raise


class Loggers:
    """The run's loggers (`cfg.logger`, by name) as one: each call goes to every logger, in config order."""

    def __init__(self, loggers: dict[str, Any] | None = None) -> None:
        self.loggers = dict(loggers or {})

    @property
    def graph(self) -> bool:
        """Whether any logger wants the model graph (TensorBoard's logger.tensorboard.graph=true)."""
        return any(getattr(logger, "graph", False) for logger in self.loggers.values())

    def log_scalars(self, scalars: dict[str, float], step: int, every_step: bool = False) -> None:
        """Scalars at x = `step` (the global optimizer step); `every_step`: the step-level curves."""
        for logger in self.loggers.values():
            logger.log_scalars(scalars, step, every_step=every_step)

    def log_images(self, tag: str, images: torch.Tensor, step: int = 0) -> None:
        for logger in self.loggers.values():
            logger.log_images(tag, images, step)

    def log_artifact(self, path: Path) -> None:
        """A file the run wrote (the report's PNGs), for loggers that keep files (MLflow)."""
        for logger in self.loggers.values():
            logger.log_artifact(Path(path))

    def log_hparams(self, hparams: Params, metrics: dict[str, float], step: int = 0) -> None:
        for logger in self.loggers.values():
            logger.log_hparams(hparams, metrics, step)

    def log_graph(self, model: nn.Module, sample: torch.Tensor) -> None:
        for logger in self.loggers.values():
            if getattr(logger, "graph", False):
                logger.log_graph(model, sample)

    def close(self, status: str = "FINISHED") -> None:
        """End every logger's run: FINISHED, or FAILED for a run that raised."""
        for logger in self.loggers.values():
            logger.close(status)


# The curves whose last values TensorBoard's HParams tab shows beside each run's params.
HPARAM_METRICS = ("val/acc", "val/loss", "test/acc", "test/loss", "train/loss")


class TensorBoardLogger:
    """Scalars, figures, image grids and hparams to TensorBoard event files under `<run dir>/<log_dir>`."""

    def __init__(self, run_dir: str, log_dir: str = "tb", graph: bool = False, params: Params | None = None,
                 name: str = "") -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.graph = graph
        self.folder = Path(run_dir) / log_dir
        try:  # creates the folder and opens the event file: a full disk or an unwritable folder fails here
            self.writer = SummaryWriter(log_dir=str(self.folder))
        except OSError as err:
            raise self.failed(err) from None

    def failed(self, err: OSError) -> OutputError:
        return OutputError(f"cannot write TensorBoard's event files in {self.folder}: {write_failure(err)} "
                           "(logger=none runs without them)")

    def flush(self) -> None:
        try:
            self.writer.flush()
        except OSError as err:
            raise self.failed(err) from None

    def log_scalars(self, scalars: dict[str, float], step: int, every_step: bool = False) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        if not every_step:  # step-level points are flushed with the epoch's (the writer also flushes every 120 s)
            self.flush()

    def log_images(self, tag: str, images: torch.Tensor, step: int = 0) -> None:
        """N x C x H x W floats in [0, 1] as a grid, or one C x H x W image (floats in [0, 1] or uint8)."""
        if images.dim() == 4:
            from torchvision.utils import make_grid

            images = make_grid(images, nrow=min(8, len(images)))
        self.writer.add_image(tag, images, step)
        self.flush()

    def log_artifact(self, path: Path) -> None:
        pass  # the figures come as images (log_images)

    def log_hparams(self, hparams: Params, metrics: dict[str, float], step: int = 0) -> None:
        """Hyperparameters (scalars, strings, bools) in TensorBoard's HParams tab, into this run's own event files.

        The tab's metric columns name the run's own curves (HPARAM_METRICS: val/acc, test/acc, ...), whose last
        values it reads; so, unlike `SummaryWriter.add_hparams`, nothing writes one-point `hparam/*` scalars that
        would crowd the Scalars page (`metrics`, the report's final figures, go to the other loggers).
        """
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        for summary in hparams_summaries(hparams, dict.fromkeys(HPARAM_METRICS, 0.0)):
            self.writer.file_writer.add_summary(summary)
        self.flush()

    def log_graph(self, model: nn.Module, sample: torch.Tensor) -> None:
        self.writer.add_graph(model, sample)
        self.flush()

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()


def run_params(cfg: DictConfig) -> Params:
    """The params every logger records for a run: its resolved config as dotted keys (scalars as they are, others
    as text, null as "null"), without what only says where files go or how the console looks (paths.*, ckpt,
    mode, trainer.resume, _target_, ...), plus the option chosen in each group (`model=resnet18`)."""
    from omegaconf import OmegaConf

    from trainer.reporting.console import option_name

    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that only resolves inside a Hydra run (e.g. ${hydra:...})
        tree = OmegaConf.to_container(cfg, resolve=False)
    params: Params = {}
    for group in OPTION_GROUPS:
        node = tree.get(group)
        if isinstance(node, dict) and node.get("_target_"):
            params[group] = option_name(group, str(node["_target_"]))
    params.update(flat_params(tree))
    return params


def flat_params(tree: Any, prefix: str = "") -> Params:
    """`tree`'s leaves as dotted keys, less the DROPPED_* ones."""
    if isinstance(tree, dict):
        flat: Params = {}
        for key, value in tree.items():
            full = f"{prefix}{key}"
            if key in DROPPED_LEAVES or full in DROPPED_KEYS or (not prefix and key in DROPPED_ROOTS):
                continue
            flat.update(flat_params(value, f"{full}."))
        return flat
    key = prefix[:-1]
    if tree is None:
        return {key: "null"}
    return {key: tree if isinstance(tree, str | int | float | bool) else str(tree)}


def run_label(cfg: DictConfig) -> str:
    """A run's default name in MLflow and W&B: the model, optimizer and schedule chosen (`resnet18 adamw cosine`)."""
    from trainer.reporting.console import option_name

    return " ".join(option_name(group, str(cfg[group].get("_target_", ""))) for group in NAME_GROUPS
                    if group in cfg and cfg[group] is not None)
