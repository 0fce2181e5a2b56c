"""LR schedules: each option's learning rate, batch by batch over a short run, equals its closed form."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import pytest
import torch
from torch import nn

from tests.conftest import CONFIGS, compose, cos_anneal, onecycle
from trainer.errors import ConfigError
from trainer.schema import validate
from trainer.training.optim import Scheduler, WarmupCosine, create_optimizer, create_scheduler

SCHEDULERS = sorted(path.stem for path in (CONFIGS / "scheduler").glob("*.yaml"))
EPOCHS, STEPS = 6, 5  # a short run: 6 epochs of 5 batches
LR = 0.1


def build(scheduler: str, *overrides: str, epochs: int = EPOCHS, steps: int = STEPS):
    cfg = compose(f"scheduler={scheduler}", "optim=sgd", f"optim.lr={LR}", f"trainer.max_epochs={epochs}",
                  *overrides)
    validate(cfg)
    model = nn.Linear(2, 1)
    optimizer = create_optimizer(cfg.optim, model)
    return cfg, optimizer, create_scheduler(cfg.scheduler, optimizer, steps_per_epoch=steps, max_epochs=epochs)


def lr_curve(optimizer: torch.optim.Optimizer, schedule: Scheduler, epochs: int = EPOCHS, steps: int = STEPS,
             val_losses: list[float] | None = None, start_epoch: int = 0) -> list[float]:
    """The lr of every batch, calling the scheduler exactly as trainer.training.loop / trainer.training.train do."""
    lrs = []
    for epoch in range(start_epoch, epochs):
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step_batch()
        schedule.step_epoch(val_losses[epoch] if val_losses else 1.0)
    return lrs


def warmup_then_cosine(t: int, warmup: int, total: int, floor: float = 0.0) -> float:
    if t < warmup:
        return LR * (t + 1) / warmup
    return LR * cos_anneal(1.0, floor, (t - warmup) / (total - warmup))


# Closed forms of the configs' defaults over EPOCHS x STEPS batches: lr at global batch t, epoch t // STEPS.
T = EPOCHS * STEPS
CLOSED_FORMS: dict[str, Callable[[int], float]] = {
    "none": lambda t: LR,
    "step": lambda t: LR * 0.1 ** ((t // STEPS) // 3),
    "multistep": lambda t: LR * 0.1 ** sum(t // STEPS >= m for m in (3, 5)),
    "cosine": lambda t: cos_anneal(LR, 0.0, (t // STEPS) / EPOCHS),
    "onecycle": lambda t: onecycle(t, T, LR),
    "warmup_cosine": lambda t: warmup_then_cosine(t, warmup=STEPS, total=T),  # 1 epoch of warmup
    "plateau": lambda t: LR,  # with an improving val loss: never cut (a stalling one: below)
}


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_default_lr_curve_equals_the_closed_form(scheduler: str) -> None:
    """Every option has a closed form (a new one without: a KeyError here). The curve is read batch by batch while
    both step_batch() and step_epoch() are called, so it also shows that each steps at its own interval."""
    _, optimizer, schedule = build(scheduler)
    losses = [1.0 - 0.1 * e for e in range(EPOCHS)]  # improving: plateau never cuts
    assert lr_curve(optimizer, schedule, val_losses=losses) == pytest.approx([CLOSED_FORMS[scheduler](t)
                                                                              for t in range(T)])


def test_step_decay() -> None:
    _, optimizer, schedule = build("step", "scheduler.step_size=2", "scheduler.gamma=0.5")
    per_epoch = lr_curve(optimizer, schedule)[::STEPS]
    assert per_epoch == pytest.approx([LR, LR, LR / 2, LR / 2, LR / 4, LR / 4])


def test_multistep_decay() -> None:
    _, optimizer, schedule = build("multistep", "scheduler.milestones=[1,4]", "scheduler.gamma=0.5")
    assert lr_curve(optimizer, schedule)[::STEPS] == pytest.approx([LR, LR / 2, LR / 2, LR / 2, LR / 4, LR / 4])


def test_cosine_spans_the_run_with_a_floor() -> None:
    _, optimizer, schedule = build("cosine", "scheduler.eta_min=0.01", epochs=4)
    assert lr_curve(optimizer, schedule, epochs=4)[::STEPS] == pytest.approx(
        [cos_anneal(LR, 0.01, e / 4) for e in range(4)])


def test_onecycle_peaks_at_max_lr_and_spans_the_run() -> None:
    _, optimizer, schedule = build("onecycle", "scheduler.max_lr=0.5", "scheduler.pct_start=0.2")
    lrs = lr_curve(optimizer, schedule)
    assert lrs == pytest.approx([onecycle(t, T, 0.5, pct_start=0.2) for t in range(T)])
    peak = max(range(T), key=lrs.__getitem__)
    assert lrs[peak] == pytest.approx(0.5) and peak == round(0.2 * T) - 1
    assert lrs[0] == pytest.approx(0.5 / 25)
    assert lrs[-1] < 0.5 / 25 / 100  # annealed far below the start by the last batch


def test_onecycle_total_steps_can_be_fixed() -> None:
    _, optimizer, schedule = build("onecycle", "scheduler.total_steps=60")
    assert schedule.scheduler.total_steps == 60
    assert lr_curve(optimizer, schedule) == pytest.approx([onecycle(t, 60, LR) for t in range(T)])


@pytest.mark.parametrize(("overrides", "warmup", "floor"), [
    ([], STEPS, 0.0),  # the default: 1 epoch
    (["scheduler.warmup=2", "scheduler.warmup_unit=epochs"], 2 * STEPS, 0.0),
    (["scheduler.warmup=7", "scheduler.warmup_unit=steps", "scheduler.min_lr_ratio=0.1"], 7, 0.1),
])
def test_warmup_cosine_ramps_then_anneals(overrides: list[str], warmup: int, floor: float) -> None:
    _, optimizer, schedule = build("warmup_cosine", *overrides)
    lrs = lr_curve(optimizer, schedule)
    assert lrs == pytest.approx([warmup_then_cosine(t, warmup, T, floor) for t in range(T)])
    assert lrs[0] == pytest.approx(LR / warmup)  # from ~0 ...
    assert lrs[warmup - 1] == pytest.approx(LR) == max(lrs)  # ... to optim.lr at the end of the warmup
    assert lrs[-1] == pytest.approx(LR * cos_anneal(1.0, floor, (T - 1 - warmup) / (T - warmup)))


def test_warmup_cosine_factor_reaches_the_floor_at_the_end() -> None:
    factor = WarmupCosine(warmup_steps=10, total_steps=100, min_lr_ratio=0.05)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0) and factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.05 + 0.95 * 0.5)
    assert factor(100) == pytest.approx(0.05) == factor(1000)


def test_plateau_cuts_the_lr_when_the_val_loss_stalls() -> None:
    _, optimizer, schedule = build("plateau", "scheduler.patience=1", "scheduler.factor=0.5")
    losses = [1.0, 0.8, 0.8, 0.8, 0.7, 0.7]  # 2 epochs without improvement after epoch 2 (> patience 1)
    per_epoch = lr_curve(optimizer, schedule, val_losses=losses)[::STEPS]
    assert per_epoch == pytest.approx([LR, LR, LR, LR, LR / 2, LR / 2])


def test_plateau_needs_the_val_loss() -> None:
    _, _, schedule = build("plateau")
    with pytest.raises(ValueError, match="validation loss"):
        schedule.step_epoch()


@pytest.mark.parametrize(("scheduler", "interval", "message"), [
    ("cosine", "step", "scheduler.interval must be epoch"),
    ("step", "step", "scheduler.interval must be epoch"),
    ("multistep", "step", "scheduler.interval must be epoch"),
    ("plateau", "step", "scheduler.interval must be epoch"),
    ("onecycle", "epoch", "scheduler.interval must be step"),
    ("warmup_cosine", "epoch", "scheduler.interval must be step"),
    ("none", "month", "scheduler.interval must be epoch or step"),
])
def test_an_interval_that_breaks_the_schedule_is_refused(scheduler: str, interval: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(f"scheduler={scheduler}", f"scheduler.interval={interval}"))


@pytest.mark.parametrize(("overrides", "message"), [
    (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size must be >= 1"),
    (["scheduler=multistep", "scheduler.milestones=[4,2]"], "scheduler.milestones must be increasing"),
    (["scheduler=onecycle", "scheduler.pct_start=1.0"], "scheduler.pct_start must be in (0, 1)"),
    (["scheduler=warmup_cosine", "scheduler.warmup_unit=days"], "scheduler.warmup_unit must be steps or epochs"),
    (["scheduler=warmup_cosine", "scheduler.min_lr_ratio=2"], "scheduler.min_lr_ratio must be in [0, 1]"),
    (["scheduler=plateau", "scheduler.factor=1.0"], "scheduler.factor must be in (0, 1)"),
])
def test_out_of_range_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(*overrides))


def test_the_loop_api_steps_only_at_the_interval() -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=1.0)
    per_epoch = Scheduler(torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5), "epoch")
    optimizer.step()
    per_epoch.step_batch()
    assert optimizer.param_groups[0]["lr"] == 1.0
    per_epoch.step_epoch(val_loss=0.3)
    assert optimizer.param_groups[0]["lr"] == 0.5
    per_step = Scheduler(per_epoch.scheduler, "step")
    per_step.step_epoch(val_loss=0.3)
    assert optimizer.param_groups[0]["lr"] == 0.5
    per_step.step_batch()
    assert optimizer.param_groups[0]["lr"] == 0.25


def test_onecycle_holds_its_last_lr_past_the_end() -> None:
    """A run resumed with more epochs than the cycle keeps the final lr instead of crashing."""
    _, optimizer, schedule = build("onecycle", epochs=1)
    lrs = lr_curve(optimizer, schedule, epochs=3)
    final = onecycle(STEPS - 1, STEPS, LR)
    assert final == pytest.approx(LR / 25 / 1e4)
    assert lrs[STEPS - 1:] == pytest.approx([final] * (2 * STEPS + 1))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(final)  # what the loop logs after the last batch


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_resumed_schedule_continues_where_it_stopped(scheduler: str) -> None:
    """Stop after 2 epochs, restore as trainer.training.train does (create_scheduler, then the optimizer's and the
    scheduler's states, through a weights-only checkpoint), finish: the same lrs as an uninterrupted run."""
    _, optimizer, schedule = build(scheduler)
    losses = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9]
    full = lr_curve(optimizer, schedule, val_losses=losses)

    _, optimizer, schedule = build(scheduler)
    first = lr_curve(optimizer, schedule, epochs=2, val_losses=losses)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    _, optimizer, schedule = build(scheduler)
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedule.load_state_dict(checkpoint["scheduler"])
    rest = lr_curve(optimizer, schedule, val_losses=losses, start_epoch=2)
    assert first + rest == pytest.approx(full)
