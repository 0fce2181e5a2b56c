"""Graceful preemption: the first SIGTERM/SIGINT asks the loop to stop after the current step.

The loop then writes `last.pt` and exits with EXIT_PREEMPTED; a second signal exits at once, leaving the
previous checkpoint intact (checkpoints are replaced atomically).
"""

from __future__ import annotations

import os
import signal
from types import FrameType

from trainer.errors import EXIT_PREEMPTED, TrainerError


class Preempted(TrainerError):
    """Raised by the loop once it has saved its state after a stop signal."""

    exit_code = EXIT_PREEMPTED


class StopSignals:
    """A context manager that turns SIGTERM and SIGINT into a `requested` flag the loop polls."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            os._exit(128 + signum)  # second signal: stop now, the last complete checkpoint stays
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
