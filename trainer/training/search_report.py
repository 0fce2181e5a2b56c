"""A run of an Optuna search reports each epoch's monitored value to its trial and stops when the trial is pruned
(`hparams_search=optuna hydra.sweeper.pruner=median|hyperband`; trainer/search.py finds the trial)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from trainer.environment import optuna_trial
from trainer.training.hooks import EpochEvent, Hook

if TYPE_CHECKING:
    import optuna

    from trainer.reporting.console import RunConsole
    from trainer.training.checkpoint import TrainState
    from trainer.training.selection import Monitor

log = logging.getLogger("trainer")


class ReportToTrial(Hook):
    """After each epoch (and its checkpoint): `trial.report(value, step=epoch)` of trainer.monitor; when the
    trial's pruner says so, the run stops after this epoch as early stopping would, marked as pruned."""

    def __init__(self, trial: optuna.Trial, monitor: Monitor, console: RunConsole, pruner: str) -> None:
        self.trial, self.monitor, self.console, self.pruner = trial, monitor, console, pruner
        self.pruned_epoch: int | None = None

    @property
    def pruned(self) -> bool:
        return self.pruned_epoch is not None

    def after_validation(self, state: TrainState, epoch: EpochEvent) -> None:
        value = self.monitor.value(state.history[-1])
        if value is None:  # a non-finite value is no evidence either way
            return
        self.trial.report(value, step=epoch.epoch)
        if self.trial.should_prune():
            state.stopped_early, self.pruned_epoch = True, epoch.epoch
            self.console.info(f"Optuna trial {self.trial.number} pruned after epoch {epoch.epoch}: "
                              f"{self.monitor.name} {value:.4f} is unpromising (hydra.sweeper.pruner={self.pruner})")


def trial_reporting(monitor: Monitor, console: RunConsole) -> list[ReportToTrial]:
    """The run's ReportToTrial hook when it is a trial of an Optuna search; none otherwise."""
    ref = optuna_trial()
    if ref is None:
        return []
    from trainer.search import find_trial

    trial = find_trial(ref)
    if trial is None and ref.pruner == "none":  # the per-epoch values only feed the dashboard then
        return []
    if trial is None:
        log.warning("Optuna trial %d of study %s is in another process's memory: this run cannot report its "
                    "epochs (set hydra.sweeper.storage=sqlite:///... to prune across processes)", ref.number, ref.study)
        return []
    return [ReportToTrial(trial, monitor, console, ref.pruner)]
