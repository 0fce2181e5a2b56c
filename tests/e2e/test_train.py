"""Real training runs through `python -m trainer`, as a user runs them: the files a run leaves, its metrics and
TensorBoard scalars, eval from its checkpoint, resuming it; fast_dev_run, torch.compile and a per-batch schedule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import compose, onecycle, read_csv, read_json, run_cli, run_cli_in_process

SUMMARY_KEYS = {"best_val_acc", "final_val_acc", "epochs", "wall_s", "train_samples_per_s", "device", "params"}
FAST = ("trainer.progress=plain",)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """One real 2-epoch run on digits, shared by the tests that inspect what a run leaves."""
    run_dir = tmp_path_factory.mktemp("digits") / "run"
    result = run_cli(f"hydra.run.dir={run_dir}", "trainer.max_epochs=2", "logger.tensorboard.graph=true", *FAST,
                     report=True)
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
    rows = read_csv(digits_run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert summary["best_val_acc"] == max(float(r["val_acc"]) for r in rows)
    assert summary["final_val_acc"] == float(rows[-1]["val_acc"])
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])


def test_summary_says_where_the_time_went(digits_run: Path) -> None:
    summary = read_json(digits_run / "summary.json")
    phases = summary["phase_s"]
    assert set(phases) == {"setup", "train", "validate", "checkpoint", "test", "report", "other"}
    assert all(phases[name] > 0 for name in ("setup", "train", "validate", "checkpoint", "report"))
    assert sum(phases.values()) == pytest.approx(summary["wall_s"], abs=0.01)  # disjoint, and all of it
    assert summary["train_samples_per_s"] * phases["train"] >= 0.9 * 2 * 1437  # two epochs of training


def test_tensorboard_scalars_are_readable(digits_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(digits_run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "throughput"} <= tags
    val_acc = events.Scalars("val/acc")
    rows = read_csv(digits_run / "metrics.csv")
    assert [e.value for e in val_acc] == pytest.approx([float(r["val_acc"]) for r in rows], abs=1e-6)
    assert [e.step for e in val_acc] == [int(r["step"]) for r in rows]  # x: the global step at the epoch's end
    every = compose().trainer.log_every_n_steps  # step-level points: every trainer.log_every_n_steps steps
    assert [e.step for e in events.Scalars("train/loss_step")] == list(range(every, int(rows[-1]["step"]) + 1, every))
    assert events.Tags()["graph"]  # logger.tensorboard.graph=true


def test_checkpoints_load_weights_only_with_a_plain_config(digits_run: Path) -> None:
    ckpt = torch.load(digits_run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["config"]["model"]["num_classes"] == 10
    assert isinstance(ckpt["config"], dict) and isinstance(ckpt["config"]["model"], dict)
    assert ckpt["state"]["best_val_acc"] == read_json(digits_run / "summary.json")["best_val_acc"]


def test_eval_mode_reproduces_the_best_validation_accuracy(digits_run: Path, tmp_path: Path) -> None:
    result = run_cli_in_process("mode=eval", f"ckpt={digits_run / 'checkpoints' / 'best.pt'}",
                                f"hydra.run.dir={tmp_path / 'eval'}", *FAST)
    assert result.returncode == 0, result.stderr
    scores = read_json(tmp_path / "eval" / "eval.json")
    assert scores["val_acc"] == pytest.approx(read_json(digits_run / "summary.json")["best_val_acc"])


def test_resume_continues_at_the_next_epoch(digits_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(digits_run, run_dir)  # a finished 2-epoch run (cosine), continued to 3 epochs
    before = read_csv(run_dir / "metrics.csv")
    resumed = run_cli_in_process(f"hydra.run.dir={run_dir}", "trainer.max_epochs=3", "trainer.resume=auto",
                                 "trainer.extend_schedule=true", *FAST)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resumed from" in resumed.stdout
    rows = read_csv(run_dir / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert rows[:2] == before  # history carried over, not re-run
    summary = read_json(run_dir / "summary.json")
    assert summary["epochs"] == 3 and summary["resumed_from"].endswith("last.pt")
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["state"]["global_step"] == 3 * int(rows[0]["step"])
    assert max(s["step"] for s in ckpt["optimizer"]["state"].values()) == ckpt["state"]["global_step"]


def test_fast_dev_run_runs_one_batch_and_saves_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli_in_process(f"hydra.run.dir={run_dir}", "debug=fast_dev_run", "data=fake")
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


@pytest.mark.slow  # a run of its own; tests/unit/test_scheduler.py covers the length
def test_onecycle_length_follows_limit_train_batches_in_a_real_run(tmp_path: Path) -> None:
    """steps_per_epoch comes from the (limited) train loader: the lr logged after epoch 1 (3 batches) is the
    closed form at step 3 of 6."""
    run_dir = tmp_path / "run"
    result = run_cli(f"hydra.run.dir={run_dir}", "scheduler=onecycle", "trainer.max_epochs=2",
                     "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "logger=none",
                     "trainer.progress=plain", "trainer.save_checkpoints=false")
    assert result.returncode == 0, result.stderr
    rows = read_csv(run_dir / "metrics.csv")
    max_lr = compose().optim.lr
    assert float(rows[0]["lr"]) == pytest.approx(onecycle(3, 6, max_lr))


@pytest.mark.slow
def test_compile_with_inductor_trains_end_to_end(tmp_path) -> None:
    """torch.compile's default backend generates and builds C++ kernels: about a minute on 2 CPU cores."""
    result = run_cli(f"hydra.run.dir={tmp_path / 'run'}", "trainer.compile=true", "trainer.max_epochs=1",
                     "trainer.progress=none")
    assert result.returncode == 0, result.stderr
    assert read_json(tmp_path / "run" / "summary.json")["best_val_acc"] > 0.5
