"""Experiment loggers, one per `configs/logger/*.yaml` option."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import OutputError
from trainer.reporting.run_files import write_failure

if TYPE_CHECKING:
    import torch
    from torch import nn


class TensorBoardLogger:
    """Scalars, figures, image grids and hparams to TensorBoard event files under `<run dir>/<log_dir>`."""

    def __init__(self, run_dir: str, log_dir: str = "tb", graph: bool = False) -> None:
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

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.flush()

    def log_images(self, tag: str, images: torch.Tensor, step: int = 0) -> None:
        """N x C x H x W floats in [0, 1] as a grid, or one C x H x W image (floats in [0, 1] or uint8)."""
        if images.dim() == 4:
            from torchvision.utils import make_grid

            images = make_grid(images, nrow=min(8, len(images)))
        self.writer.add_image(tag, images, step)
        self.flush()

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Hyperparameters (scalars, strings, bools) beside the final metrics, in TensorBoard's HParams tab.

        Written into this run's own event files (run_name="."), not a timestamped sub-folder.
        """
        self.writer.add_hparams(hparams, metrics, run_name=".")
        self.flush()

    def log_graph(self, model: nn.Module, sample: torch.Tensor) -> None:
        self.writer.add_graph(model, sample)
        self.flush()

    def close(self) -> None:
        self.writer.close()


class NullLogger:
    """Logs nothing (metrics.csv and summary.json are written regardless)."""

    def __init__(self, run_dir: str, log_dir: str = "", graph: bool = False) -> None:
        self.graph = False

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        pass

    def log_images(self, tag: str, images: torch.Tensor, step: int = 0) -> None:
        pass

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        pass

    def log_graph(self, model: nn.Module, sample: torch.Tensor) -> None:
        pass

    def close(self) -> None:
        pass
