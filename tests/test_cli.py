"""End to end through `python -m trainer`, as a user runs it: files, metrics, resume, sweeps, errors."""

from __future__ import annotations

import csv
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


def test_only_composition_errors_before_the_task_are_shortened(capsys: pytest.CaptureFixture[str]) -> None:
    """A config that does not compose gets one line; a failure inside a run, or any other kind of error,
    keeps Hydra's report, which shows where it happened."""
    from hydra._internal import utils as hydra_utils
    from hydra.errors import ConfigCompositionException

    from trainer import cli

    def raises(err: Exception):
        def func() -> None:
            raise err
        return func

    hydra_report = hydra_utils.run_and_report
    cli._TASK_STARTED.append(True)  # left over from an earlier run in this process: cleared on entry
    outcomes = []
    with cli.one_line_composition_errors():
        for started, err in [(False, ConfigCompositionException("bad override\n    full_key: x")),
                             (False, RuntimeError("not a config problem")),
                             (True, ConfigCompositionException("raised inside a run"))]:
            if started:
                cli._TASK_STARTED.append(True)
            with pytest.raises(SystemExit) as exit_info:
                hydra_utils.run_and_report(raises(err))
            outcomes.append((exit_info.value.code, capsys.readouterr().err))
    cli._TASK_STARTED.clear()
    assert outcomes[0] == (1, "error: bad override\n")
    assert all(code == 1 and not err.startswith("error:") for code, err in outcomes[1:])  # Hydra's reports:
    assert "Traceback" in outcomes[1][1] and "not a config problem" in outcomes[1][1]  # the frames, or
    assert "raised inside a run" in outcomes[2][1] and "HYDRA_FULL_ERROR=1" in outcomes[2][1]  # its hint
    assert hydra_utils.run_and_report is hydra_report  # restored on exit


def test_the_readme_exit_code_table_names_every_cli_exit_code() -> None:
    """README's "Exit codes" table and trainer/errors.py agree: each constant's code is a row of the table."""
    import re

    from trainer import errors

    table = (REPO / "README.md").read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {int(code): text for code, text in re.findall(r"^\| (\d+) \| (.+) \|$", table, flags=re.MULTILINE)}
    assert rows.keys() == {errors.EXIT_OK, errors.EXIT_COMPOSE_ERROR, errors.EXIT_USER_ERROR, errors.EXIT_PREEMPTED}
    assert "does not compose" in rows[errors.EXIT_COMPOSE_ERROR] and "sweep" in rows[errors.EXIT_SWEEP_JOB_FAILED]
    assert "bad value" in rows[errors.EXIT_USER_ERROR] and "SIGTERM" in rows[errors.EXIT_PREEMPTED]
