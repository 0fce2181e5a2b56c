"""The CLI's error handling and thread limits, in-process: one line and the right exit code for each kind of failure."""

from __future__ import annotations

import os

import pytest
import torch

from tests.conftest import REPO


def test_only_composition_errors_before_the_task_are_shortened(capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A config that does not compose gets one line and exit code 1; a failure inside a run, or any other kind
    of error, is re-raised for Hydra's report (tests/unit/test_hydra_compat.py checks that report
    around it)."""
    from hydra.errors import ConfigCompositionException

    from trainer.cli import MainCall

    def raises(err: Exception):
        def step() -> None:
            raise err
        return step

    call = MainCall()
    assert call.composition_errors_in_one_line(lambda: 42)() == 42
    with pytest.raises(SystemExit) as exit_info:
        call.composition_errors_in_one_line(raises(ConfigCompositionException("bad override\n    full_key: x")))()
    assert (exit_info.value.code, capsys.readouterr().err) == (1, "error: bad override\n")
    with pytest.raises(RuntimeError, match="not a config problem"):
        call.composition_errors_in_one_line(raises(RuntimeError("not a config problem")))()
    call.task_started = True  # the same error from inside a run is the run's
    with pytest.raises(ConfigCompositionException, match="raised inside a run"):
        call.composition_errors_in_one_line(raises(ConfigCompositionException("raised inside a run")))()
    assert MainCall().task_started is False  # each main() call starts afresh
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigCompositionException, match="bad override"):
        MainCall().composition_errors_in_one_line(raises(ConfigCompositionException("bad override")))()
    assert capsys.readouterr().err == ""


WRAPPED = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
           '  File "folder.py", line 9, in load\n    raise DataError(...)\n'
           "trainer.errors.DataError: no such file x.png")


@pytest.mark.parametrize(("in_sweep", "error", "code", "line"), [
    (False, "config", 2, "error: trainer.max_epochs must be >= 1"),
    (False, "wrapped", 2, "error: no such file x.png"),  # a DataLoader worker's traceback, unwrapped
    (False, "preempted", 3, "error: stopped; resume with ..."),
    (True, "preempted", 3, "error: stopped; resume with ..."),  # a stop signal stops the whole sweep
])
def test_a_trainer_error_ends_the_run_with_one_line(in_sweep: bool, error: str, code: int, line: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.cli import report_task_errors
    from trainer.errors import ConfigError, DataError, Preempted

    err = {"config": ConfigError("trainer.max_epochs must be >= 1\nmore"), "wrapped": DataError(WRAPPED),
           "preempted": Preempted("stopped; resume with ...")}[error]

    def task() -> float:
        raise err

    with pytest.raises(SystemExit) as exit_info:
        report_task_errors(task, in_sweep=in_sweep)
    assert (exit_info.value.code, capsys.readouterr().err) == (code, line + "\n")


def test_a_failed_sweep_job_is_recorded_and_the_sweep_carries_on(capsys: pytest.CaptureFixture[str]) -> None:
    from trainer.cli import report_task_errors
    from trainer.errors import DataError
    from trainer.hydra_callbacks import FailedJob

    def raises(err: Exception):
        def task() -> float:
            raise err
        return task

    assert report_task_errors(lambda: 0.5, in_sweep=True) == 0.5
    assert report_task_errors(raises(DataError(WRAPPED)), in_sweep=True) == FailedJob("no such file x.png")
    assert report_task_errors(raises(KeyError("lr")), in_sweep=True) == FailedJob("KeyError: 'lr'")
    assert capsys.readouterr().err == ""  # recorded in the job's log and job.json, not printed as the end
    with pytest.raises(KeyError):  # outside a sweep a bug reaches Hydra's report, with its traceback
        report_task_errors(raises(KeyError("lr")), in_sweep=False)


@pytest.mark.parametrize("in_sweep", [False, True])
def test_hydra_full_error_re_raises_from_the_task(in_sweep: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.cli import report_task_errors
    from trainer.errors import ConfigError

    def task() -> float:
        raise ConfigError("bad value")

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="bad value"):
        report_task_errors(task, in_sweep=in_sweep)


def test_thread_limits_do_not_carry_over_between_jobs_in_one_process() -> None:
    from omegaconf import OmegaConf

    from trainer.cli import limit_threads, torch_default_threads

    before = torch.get_num_threads()
    torch_default_threads.cache_clear()
    try:
        other = 1 if before > 1 else 2
        limit_threads(other, None)  # one job's trainer.num_threads
        assert torch.get_num_threads() == other
        limit_threads(None, None)  # the next job, without one: torch's own count again
        assert torch.get_num_threads() == before
        joblib = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": 2})
        limit_threads(None, joblib)
        assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // min(2, os.cpu_count() or 1))
    finally:
        torch.set_num_threads(before)
        torch_default_threads.cache_clear()


def test_the_readme_exit_code_table_names_every_cli_exit_code() -> None:
    """README's "Exit codes" table and trainer/errors.py agree: each constant's code is a row of the table."""
    import re

    from trainer import errors

    table = (REPO / "README.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(code): text for code, text in re.findall(r"^\| (\d+) \| (.+) \|$", table, flags=re.MULTILINE)}
    assert rows.keys() == {errors.EXIT_OK, errors.EXIT_COMPOSE_ERROR, errors.EXIT_USER_ERROR, errors.EXIT_PREEMPTED}
    assert "does not compose" in rows[errors.EXIT_COMPOSE_ERROR] and "sweep" in rows[errors.EXIT_SWEEP_JOB_FAILED]
    assert "bad value" in rows[errors.EXIT_USER_ERROR] and "SIGTERM" in rows[errors.EXIT_PREEMPTED]


PROBE = """
import atexit, gc, logging, os, sys, threading, time
from trainer import cli

class Teardown:
    def __del__(self):
        os.write(1, b"teardown\\n")  # sys.stdout may be gone by then

kept = Teardown()  # freed by the interpreter's teardown only
log = logging.getLogger("probe")
log.addHandler(logging.StreamHandler(sys.stdout))
atexit.register(lambda: print("exit function"))  # runs after console_main's own
gc.freeze = lambda: None  # a frozen object outlives the teardown, which Teardown shows
def body():
    print("output", end="")  # no newline: still in the buffer when main returns
    log.warning(" logged")
    if ENDING == "thread":
        threading.Thread(target=time.sleep, args=(0.3,)).start()
    if ENDING.startswith("exit"):
        sys.exit(int(ENDING[4:]) if ENDING[4:] else "a message")
cli.main = body
cli.console_main()
"""


@pytest.mark.parametrize(("ending", "status", "fast"), [("return", 0, True), ("exit3", 3, True),
                                                        ("exit", 1, False), ("thread", 0, False)])
def test_the_process_ends_without_the_interpreters_teardown_once_main_is_done(ending: str, status: int,
                                                                             fast: bool) -> None:
    """`python -m trainer` runs the exit functions, flushes what it printed and logged, and exits with main's
    status, without the teardown that frees every object one by one. A SystemExit with a message, or a thread
    still running, takes the interpreter's own exit."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", f"ENDING = {ending!r}\n" + PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == status, proc.stderr
    assert proc.stdout.startswith("output logged\nexit function\n")
    assert ("teardown" in proc.stdout) is not fast
    assert ("a message" in proc.stderr) is (ending == "exit")


def test_the_process_freezes_its_objects_before_the_interpreter_exits() -> None:
    """`python -m trainer` leaves its objects out of any garbage-collector pass at exit (an atexit hook that runs
    before the interpreter's own teardown, where a run takes it); the in-process `trainer.cli.main` of sweeps and
    tests does not."""
    import subprocess
    import sys

    # An atexit hook registered before the entrypoint runs after the entrypoint's own (last in, first out).
    probe = ("import atexit, gc, sys; atexit.register(lambda: print('frozen', gc.get_freeze_count()));"
             "sys.argv = ['trainer', '--help']; import trainer.__main__")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    frozen = int(proc.stdout.strip().splitlines()[-1].split()[1])
    assert frozen > 1000


def test_the_installed_command_is_the_same_entrypoint() -> None:
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["trainer"] == "trainer.cli:console_main"  # the installed command is the same process
