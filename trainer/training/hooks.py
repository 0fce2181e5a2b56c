"""The run's events and the hooks that subscribe to them: a protocol and a list.

A run meets four events, in this order:
- `before_epoch`: before each epoch trains, a resumed one too (lifting `model.freeze`: trainer/training/freeze.py);
- `after_step`: after every optimizer step (a mid-epoch checkpoint, a graceful stop);
- `after_validation`: once per epoch, with its train and val results (checkpoints, metrics.csv, loggers,
  the console line);
- `at_end`: after the last epoch (the report, closing loggers).
Each hook implements the events it needs (the `Hook` base does nothing) and runs in list order.
`Hooks` dispatches them and adds what every hook of a step needs to know: the step count, and whether a stop
signal on any rank ends the run after it (at an epoch's end `StopOnSignal` asks, after the checkpoint is saved).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from trainer.training.checkpoint import TrainState
    from trainer.training.distributed import Distributed
    from trainer.training.metrics import EpochStats, RunningStats
    from trainer.training.preemption import StopSignals


@dataclass(frozen=True)
class StepEvent:
    """An optimizer step has been taken."""

    epoch: int  # the epoch being trained, from 1
    batch: int  # batches of this epoch done, from 1 (a resumed epoch counts those before its checkpoint)
    steps_per_epoch: int  # batches in a whole epoch
    stats: RunningStats  # the epoch's running sums so far
    stopping: str | None  # why the run stops after this step (a signal on any rank), or None

    @property
    def mid_epoch(self) -> bool:
        """Whether batches of this epoch are still to come (a stop then saves and ends the run here)."""
        return self.batch < self.steps_per_epoch


@dataclass(frozen=True)
class EpochEvent:
    """An epoch has been trained and validated; `state.history[-1]` holds its metrics row."""

    epoch: int  # epochs completed
    train: EpochStats
    val: EpochStats
    val_ema: EpochStats | None  # the EMA weights' validation, when regularization.ema_decay is set
    lr: float  # the learning rate the epoch ended with, before the epoch's scheduler step
    is_best: bool  # the best val accuracy so far


class Hook:
    """Subscribe to a run's events by overriding any of these; `state` is the run's TrainState."""

    def before_epoch(self, state: TrainState) -> None:
        pass

    def after_step(self, state: TrainState, step: StepEvent) -> None:
        pass

    def after_validation(self, state: TrainState, epoch: EpochEvent) -> None:
        pass

    def at_end(self, state: TrainState) -> None:
        pass


class Hooks:
    """The run's hooks in order, with the run's progress (`state`) and its stop signals."""

    def __init__(self, hooks: Iterable[Hook], state: TrainState, stop: StopSignals, ctx: Distributed,
                 device: torch.device, steps_per_epoch: int) -> None:
        self.hooks = list(hooks)
        self.state, self.stop, self.ctx, self.device = state, stop, ctx, device
        self.steps_per_epoch = steps_per_epoch

    def before_epoch(self) -> None:
        """Before epoch `state.epoch + 1` trains (`state.batch_in_epoch` > 0: it continues a saved one)."""
        for hook in self.hooks:
            hook.before_epoch(self.state)

    def after_step(self, batch: int, stats: RunningStats) -> None:
        """`train_epoch`'s after_step: count the step, agree across ranks on a stop, then every hook."""
        self.state.global_step += 1
        step = StepEvent(self.state.epoch + 1, batch, self.steps_per_epoch, stats,
                         self.stop.agree(self.ctx, self.device))
        for hook in self.hooks:
            hook.after_step(self.state, step)

    def after_validation(self, epoch: EpochEvent) -> None:
        for hook in self.hooks:
            hook.after_validation(self.state, epoch)

    def at_end(self) -> None:
        for hook in self.hooks:
            hook.at_end(self.state)
