"""The run's hooks: dispatch order, the step count, and when a stop signal ends the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.errors import Preempted
from trainer.training.checkpoint import TrainState
from trainer.training.distributed import Distributed
from trainer.training.hooks import EpochEvent, Hook, Hooks, StepEvent
from trainer.training.metrics import EpochStats, RunningStats
from trainer.training.preemption import StopOnSignal, StopSignals

CPU = torch.device("cpu")
STATS = EpochStats(loss=0.5, acc=0.8, top5=None, samples=10, seconds=1.0)


class Recorder(Hook):
    """Records each event; `signal_on_epoch` plays a SIGTERM that arrives while the epoch's files are written."""

    def __init__(self, log: list, name: str, stop: StopSignals | None = None) -> None:
        self.log, self.name, self.stop = log, name, stop

    def after_step(self, state: TrainState, step: StepEvent) -> None:
        self.log.append((self.name, "step", state.global_step, step.batch, step.stopping))

    def after_validation(self, state: TrainState, epoch: EpochEvent) -> None:
        self.log.append((self.name, "epoch", epoch.epoch))
        if self.stop is not None:
            self.stop.requested = "SIGTERM"

    def at_end(self, state: TrainState) -> None:
        self.log.append((self.name, "end"))


def hooks_for(stop: StopSignals, *hooks: Hook, steps: int = 4) -> Hooks:
    return Hooks(hooks, TrainState(), stop, Distributed(), CPU, steps)


def test_events_reach_every_hook_in_order_with_the_step_count() -> None:
    log: list = []
    with StopSignals() as stop:
        hooks = hooks_for(stop, Recorder(log, "a"), Recorder(log, "b"))
        hooks.after_step(1, RunningStats(CPU))
        hooks.after_step(2, RunningStats(CPU))
        hooks.after_validation(EpochEvent(1, STATS, STATS, None, 0.1, True))
        hooks.at_end()
    assert log == [("a", "step", 1, 1, None), ("b", "step", 1, 1, None), ("a", "step", 2, 2, None),
                   ("b", "step", 2, 2, None), ("a", "epoch", 1), ("b", "epoch", 1), ("a", "end"), ("b", "end")]


def test_a_signal_stops_mid_epoch_after_the_step_but_not_on_the_epochs_last_step(tmp_path: Path) -> None:
    log: list = []
    with StopSignals() as stop:
        hooks = hooks_for(stop, Recorder(log, "a"), StopOnSignal(tmp_path, stop, Distributed(), CPU), steps=4)
        stop.requested = "SIGTERM"
        hooks.after_step(4, RunningStats(CPU))  # the epoch's last batch: finish the epoch first
        with pytest.raises(Preempted, match="SIGTERM: saved .*last.pt; resume with: .*trainer.resume=auto"):
            hooks.after_step(2, RunningStats(CPU))
    assert [entry[-1] for entry in log] == ["SIGTERM", "SIGTERM"]  # every hook saw why the run stops


def test_a_signal_during_the_epochs_files_still_stops_after_that_epoch(tmp_path: Path) -> None:
    """StopOnSignal asks for the stop after the hooks before it ran (the checkpoint among them)."""
    log: list = []
    with StopSignals() as stop:
        hooks = hooks_for(stop, Recorder(log, "files", stop=stop), StopOnSignal(tmp_path, stop, Distributed(), CPU))
        with pytest.raises(Preempted, match="after epoch 1"):
            hooks.after_validation(EpochEvent(1, STATS, STATS, None, 0.1, True))
    assert log == [("files", "epoch", 1)]
