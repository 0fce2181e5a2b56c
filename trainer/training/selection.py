"""Model selection: the metric that chooses best.pt (`trainer.monitor`), the k best epochs kept beside it
(`trainer.save_top_k`), and early stopping on the same metric (`trainer.early_stopping`).

Everything here reads the epoch's metrics row (`TrainState.history[-1]`) and keeps its progress in the
`TrainState`, so that a resumed run selects and stops exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from trainer.schema.run import monitor_mode
from trainer.training.hooks import EpochEvent, Hook

if TYPE_CHECKING:
    from trainer.reporting.console import RunConsole
    from trainer.training.checkpoint import TrainState

log = logging.getLogger("trainer")


@dataclass(frozen=True)
class Monitor:
    """A val metric by its logged name (`val/acc`, `val_ema/loss`, ...) and whether higher (max) is better."""

    name: str  # trainer.monitor
    mode: str  # max | min

    @classmethod
    def from_config(cls, tcfg: DictConfig) -> Monitor:
        return cls(tcfg.monitor, monitor_mode(tcfg.monitor, tcfg.monitor_mode))

    @property
    def key(self) -> str:
        """The metric's column in metrics.csv and the history rows: `val/acc` -> `val_acc`."""
        return self.name.replace("/", "_")

    @property
    def uses_ema(self) -> bool:
        """Whether the metric scores the EMA weights (then best.pt holds them as its model)."""
        return self.name.startswith("val_ema/")

    @property
    def weights(self) -> str:
        """Which weights the selected checkpoints hold: `ema` or `model`."""
        return "ema" if self.uses_ema else "model"

    def value(self, row: dict) -> float | None:
        """The metric in a history row; None when the row lacks it or it is not finite (never selected)."""
        value = row.get(self.key)
        return float(value) if value is not None and math.isfinite(value) else None

    def improves(self, value: float | None, best: float | None, min_delta: float = 0.0) -> bool:
        """Whether `value` beats `best` by more than `min_delta` (any finite value beats no best yet)."""
        if value is None:
            return False
        if best is None:
            return True
        return value > best + min_delta if self.mode == "max" else value < best - min_delta

    def file_name(self, epoch: int, value: float) -> str:
        """A top-k checkpoint's name: `epoch=7-val_acc=0.9712.pt`."""
        return f"epoch={epoch}-{self.key}={value:.4f}.pt"


def update_top_k(entries: list[dict], epoch: int, value: float | None, k: int,
                 monitor: Monitor) -> tuple[list[dict], bool]:
    """The k best epochs (dicts of epoch, score, file), best first, after adding this epoch's `value`; and
    whether this epoch is among them. Ties keep the earlier epoch."""
    if k <= 0:
        return [], False
    if value is None:
        return entries[:k], False
    candidate = {"epoch": epoch, "score": value, "file": monitor.file_name(epoch, value)}
    ranked = [*entries]
    position = next((i for i, entry in enumerate(ranked) if monitor.improves(value, entry["score"])), len(ranked))
    ranked.insert(position, candidate)
    return ranked[:k], position < k


def resumed_best(state: TrainState, monitor: Monitor) -> float | None:
    """The best monitored value so far of a state saved before monitors existed (it kept only best_epoch)."""
    rows = [row for row in state.history if row.get("epoch") == state.best_epoch]
    return monitor.value(rows[0]) if rows else None


class EarlyStopping(Hook):
    """`trainer.early_stopping`: after `patience` epochs in a row without the monitored metric improving on its
    best by more than `min_delta`, mark the run stopped (the epoch loop ends; the checkpoint records it)."""

    def __init__(self, monitor: Monitor, patience: int, min_delta: float, console: RunConsole) -> None:
        self.monitor, self.patience, self.min_delta, self.console = monitor, patience, min_delta, console

    def after_validation(self, state: TrainState, epoch: EpochEvent) -> None:
        value = self.monitor.value(state.history[-1])
        if self.monitor.improves(value, state.early_stopping_best, self.min_delta):
            state.early_stopping_best, state.epochs_without_improvement = value, 0
            return
        state.epochs_without_improvement += 1
        if state.epochs_without_improvement >= self.patience:
            state.stopped_early = True
            best = "" if state.best_score is None else f"; best {state.best_score:.4f} at epoch {state.best_epoch}"
            self.console.info(
                f"early stopping after epoch {epoch.epoch}: {self.monitor.name} has not improved by more than "
                f"{self.min_delta:g} for {self.patience} epoch(s) (trainer.early_stopping.patience){best}")
