"""`mode=lr_find` through the CLI on the default config (digits, the simple CNN, AdamW): the curve files, the printed
override, and a suggestion that lands near the lr a small grid of short trainings finds best.

One sweep (a module fixture, in-process) serves every test here.
"""

from __future__ import annotations

import math
import re
import shlex
from itertools import islice
from pathlib import Path

import pytest
from omegaconf import DictConfig
from torch import nn

from tests.conftest import assert_real_png, compose, read_json, run_cli_in_process
from trainer.schema import validate
from trainer.training.loop import validate as validate_model
from trainer.training.setup import build_run

GRID = (1e-4, 1e-3, 1e-2)  # a decade either side of AdamW's default 1e-3
GRID_STEPS = 16  # optimizer steps per grid point (an epoch of digits is 23)


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, str]:
    """The run dir and stdout of `python -m trainer mode=lr_find` with the default config."""
    run_dir = tmp_path_factory.mktemp("lr_find") / "run"
    result = run_cli_in_process("mode=lr_find", f"hydra.run.dir={run_dir}", "trainer.progress=plain")
    assert result.returncode == 0, result.stderr
    return run_dir, result.stdout


def val_accuracy_after_training(default: DictConfig, lr: float) -> float:
    """The `default` config trained for GRID_STEPS steps at `lr` (its cosine schedule steps only after an epoch),
    scored on its val split."""
    cfg = default.copy()
    cfg.optim.lr = lr
    validate(cfg)
    run = build_run(cfg)
    run.datamodule.set_train_epoch(0)
    run.train_epoch(islice(run.train_loader, GRID_STEPS))
    return validate_model(run.model, run.val_loader, nn.CrossEntropyLoss(), run.precision).acc


def test_the_suggestion_is_within_10x_of_the_best_lr_of_a_grid(swept) -> None:
    run_dir, _ = swept
    suggestion = read_json(run_dir / "lr_find.json")["suggestion"]
    default = compose("trainer.progress=none")
    scores = {lr: val_accuracy_after_training(default, lr) for lr in GRID}
    best = max(scores, key=scores.get)
    assert best / 10 <= suggestion <= best * 10, (suggestion, scores)


def test_the_curve_files_hold_the_sweep(swept) -> None:
    run_dir, _ = swept
    found = read_json(run_dir / "lr_find.json")
    lrs, losses, raw = found["lrs"], found["losses"], found["raw_losses"]
    assert len(lrs) == len(losses) == len(raw) == found["steps"] <= 100
    assert lrs[0] == pytest.approx(1e-7)
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert ratios == pytest.approx([(10 / 1e-7) ** (1 / 99)] * len(ratios))  # exponential, 1e-7 to 10 in 100
    average = 0.0
    for step, (loss, smoothed) in enumerate(zip(raw, losses, strict=True)):  # bias-corrected EMA of the raw loss
        average = 0.95 * average + 0.05 * loss
        assert smoothed == pytest.approx(average / (1 - 0.95 ** (step + 1)))
    over = [loss > 4 * min(losses[:step]) for step, loss in enumerate(losses) if step]  # 4x the best before
    assert not any(over[:-1]) and over[-1] == found["stopped_early"]  # it stops at the first such step
    assert found["suggestion"] in lrs[10:]
    assert_real_png(run_dir / "lr_find.png")
    assert not (run_dir / "checkpoints").exists() and not list(run_dir.rglob("*.pt"))


def test_the_suggestion_is_printed_as_the_override_to_train_with(swept) -> None:
    run_dir, stdout = swept
    suggestion = read_json(run_dir / "lr_find.json")["suggestion"]
    line = re.search(r"^suggested lr (\S+): (python -m trainer .*)$", stdout, re.MULTILINE)
    assert line is not None, stdout
    assert float(line[1]) == pytest.approx(suggestion, rel=0.05) and math.isfinite(float(line[1]))
    program, flag, module, *overrides = shlex.split(line[2])
    assert (program, flag, module) == ("python", "-m", "trainer")
    assert f"optim.lr={line[1]}" in overrides and not [o for o in overrides if o.startswith(("mode=", "hydra."))]
    cfg = compose(*overrides)  # what the printed command would run: a training run at the suggested lr
    validate(cfg)
    assert cfg.mode == "train" and cfg.optim.lr == float(line[1])
