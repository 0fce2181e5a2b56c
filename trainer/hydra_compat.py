"""The trainer's one use of Hydra's private API (`hydra._internal`): wrapping the steps `@hydra.main` reports.

Why: Hydra has no public hook for how `@hydra.main` reports an error. The trainer wants a config that does not
compose (unknown option or key, wrong type, bad override syntax) to end with one `error:` line, not Hydra's
multi-line report; a Callback cannot do it, since callbacks start only once the config has composed.

What it relies on (hydra-core 1.3; tests/unit/test_hydra_compat.py fails when any of it changes):

- `hydra._internal.utils.run_and_report(func)` exists and takes one argument, a callable of no arguments; it
  returns `func()`'s result, and when `func()` raises it prints Hydra's report (the whole traceback under
  HYDRA_FULL_ERROR=1) and exits with code 1.
- `hydra._internal.utils._run_hydra` (what `@hydra.main` calls) and `_run_app` run every step through it,
  looked up as a global of that module at each call: adding `--config-dir`, creating Hydra, composing and
  running the config or sweep, `--cfg`, shell completion. Replacing the module attribute reroutes them all.

Nothing else in trainer/ or scripts/ imports `hydra._internal`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Step = Callable[[], Any]  # one step of `@hydra.main`, as Hydra hands it to run_and_report


@contextmanager
def guarded_hydra_steps(guard: Callable[[Step], Step]) -> Iterator[None]:
    """While inside, each step `@hydra.main` runs is `guard(step)`, inside Hydra's own report.

    `guard(step)` returns a callable that runs `step`; it may end the process itself (one `error:` line and an
    exit code) or re-raise, in which case Hydra prints its report as before. Hydra's function is restored on exit.
    """
    from hydra._internal import utils as hydra_utils

    hydra_report = hydra_utils.run_and_report

    def report(step: Step) -> Any:
        return hydra_report(guard(step))

    hydra_utils.run_and_report = report
    try:
        yield
    finally:
        hydra_utils.run_and_report = hydra_report
