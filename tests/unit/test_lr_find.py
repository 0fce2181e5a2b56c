"""mode=lr_find's parts in-process: the lr schedule, the smoothed curve and its early stop, the suggestion rule,
the printed command, and the config checks (tests/e2e/test_lr_find.py sweeps the default config)."""

from __future__ import annotations

import math
import shlex

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from tests.conftest import compose
from trainer.errors import ConfigError
from trainer.modes.lr_find import ExponentialSweep, SweepCurve, suggest_lr, training_command
from trainer.schema import validate
from trainer.training.optim import Scheduler


def test_each_group_is_scaled_by_the_same_factor_from_min_lr_to_max_lr() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.1)  # a group at optim.lr / 10
    sweep = ExponentialSweep(1e-6, 1.0, 7, reference=0.1)
    scheduler = Scheduler(LambdaLR(optimizer, sweep), "step")
    seen = []
    for _ in range(7):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step_batch()
    assert [lr for lr, _ in seen] == pytest.approx([1e-6 * 10 ** step for step in range(7)])
    assert all(low == pytest.approx(high / 10) for high, low in seen)  # the groups' ratio is kept


def test_the_curve_is_a_bias_corrected_average_that_stops_at_4x_its_best() -> None:
    curve = SweepCurve(smoothing=0.5, early_stop_threshold=4.0)
    curve.record(1e-3, 2.0)
    assert curve.smoothed == [2.0]  # bias correction: the first point is the first loss, not half of it
    curve.record(1e-2, 1.0)
    assert curve.smoothed[1] == pytest.approx((0.25 * 2.0 + 0.5 * 1.0) / 0.75) and not curve.diverged
    for loss in (1.0, 1.0, 10.0, 20.0):
        curve.record(1e-1, loss)
        if curve.diverged:
            break
    assert curve.diverged and curve.smoothed[-1] > 4 * min(curve.smoothed[:-1])
    assert all(value <= 4 * min(curve.smoothed[:i]) for i, value in enumerate(curve.smoothed[:-1]) if i)
    never = SweepCurve(smoothing=0.5, early_stop_threshold=None)
    for loss in (1.0, 100.0, 1e4):
        never.record(1.0, loss)
    assert not never.diverged
    never.record(1.0, math.nan)
    assert never.diverged  # a non-finite loss ends any sweep


def test_the_suggestion_is_the_steepest_descent_past_the_first_points() -> None:
    lrs = [10 ** (-6 + k / 4) for k in range(30)]
    # flat, a fall steepest at k = 18, then a rise; a steeper (noisy) drop inside the first 10 points is ignored
    losses = [2.0 - 1.5 / (1 + math.exp(-(k - 18))) + (0.5 if k == 2 else 0.0) + max(0, k - 26) for k in range(30)]
    assert suggest_lr(lrs, losses) == pytest.approx(lrs[18])
    assert suggest_lr(lrs[:2], losses[:2]) is None  # too short to judge
    assert suggest_lr(lrs[:5], [3.0, 2.0, 1.0, 0.9, math.nan]) == pytest.approx(lrs[1])  # short: fewer skipped


def test_the_training_command_leaves_out_what_made_it_an_lr_find_run() -> None:
    command = training_command(["mode=lr_find", "model=mlp", "lr_find.num_steps=50", "optim.lr=1", "hydra.run.dir=x",
                                "+lr_find.extra=1", "data.batch_size=32", "hydra/launcher=joblib"], 0.00316)
    assert command == "python -m trainer model=mlp data.batch_size=32 optim.lr=3.2e-03"
    assert shlex.split(training_command(["data.root=my data"], 0.1)) == ["python", "-m", "trainer",
                                                                          "data.root=my data", "optim.lr=1.0e-01"]


def test_the_sweep_settings_are_checked() -> None:
    cfg = compose("mode=lr_find")
    validate(cfg)
    for key, value, message in (("max_lr", 1e-8, "max_lr must be > lr_find.min_lr"),
                                ("min_lr", 0.0, "min_lr must be > 0"), ("num_steps", 1, "num_steps must be >= 2"),
                                ("smoothing", 0.0, "smoothing must be in"),
                                ("early_stop_threshold", 1.0, "early_stop_threshold must be > 1 or null")):
        bad = cfg.copy()
        bad.lr_find[key] = value
        with pytest.raises(ConfigError, match=f"lr_find.{message}"):
            validate(bad)
