"""Where a run's wall time goes: host seconds per phase, reported in summary.json."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimes:
    """Host wall seconds a run spends in each phase (set-up, train, validate, checkpoint, report).

    Phases nest: a checkpoint written in the middle of an epoch counts as checkpoint time, not train time.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._nested = [0.0]  # seconds spent in inner phases, one slot per open phase

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self._nested.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            inner = self._nested.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - inner
            self._nested[-1] += elapsed

    def record(self, name: str, since: float) -> None:
        """Add the seconds since `since` (a `time.perf_counter()` reading) to phase `name`."""
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - since

    def summary(self, phases: tuple[str, ...], wall_s: float) -> dict[str, float]:
        """Seconds per phase, 0 for those that did not run, and `other`: the rest of `wall_s` (metrics files,
        logging, the progress display, collectives between phases)."""
        seconds = {name: round(self.seconds.get(name, 0.0), 3) for name in phases}
        seconds |= {name: round(value, 3) for name, value in self.seconds.items() if name not in phases}
        seconds["other"] = round(max(0.0, wall_s - sum(self.seconds.values())), 3)
        return seconds
