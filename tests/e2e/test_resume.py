"""Stopping and resuming a real run: SIGTERM mid-epoch then `trainer.resume=auto`, and random kills (the chaos
script) that must end bitwise identical to an uninterrupted run; the resumes that are refused (another batch size,
more epochs on a finished schedule) and a diverged run that must not end with a best checkpoint."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, cos_anneal, digest, read_csv, read_json, run_cli, run_cli_in_process, tree_digest


def run_chaos(trials: int, *options: str) -> str:
    result = subprocess.run([sys.executable, "scripts/chaos_resume.py", "--trials", str(trials), *options], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"{trials}/{trials} identical"
    return result.stdout


@pytest.mark.slow
def test_chaos_kills_of_every_kind_end_bitwise_identical() -> None:
    """A SIGKILL at a random moment, then a trial that starts with SIGTERM (about a minute; the suite's own
    resume tests are test_sigterm_saves_mid_epoch_and_resume_finishes and the atomic-write checks;
    scripts/chaos_resume.py --trials 20 runs by hand, see BENCHMARKS.md)."""
    assert "signals SIGKILL" in run_chaos(1, "--first", "SIGKILL")
    run_chaos(2)


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A run stopped by SIGTERM early in epoch 2 (it saved last.pt mid-epoch and exited with code 3).

    `scheduler=step`: a schedule whose shape does not depend on trainer.max_epochs, so that a resume may stop the
    run sooner. Tests copy the run dir before resuming it."""
    run_dir = tmp_path_factory.mktemp("stopped") / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    args = [sys.executable, "-m", "trainer", f"hydra.run.dir={run_dir}", "trainer.max_epochs=50", "scheduler=step",
            "trainer.checkpoint_every_n_steps=5", "trainer.progress=plain", "logger=none", "trainer.report=false"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # wait until epoch 1 is done,
        if line.startswith("epoch   1/"):
            break
    while not saved_mid_epoch_2(run_dir / "checkpoints" / "last.pt"):  # then for epoch 2's first mid-epoch save,
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # so that the stop lands mid-epoch, not at an epoch's end
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "resume with: python -m trainer" in err and "trainer.resume=auto" in err
    return run_dir


def saved_mid_epoch_2(last: Path) -> bool:
    """Whether `last` was saved in the middle of epoch 2 (checkpoints are replaced atomically: never half-read)."""
    try:
        state = torch.load(last, weights_only=True)["state"]
        return state["epoch"] == 1 and state["batch_in_epoch"] > 0
    except FileNotFoundError:
        return False


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    shutil.copytree(run_dir, tmp_path / "run")
    return tmp_path / "run"


def assert_one_error_line(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr, result.stderr


def test_sigterm_saves_mid_epoch_and_resume_finishes(stopped_run: Path, tmp_path: Path) -> None:
    """A stop signal during training writes last.pt with the batch position; the resumed run finishes."""
    run_dir = copy_of(stopped_run, tmp_path)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["state"]
    assert state["epoch"] >= 1 and state["batch_in_epoch"] > 0
    epochs = state["epoch"] + 1  # finish the interrupted epoch, then stop
    resumed = run_cli_in_process(f"hydra.run.dir={run_dir}", f"trainer.max_epochs={epochs}", "scheduler=step",
                                 "trainer.resume=auto", "logger=none")
    assert resumed.returncode == 0, resumed.stderr
    assert read_json(run_dir / "summary.json")["epochs"] == epochs


def test_a_mid_epoch_resume_with_another_batch_size_is_refused(stopped_run: Path, tmp_path: Path) -> None:
    """The saved batch index means nothing with another batch size: one error line, and the run dir is
    byte-identical afterwards (.hydra/, train.log and the lock included)."""
    run_dir = copy_of(stopped_run, tmp_path)
    last = run_dir / "checkpoints" / "last.pt"
    before, epochs = tree_digest(run_dir), torch.load(last, weights_only=True)["state"]["epoch"] + 1
    result = run_cli_in_process(f"hydra.run.dir={run_dir}", f"trainer.max_epochs={epochs}", "scheduler=step",
                                "data.batch_size=16", "trainer.resume=auto", "logger=none")
    assert_one_error_line(result, "(data.batch_size: checkpoint 64 vs requested 16)")
    assert tree_digest(run_dir) == before


FAST = ("trainer.limit_train_batches=4", "logger=none", "trainer.progress=none")


@pytest.mark.slow  # three training runs; tests/unit/test_checkpoint.py covers the refusal and the extended lr
def test_more_epochs_on_a_finished_cosine_schedule_need_extend_schedule(tmp_path: Path) -> None:
    """Refused with the lr it would train at; with trainer.extend_schedule=true, a fresh cosine from optim.lr over
    the added epochs (README, Reliability)."""
    run_dir = tmp_path / "run"
    assert run_cli(f"hydra.run.dir={run_dir}", "trainer.max_epochs=2", *FAST).returncode == 0
    last, before = run_dir / "checkpoints" / "last.pt", digest(run_dir / "checkpoints" / "last.pt")
    refused = run_cli(f"hydra.run.dir={run_dir}", "trainer.max_epochs=4", "trainer.resume=auto", *FAST)
    assert_one_error_line(refused, "finished its 2-epoch lr schedule, at lr 0: epochs 3..4 would start at lr 0")
    assert "trainer.extend_schedule=true" in refused.stderr and digest(last) == before
    extended = run_cli(f"hydra.run.dir={run_dir}", "trainer.max_epochs=4", "trainer.resume=auto",
                       "trainer.extend_schedule=true", *FAST)
    assert extended.returncode == 0, extended.stderr
    lrs = [float(row["lr"]) for row in read_csv(run_dir / "metrics.csv")]  # the lr each epoch trained at
    lr = 3e-3  # optim.lr (adamw's default)
    assert lrs == pytest.approx([lr, cos_anneal(lr, 0, 1 / 2)] * 2)


@pytest.mark.slow  # a real diverging run; tests/unit/test_checkpoint.py covers the epoch checks
def test_a_run_whose_weights_diverge_under_skip_nonfinite_fails_without_a_best_checkpoint(tmp_path: Path) -> None:
    """lr 1e30: the first step blows the weights up, every later batch is skipped and validation gives NaN."""
    result = run_cli(f"hydra.run.dir={tmp_path}", "trainer.skip_nonfinite=true", "optim.lr=1e30",
                     "trainer.max_epochs=2", *FAST)
    assert_one_error_line(result, "the validation loss after epoch 1 is nan")
    assert not (tmp_path / "checkpoints" / "best.pt").exists()
    assert not (tmp_path / "summary.json").exists()
