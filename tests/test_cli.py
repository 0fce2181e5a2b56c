"""End to end through `python -m trainer`, as a user runs it: files, metrics, resume, sweeps, errors."""

from __future__ import annotations

import csv
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, read_json, run_cli

SUMMARY_KEYS = {"best_val_acc", "final_val_acc", "epochs", "wall_s", "train_samples_per_s", "device", "params"}
FAST = ("trainer.progress=plain",)


def csv_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """One real 2-epoch run on digits, shared by the tests that inspect what a run leaves."""
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    result = run_cli(f"hydra.run.dir={run_dir}", "trainer.max_epochs=2", "logger.graph=true", *FAST, report=True)
    assert result.returncode == 0, result.stderr
    return run_dir


def test_a_run_leaves_its_files(digits_run: Path) -> None:
    for name in (".hydra/config.yaml", "train.log", "checkpoints/last.pt", "checkpoints/best.pt",
                 "metrics.csv", "summary.json", "config_tree.txt", "curves.png", "confusion_matrix.png",
                 "per_class.csv"):
        assert (digits_run / name).is_file(), name
    assert any((digits_run / "tb").glob("events.out.tfevents*"))


def test_summary_and_metrics_agree_and_beat_chance(digits_run: Path) -> None:
    summary = read_json(digits_run / "summary.json")
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["epochs"] == 2 and summary["device"] == "cpu"
    assert summary["best_val_acc"] > 0.8  # chance is 0.1 on ten digits
    rows = csv_rows(digits_run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert summary["best_val_acc"] == max(float(r["val_acc"]) for r in rows)
    assert summary["final_val_acc"] == float(rows[-1]["val_acc"])
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])


def test_summary_says_where_the_time_went(digits_run: Path) -> None:
    summary = read_json(digits_run / "summary.json")
    phases = summary["phase_s"]
    assert set(phases) == {"setup", "train", "validate", "checkpoint", "report", "other"}
    assert all(phases[name] > 0 for name in ("setup", "train", "validate", "checkpoint", "report"))
    assert sum(phases.values()) == pytest.approx(summary["wall_s"], abs=0.01)  # disjoint, and all of it
    assert summary["train_samples_per_s"] * phases["train"] >= 0.9 * 2 * 1437  # two epochs of training


def test_tensorboard_scalars_are_readable(digits_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(digits_run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "throughput"} <= tags
    val_acc = [e.value for e in events.Scalars("val/acc")]
    rows = csv_rows(digits_run / "metrics.csv")
    assert val_acc == pytest.approx([float(r["val_acc"]) for r in rows], abs=1e-6)
    assert events.Tags()["graph"]  # logger.graph=true


def test_the_model_graph_is_off_by_default() -> None:
    from tests.conftest import compose

    assert compose().logger.graph is False


def test_checkpoints_load_weights_only_with_a_plain_config(digits_run: Path) -> None:
    ckpt = torch.load(digits_run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["config"]["model"]["num_classes"] == 10
    assert isinstance(ckpt["config"], dict) and isinstance(ckpt["config"]["model"], dict)
    assert ckpt["state"]["best_val_acc"] == read_json(digits_run / "summary.json")["best_val_acc"]


def test_eval_mode_reproduces_the_best_validation_accuracy(digits_run: Path, tmp_path: Path) -> None:
    result = run_cli("mode=eval", f"ckpt={digits_run / 'checkpoints' / 'best.pt'}",
                     f"hydra.run.dir={tmp_path / 'eval'}", *FAST)
    assert result.returncode == 0, result.stderr
    scores = read_json(tmp_path / "eval" / "eval.json")
    assert scores["val_acc"] == pytest.approx(read_json(digits_run / "summary.json")["best_val_acc"])


def test_resume_continues_at_the_next_epoch(digits_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(digits_run, run_dir)  # a finished 2-epoch run, continued to 3 epochs
    before = csv_rows(run_dir / "metrics.csv")
    resumed = run_cli(f"hydra.run.dir={run_dir}", "trainer.max_epochs=3", "trainer.resume=auto", *FAST)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from" in resumed.stdout
    rows = csv_rows(run_dir / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert rows[:2] == before  # history carried over, not re-run
    summary = read_json(run_dir / "summary.json")
    assert summary["epochs"] == 3 and summary["resumed_from"].endswith("last.pt")
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["state"]["global_step"] == 3 * int(rows[0]["step"])
    assert max(s["step"] for s in ckpt["optimizer"]["state"].values()) == ckpt["state"]["global_step"]


def test_fast_dev_run_runs_one_batch_and_saves_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli(f"hydra.run.dir={run_dir}", "debug=fast_dev_run", "model=resnet18", "data=fake")
    assert result.returncode == 0, result.stderr
    summary = read_json(run_dir / "summary.json")
    assert summary["global_step"] == 1
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "tb").exists()


@pytest.mark.slow
def test_resnet50_trains_on_fake_data(tmp_path: Path) -> None:
    result = run_cli(f"hydra.run.dir={tmp_path / 'run'}", "model=resnet50", "data=fake", "data.train_size=64",
                     "data.val_size=32", "trainer.max_epochs=1", *FAST)
    assert result.returncode == 0, result.stderr
    assert read_json(tmp_path / "run" / "summary.json")["params"] > 23_000_000


def test_help_and_cfg_do_not_import_torch() -> None:
    code = ("import sys, runpy\n"
            "for args in (['--help'], ['--cfg', 'job']):\n"
            "    sys.argv = ['trainer', *args]\n"
            "    try:\n"
            "        runpy.run_module('trainer', run_name='__main__')\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_NOT_LOADED')\n")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "model:" in out.stdout and "Configuration groups" in out.stdout
    assert out.stdout.strip().endswith("TORCH_NOT_LOADED")


def test_help_with_an_unknown_option_is_one_line() -> None:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "trainer", "--help", "model=nope"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("error: In 'train': Could not find 'model/nope' (options: ")
    assert len(out.stderr.strip().splitlines()) == 1 and "resnet18" in out.stderr


def test_only_composition_errors_before_the_task_are_shortened(capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A config that does not compose gets one line and exit code 1; a failure inside a run, or any other kind
    of error, is re-raised for Hydra's report (tests/test_hydra_compat.py checks that report around it)."""
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
    with pytest.raises(SystemExit) as exit_info:  # a sweep that ended without a best trial: one line, too
        call.composition_errors_in_one_line(raises(ValueError("No trials are completed yet.")))()
    assert exit_info.value.code == 1 and capsys.readouterr().err.startswith("error: every Optuna trial failed")
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


def test_no_thread_limit_leaves_torch_unimported() -> None:
    import subprocess

    code = "import sys\nfrom trainer.cli import limit_threads\nlimit_threads(None, None)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_the_readme_exit_code_table_names_every_cli_exit_code() -> None:
    """README's "Exit codes" table and trainer/errors.py agree: each constant's code is a row of the table."""
    import re

    from trainer import errors

    table = (REPO / "README.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(code): text for code, text in re.findall(r"^\| (\d+) \| (.+) \|$", table, flags=re.MULTILINE)}
    assert rows.keys() == {errors.EXIT_OK, errors.EXIT_COMPOSE_ERROR, errors.EXIT_USER_ERROR, errors.EXIT_PREEMPTED}
    assert "does not compose" in rows[errors.EXIT_COMPOSE_ERROR] and "sweep" in rows[errors.EXIT_SWEEP_JOB_FAILED]
    assert "bad value" in rows[errors.EXIT_USER_ERROR] and "SIGTERM" in rows[errors.EXIT_PREEMPTED]
