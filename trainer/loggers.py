"""Experiment loggers, one per `configs/logger/*.yaml` option."""

from __future__ import annotations

from pathlib import Path


class TensorBoardLogger:
    """Scalars to TensorBoard event files under `<run dir>/<log_dir>`."""

    def __init__(self, run_dir: str, log_dir: str = "tb") -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / log_dir))

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class NullLogger:
    """Logs nothing (metrics.csv and summary.json are written regardless)."""

    def __init__(self, run_dir: str, log_dir: str = "") -> None:
        pass

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass
