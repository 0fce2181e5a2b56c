"""Data-parallel training with torchrun on CPU (gloo): one run dir, ranks in step, the single-process curve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, read_csv, read_json, run_cli

TORCHRUN = Path(sys.executable).parent / "torchrun"
QUICK = ("trainer.max_epochs=1", "trainer.progress=none", "trainer.report=false")


def metrics(run_dir: Path) -> dict:
    """The last epoch's row of metrics.csv, as numbers."""
    return {k: float(v) for k, v in read_csv(run_dir / "metrics.csv")[-1].items() if v}


@pytest.mark.slow  # a 2-process torchrun job and a 1-process reference
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"PYTHONPATH": str(REPO)}
    ddp = subprocess.run([str(TORCHRUN), "--nproc_per_node=2", "-m", "trainer", *QUICK,
                          f"paths.output_root={tmp_path / 'outputs'}"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert list(work.iterdir()) == []  # no rank wrote into its working dir
    run_dirs = [p.parent for p in (tmp_path / "outputs").rglob(".hydra")]
    assert len(run_dirs) == 1  # one run dir: only rank 0 has a Hydra output dir
    run_dir = run_dirs[0]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    summary = read_json(run_dir / "summary.json")
    assert summary["world_size"] == 2 and summary["global_batch"] == 128
    assert summary["ranks_in_sync"] is True  # every rank ends with bitwise-identical weights

    single_dir = tmp_path / "single"
    single = run_cli(f"hydra.run.dir={single_dir}", "data.batch_size=128", *QUICK[:2])
    assert single.returncode == 0, single.stderr
    ddp_row, single_row = metrics(run_dir), metrics(single_dir)
    assert ddp_row["step"] == single_row["step"]  # same optimizer steps: same global batches
    # Same batches per step; only BatchNorm statistics (per rank) and dropout draws differ.
    assert ddp_row["train_loss"] == pytest.approx(single_row["train_loss"], rel=0.05)
    assert ddp_row["val_acc"] == pytest.approx(single_row["val_acc"], abs=0.06)


@pytest.mark.slow  # a 2-process torchrun job
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_the_torchrun_test_pass_scores_every_test_image_once_with_best_pt(tmp_path: Path) -> None:
    data = ("data=fake", "data.test_size=33", "logger=none")  # an odd count: the ranks' shards differ in size
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"PYTHONPATH": str(REPO)}
    run_dir = tmp_path / "ddp"
    ddp = subprocess.run([str(TORCHRUN), "--nproc_per_node=2", "-m", "trainer", *QUICK, *data,
                          f"hydra.run.dir={run_dir}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    summary = read_json(run_dir / "summary.json")
    assert summary["test_samples"] == 33 and summary["tested"].startswith("checkpoints/best.pt")
    scored = run_cli("mode=eval", f"ckpt={run_dir / 'checkpoints' / 'best.pt'}", *data,
                     f"hydra.run.dir={tmp_path / 'eval'}")
    assert scored.returncode == 0, scored.stderr
    assert read_json(tmp_path / "eval" / "eval.json")["test_acc"] == pytest.approx(summary["test_acc"])
