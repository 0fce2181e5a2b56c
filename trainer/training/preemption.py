"""Graceful preemption: the first SIGTERM/SIGINT asks the run to stop after the current optimizer step.

The checkpoint hook then writes `last.pt`, and `StopOnSignal` ends the run with exit code 3 (EXIT_PREEMPTED)
and the command that resumes it; a second signal exits at once, leaving the previous checkpoint intact
(checkpoints are replaced atomically).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from trainer.environment import local_world_size
from trainer.errors import Preempted
from trainer.training.hooks import EpochEvent, Hook, StepEvent

if TYPE_CHECKING:
    import torch

    from trainer.training.checkpoint import TrainState
    from trainer.training.distributed import Distributed

log = logging.getLogger("trainer")


class StopSignals:
    """A context manager that turns SIGTERM and SIGINT into a `requested` reason the run polls."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            os._exit(128 + signum)  # second signal: stop now, the last complete checkpoint stays
        self.requested = signal.Signals(signum).name

    def agree(self, ctx: Distributed, device: torch.device) -> str | None:
        """Share a stop request with every rank (one all-reduce under torchrun) and return why the run stops,
        or None; a signal that reached only another rank becomes this rank's `requested` too."""
        if ctx.any(self.requested is not None, device) and self.requested is None:
            self.requested = "a signal on another rank"
        return self.requested

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class StopOnSignal(Hook):
    """After a stop signal, once the checkpoint hook has saved: end the run with the command that resumes it.

    Mid-epoch the run stops after the step; on an epoch's last step it finishes the epoch first.
    """

    def __init__(self, run_dir: Path, stop: StopSignals, ctx: Distributed, device: torch.device) -> None:
        self.run_dir, self.stop, self.ctx, self.device = run_dir, stop, ctx, device

    def after_step(self, state: TrainState, step: StepEvent) -> None:
        if step.stopping and step.mid_epoch:
            log.warning("%s received: stopped at epoch %d, batch %d", step.stopping, step.epoch, step.batch)
            raise Preempted(f"{step.stopping}: saved {self.run_dir / 'checkpoints' / 'last.pt'}; resume with: "
                            f"{resume_command(self.run_dir)}")

    def after_validation(self, state: TrainState, epoch: EpochEvent) -> None:
        """Last among the hooks, so a signal that came while the epoch's files were written still stops here."""
        stopping = self.stop.agree(self.ctx, self.device)
        if stopping:
            raise Preempted(f"{stopping}: saved {self.run_dir / 'checkpoints' / 'last.pt'} after epoch "
                            f"{epoch.epoch}; resume with: {resume_command(self.run_dir)}")


def resume_command(run_dir: Path) -> str:
    """The command line that continues this run in the same run dir."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [o for o in overrides if not o.startswith(("trainer.resume=", "hydra.run.dir="))]
    processes = local_world_size()
    launcher = f"torchrun --nproc_per_node={processes} -m trainer" if processes > 1 else "python -m trainer"
    return " ".join([launcher, *kept, f"hydra.run.dir={run_dir}", "trainer.resume=auto"])
