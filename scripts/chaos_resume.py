#!/usr/bin/env python
"""Kill a short deterministic CPU run at random moments, resume it until it finishes, compare with a reference.

    .venv/bin/python scripts/chaos_resume.py --trials 20

Each trial starts `python -m trainer ... trainer.resume=auto` in its own run dir, sends SIGKILL (or, in
some trials, SIGTERM) after a random delay (mid-step, mid-validation, mid-checkpoint-write), and starts it
again until it exits 0. The final weights must be bitwise identical to an uninterrupted run's, metrics.csv
identical byte for byte, the same checkpoints kept, and the run stopped early alike. Prints `N/N identical`
when every trial matches.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainer.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_PREEMPTED

ROOT = Path(__file__).resolve().parent.parent
# Early stopping with a min_delta no epoch can beat ends the run after epoch 3 of 4: its count of epochs without
# improvement, like the top-2 checkpoints kept, must survive every kill.
JOB = ["trainer.deterministic=true", "trainer.max_epochs=4", "trainer.checkpoint_every_n_steps=4",
       "regularization.ema_decay=0.9", "model.dropout=0.1", "logger=none", "trainer.progress=none", "seed=7",
       "trainer.monitor=val/loss", "trainer.save_top_k=2", "trainer.early_stopping.patience=2",
       "trainer.early_stopping.min_delta=10"]


def start(run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same kernels on every attempt
    return subprocess.Popen([sys.executable, "-m", "trainer", *JOB, f"hydra.run.dir={run_dir}",
                             "trainer.resume=auto"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def run_to_end(run_dir: Path) -> float:
    began = time.perf_counter()
    proc = start(run_dir)
    _, err = proc.communicate()
    if proc.returncode != EXIT_OK:
        raise SystemExit(f"reference run failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
    return time.perf_counter() - began


def chaos(run_dir: Path, duration: float, rng: random.Random, max_attempts: int = 25,
          first: signal.Signals | None = None) -> tuple[int, list[str]]:
    """Kill and restart until the run completes; returns (attempts, signals sent).

    `first` fixes the first interruption's signal (SIGTERM: the graceful path; SIGKILL: a hard kill);
    later ones are SIGTERM 30% of the time, SIGKILL otherwise.
    """
    sent: list[str] = []
    for attempt in range(1, max_attempts + 1):
        proc = start(run_dir)
        fixed = first if attempt == 1 else None
        # Every trial is interrupted at least once; later attempts are interrupted half the time.
        if attempt == 1 or (attempt < max_attempts and rng.random() < 0.5):
            try:
                proc.wait(timeout=(0.6 if fixed == signal.SIGTERM else rng.uniform(0.25, 0.75)) * duration)
            except subprocess.TimeoutExpired:
                sig = fixed or (signal.SIGTERM if rng.random() < 0.3 else signal.SIGKILL)
                proc.send_signal(sig)
                sent.append(sig.name)
        _, err = proc.communicate()
        if proc.returncode == EXIT_OK:
            return attempt, sent
        if proc.returncode not in (EXIT_PREEMPTED, -signal.SIGKILL, -signal.SIGTERM, 128 + signal.SIGTERM):
            raise SystemExit(f"attempt {attempt} failed unexpectedly ({proc.returncode}): {err.strip()[-500:]}")
    raise SystemExit(f"{run_dir} did not finish in {max_attempts} attempts")


def same_result(reference: Path, candidate: Path) -> tuple[bool, str]:
    import torch

    ref = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
    got = torch.load(candidate / "checkpoints" / "last.pt", weights_only=True)
    differing = [k for k in ref["model"] if not torch.equal(ref["model"][k], got["model"][k])]
    differing += [f"ema.{k}" for k in ref["ema"] if not torch.equal(ref["ema"][k], got["ema"][k])]
    if differing:
        return False, f"weights differ: {differing[:3]}"
    if (reference / "metrics.csv").read_bytes() != (candidate / "metrics.csv").read_bytes():
        return False, "metrics.csv differs"
    kept = [sorted(p.name for p in (run / "checkpoints").glob("*.pt")) for run in (reference, candidate)]
    if kept[0] != kept[1]:
        return False, f"checkpoints differ: {kept[0]} vs {kept[1]}"
    if ref["state"]["stopped_early"] != got["state"]["stopped_early"]:
        return False, "early stopping differs"
    return True, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the run dirs")
    parser.add_argument("--first", choices=("SIGTERM", "SIGKILL"), default="SIGTERM",
                        help="the first trial's first interruption (default SIGTERM: the graceful path)")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        duration = run_to_end(workdir / "reference")
        identical = 0
        for trial in range(1, args.trials + 1):
            run_dir = workdir / f"trial-{trial}"
            attempts, sent = chaos(run_dir, duration, rng, first=signal.Signals[args.first] if trial == 1 else None)
            ok, why = same_result(workdir / "reference", run_dir)
            identical += ok
            print(f"trial {trial}: {attempts} attempt(s), signals {','.join(sent) or 'none'}: "
                  f"{'identical' if ok else 'DIFFERENT (' + why + ')'}", flush=True)
        print(f"{identical}/{args.trials} identical")
        return EXIT_OK if identical == args.trials else EXIT_CHECK_FAILED
    finally:
        if args.keep:
            print(f"run dirs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
