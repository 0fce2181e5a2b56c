"""trainer/run_dirs.py in-process: unique new dirs, the lock and its holder, refusals, and removing stub dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import run_dirs
from trainer.errors import EXIT_USER_ERROR, ConfigError, OutputError
from trainer.run_dirs import (
    LOCK_NAME,
    RunDirInUse,
    RunLock,
    claim,
    claim_new,
    holder,
    refuse_sweep_dir,
    refuse_to_overwrite,
    release_claims,
)


@pytest.fixture(autouse=True)
def no_claims_left():
    yield
    release_claims(failed=False)


def finished(run_dir: Path) -> Path:
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")
    (run_dir / "summary.json").write_text("{}")
    return run_dir


def test_new_dirs_never_collide(tmp_path: Path) -> None:
    base = tmp_path / "day" / "10-00-00"
    claimed = [claim_new(base)[0] for _ in range(3)]
    assert claimed == [base, tmp_path / "day" / "10-00-00-1", tmp_path / "day" / "10-00-00-2"]
    assert claim_new(base)[1] == [tmp_path / "day" / "10-00-00-3"]  # the parent existed: only the leaf is new


def test_a_locked_dir_names_its_holder_and_a_second_lock_is_refused(tmp_path: Path) -> None:
    assert holder(tmp_path) is None
    claim(tmp_path, fresh=False)
    assert f"pid {os.getpid()}" in holder(tmp_path)
    with pytest.raises(RunDirInUse, match=f"in use by another run \\(pid {os.getpid()} on .*, started 20"):
        RunLock(tmp_path / LOCK_NAME).acquire()  # another open file: flock refuses it as it would another process
    release_claims(failed=False)
    assert holder(tmp_path) is None  # released: the pid stays in the file, but nobody holds it


def test_the_lock_is_released_when_its_process_dies(tmp_path: Path) -> None:
    code = (f"from pathlib import Path; from trainer.run_dirs import claim; claim(Path({str(tmp_path)!r}), "
            "fresh=False); import os; os._exit(9)")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert (tmp_path / LOCK_NAME).is_file() and holder(tmp_path) is None
    claim(tmp_path, fresh=False)


def test_a_run_that_loses_the_lock_never_removes_the_winners_dir(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The loser of a race may be the one whose mkdir made the dir: its failed call must leave the dir alone."""
    run_dir = tmp_path / "race"
    run_dir.mkdir()
    winner = RunLock(run_dir / LOCK_NAME)
    winner.acquire()
    (run_dir / ".hydra").mkdir()
    monkeypatch.setattr(run_dirs, "claim_existing", lambda folder: [folder])  # as if this call's mkdir made it
    with pytest.raises(RunDirInUse):
        claim(run_dir, fresh=False)
    release_claims(failed=True)
    assert (run_dir / ".hydra").is_dir() and (run_dir / LOCK_NAME).is_file()
    winner.release()


def test_a_finished_run_is_refused_except_to_continue_it(tmp_path: Path) -> None:
    run_dir = finished(tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a run .*trainer.resume=auto") as err:
        refuse_to_overwrite(run_dir, "train", None)
    assert err.value.exit_code == EXIT_USER_ERROR
    refuse_to_overwrite(run_dir, "train", "auto")
    refuse_to_overwrite(run_dir, "train", str(run_dir / "checkpoints" / "last.pt"))
    with pytest.raises(ConfigError, match="already holds a run"):
        refuse_to_overwrite(run_dir, "train", str(tmp_path / "other.pt"))
    for mode in ("eval", "predict", "export", "summary"):  # the other modes never write into a run's dir
        with pytest.raises(ConfigError, match="already holds a run"):
            refuse_to_overwrite(run_dir, mode, "auto")
    (tmp_path / "evaluated").mkdir()
    (tmp_path / "evaluated" / "eval.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"\(eval.json\)"):
        refuse_to_overwrite(tmp_path / "evaluated", "eval", None)
    refuse_to_overwrite(tmp_path / "nowhere", "train", None)


def test_a_sweep_dir_that_holds_a_sweep_is_refused(tmp_path: Path) -> None:
    refuse_sweep_dir(tmp_path / "nowhere", None)
    finished(tmp_path / "sweep" / "0")
    with pytest.raises(ConfigError, match="already holds a sweep .*0/checkpoints/last.pt"):
        refuse_sweep_dir(tmp_path / "sweep", None)
    refuse_sweep_dir(tmp_path / "sweep", "auto")


def test_a_failed_call_removes_only_the_stub_dirs_it_created(tmp_path: Path) -> None:
    stub = claim(tmp_path / "out" / "day" / "10-00-00", fresh=True)
    (stub / ".hydra").mkdir()
    (stub / ".hydra" / "config.yaml").write_text("a: 1\n")
    (stub / "train.log").write_text("error: invalid config\n")
    kept = claim(tmp_path / "out" / "day" / "10-00-00", fresh=True)  # a second call's dir (here: the same process)
    (kept / "metrics.csv").write_text("epoch\n")
    existing = tmp_path / "existing"
    existing.mkdir()
    claim(existing, fresh=False)
    release_claims(failed=True)
    assert not stub.exists() and kept.is_dir() and existing.is_dir()
    assert (tmp_path / "out" / "day").is_dir()  # still holds the other run
    lone = claim(tmp_path / "lone" / "day" / "t", fresh=True)
    release_claims(failed=True)
    assert not lone.exists() and not (tmp_path / "lone").exists()  # the parents this call created go too
    done = claim(tmp_path / "ok", fresh=True)
    release_claims(failed=False)
    assert done.is_dir()  # a call that succeeded keeps its dir


def test_an_unwritable_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write the run dir"):
        claim(blocker / "run", fresh=False)
    assert run_dirs.CLAIMS == []


@pytest.mark.parametrize("value", ["outputs/run-1", "/tmp/a b/run", "sqlite:///outputs/optuna.db", "it's",
                                   "C:\\runs\\x", "ends\\", "quote\\'d", "a=b,c", "${oops}", "[1, 2]"])
def test_override_values_read_back_as_themselves(value: str) -> None:
    """The run-dir claim and the Optuna trial overrides write values (paths, storage URLs) that Hydra's own
    override parser must read back unchanged, whatever characters they hold."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from trainer.hydra_callbacks import override_value

    parsed = OverridesParser.create().parse_override(f"key={override_value(value)}")
    assert parsed.value() == value
