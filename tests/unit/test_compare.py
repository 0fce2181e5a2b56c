"""`trainer.compare` in-process: a table of runs with the overrides that differ, and overlaid val-accuracy curves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import assert_real_png
from trainer.compare import differing_overrides, expand_run_dirs, main, read_overrides, run_labels


def fake_run(run_dir: Path, overrides: list[str], val_acc: list[float], wall_s: float) -> Path:
    """The files a finished run leaves that compare reads (as train.py and Hydra write them)."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    rows = ["epoch,step,lr,train_loss,train_acc,val_loss,val_acc"]
    rows += [f"{e},{10 * e},0.001,0.5,0.8,0.6,{acc}" for e, acc in enumerate(val_acc, start=1)]
    (run_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    summary = {"best_val_acc": max(val_acc), "test_acc": max(val_acc) - 0.0123, "final_val_acc": val_acc[-1],
               "epochs": len(val_acc),
               "wall_s": wall_s, "train_samples_per_s": 12345.6}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    return [fake_run(tmp_path / "run_sgd", ["optim=sgd", "trainer.max_epochs=3", "hydra.run.dir=a"],
                     [0.5, 0.7, 0.9], 3.2),
            fake_run(tmp_path / "run_adamw", ["optim=adamw", "trainer.max_epochs=3", "seed=1"],
                     [0.6, 0.8, 0.85], 4.1)]


def test_only_differing_overrides_are_columns(two_runs: list[Path]) -> None:
    overrides = [read_overrides(d) for d in two_runs]
    assert overrides[0] == {"optim": "sgd", "trainer.max_epochs": "3"}  # hydra.* are dropped
    assert differing_overrides(overrides) == ["optim", "seed"]


def test_compare_lists_both_runs_and_plots_their_curves(two_runs: list[Path], tmp_path: Path, capsys,
                                                        monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    out = tmp_path / "compare.png"
    assert main([*map(str, two_runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = {name: next(line for line in text.splitlines() if name in line) for name in ("run_sgd", "run_adamw")}
    assert "sgd" in lines["run_sgd"] and "0.9000" in lines["run_sgd"] and "3.2" in lines["run_sgd"]
    assert "0.8877" in lines["run_sgd"]  # the test accuracy beside the val one
    assert "adamw" in lines["run_adamw"] and "0.8500" in lines["run_adamw"] and "4.1" in lines["run_adamw"]
    assert "optim" in text and "seed" in text and "trainer.max_epochs" not in text
    assert_real_png(out)


def test_runs_are_labelled_by_the_overrides_that_differ(two_runs: list[Path]) -> None:
    assert run_labels(two_runs) == ["optim=sgd seed=-", "optim=adamw seed=1"]
    same = two_runs[:1] * 2  # nothing tells them apart: their dir names do
    assert run_labels(same) == ["run_sgd", "run_sgd"]


def test_a_glob_over_a_sweep_dir_compares_its_runs_and_skips_its_files(two_runs: list[Path], tmp_path: Path,
                                                                       capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    (tmp_path / "sweep_summary.csv").write_text("job,best_val_acc\n")
    assert expand_run_dirs([tmp_path]) == sorted(two_runs)  # the sweep dir stands for its runs
    assert expand_run_dirs([*two_runs, tmp_path / "sweep_summary.csv"]) == two_runs
    assert main([*map(str, two_runs), str(tmp_path / "sweep_summary.csv"), "--out", str(tmp_path / "c.png")]) == 0
    assert "optim=adamw seed=1" in capsys.readouterr().out
