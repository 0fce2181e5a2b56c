"""Hydra's private API that trainer/hydra_compat.py relies on is still there, with the same shape.

When one of these fails after upgrading hydra-core, read trainer/hydra_compat.py's docstring: the one-line
composition errors (README "Exit codes", code 1) depend on it; tests/e2e/test_startup.py checks those errors through
the real CLI.
"""

from __future__ import annotations

import inspect
import sys

import pytest


def raises(err: Exception):
    def step() -> None:
        raise err
    return step


def test_run_and_report_exists_with_the_call_shape_we_wrap(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra._internal import utils as hydra_utils

    assert callable(hydra_utils.run_and_report), "hydra._internal.utils.run_and_report is gone"
    parameters = list(inspect.signature(hydra_utils.run_and_report).parameters.values())
    assert [p.kind for p in parameters] == [inspect.Parameter.POSITIONAL_OR_KEYWORD], parameters  # one: func
    assert hydra_utils.run_and_report(lambda: 42) == 42  # func() is called with no arguments, its result returned
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:  # an error: Hydra's report, then exit code 1
        hydra_utils.run_and_report(raises(RuntimeError("boom")))
    assert exit_info.value.code == 1 and "boom" in capsys.readouterr().err


def test_hydra_main_runs_its_steps_through_the_module_global() -> None:
    """`@hydra.main` calls `_run_hydra`, which (with `_run_app`) looks `run_and_report` up at each call, so
    replacing the module attribute reroutes it; an import of the function by value would not see the swap."""
    from hydra._internal import utils as hydra_utils

    assert sys.modules["hydra.main"]._run_hydra is hydra_utils._run_hydra
    for function in (hydra_utils._run_hydra, hydra_utils._run_app):
        assert "run_and_report" in function.__code__.co_names, function.__name__  # a global, looked up at call
        assert "run_and_report(" in inspect.getsource(function), function.__name__
    assert "run_and_report" not in sys.modules["hydra.main"].__dict__


def test_the_guard_wraps_every_step_inside_hydras_report_and_is_undone(capsys: pytest.CaptureFixture[str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra._internal import utils as hydra_utils
    from hydra.errors import ConfigCompositionException

    from trainer.cli import MainCall
    from trainer.hydra_compat import guarded_hydra_steps

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    hydra_report = hydra_utils.run_and_report
    call = MainCall()
    outcomes = []
    with guarded_hydra_steps(call.composition_errors_in_one_line):
        assert hydra_utils.run_and_report(lambda: "composed") == "composed"
        for started, err in [(False, ConfigCompositionException("bad override\n    full_key: x")),
                             (False, RuntimeError("not a config problem")),
                             (True, ConfigCompositionException("raised inside a run"))]:
            call.task_started = started
            with pytest.raises(SystemExit) as exit_info:
                hydra_utils.run_and_report(raises(err))
            outcomes.append((exit_info.value.code, capsys.readouterr().err))
    assert hydra_utils.run_and_report is hydra_report  # restored on exit
    assert outcomes[0] == (1, "error: bad override\n")  # the guard's one line
    assert all(code == 1 and not err.startswith("error:") for code, err in outcomes[1:])  # Hydra's reports:
    assert "Traceback" in outcomes[1][1] and "not a config problem" in outcomes[1][1]  # the frames, or
    assert "raised inside a run" in outcomes[2][1] and "HYDRA_FULL_ERROR=1" in outcomes[2][1]  # its hint


def test_the_guard_is_undone_when_the_block_raises() -> None:
    from hydra._internal import utils as hydra_utils

    from trainer.hydra_compat import guarded_hydra_steps

    hydra_report = hydra_utils.run_and_report
    with pytest.raises(SystemExit), guarded_hydra_steps(lambda step: step):
        raise SystemExit(1)
    assert hydra_utils.run_and_report is hydra_report
