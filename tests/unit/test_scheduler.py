"""LR schedules: each option's learning rate, batch by batch over a short run, equals its closed form; so does each
behind a linear warm-up (scheduler.warmup_epochs / warmup_steps)."""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Callable

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from torch import nn

from tests.conftest import CONFIGS, compose, composed, cos_anneal, onecycle
from trainer.errors import CheckpointError, ConfigError
from trainer.schema import validate
from trainer.schema.scheduler import with_warmup_resolved
from trainer.training.optim import Scheduler, WarmupCosine, create_optimizer, create_scheduler
from trainer.training.resume_config import check_resume_config

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread is the fastest

SCHEDULERS = sorted(path.stem for path in (CONFIGS / "scheduler").glob("*.yaml"))
EPOCHS, STEPS = 6, 5  # a short run: 6 epochs of 5 batches
LR = 0.1


def build(scheduler: str, *overrides: str, epochs: int = EPOCHS, steps: int = STEPS, cli: tuple[str, ...] = ()):
    """`scheduler=SCHEDULER` with `overrides` (KEY=VALUE, valid ones: they are set on a config composed once per
    scheduler) over an SGD at LR: its config, optimizer and Scheduler for `epochs` x `steps` batches. `cli`:
    overrides composed and validated as the command line's are (a compose each)."""
    values = {key: yaml.safe_load(value) for key, value in (override.split("=", 1) for override in overrides)}
    cfg = composed(f"scheduler={scheduler}", "optim=sgd", *cli,
                   values={"optim.lr": LR, "trainer.max_epochs": epochs, **values})
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
    (["scheduler.warmup_epochs=2"], 2 * STEPS, 0.0),
    (["scheduler.warmup_steps=7", "scheduler.min_lr_ratio=0.1"], 7, 0.1),  # steps instead of the epoch
])
def test_warmup_cosine_ramps_then_anneals(overrides: list[str], warmup: int, floor: float) -> None:
    _, optimizer, schedule = build("warmup_cosine", *overrides)
    lrs = lr_curve(optimizer, schedule)
    assert lrs == pytest.approx([warmup_then_cosine(t, warmup, T, floor) for t in range(T)])
    assert lrs[0] == pytest.approx(LR / warmup)  # from ~0 ...
    assert lrs[warmup - 1] == pytest.approx(LR) == max(lrs)  # ... to optim.lr at the end of the warmup
    assert lrs[-1] == pytest.approx(LR * cos_anneal(1.0, floor, (T - 1 - warmup) / (T - warmup)))


def test_warmup_cosine_takes_a_warmup_in_steps_from_the_command_line() -> None:
    """`scheduler=warmup_cosine scheduler.warmup_steps=7`, validated: 7 steps replace the default epoch."""
    cfg, optimizer, schedule = build("warmup_cosine", cli=("scheduler.warmup_steps=7",))
    assert cfg.scheduler.warmup_epochs is None and schedule.warmup.steps == 7
    assert lr_curve(optimizer, schedule) == pytest.approx([warmup_then_cosine(t, 7, T) for t in range(T)])


@pytest.mark.parametrize(("epochs", "steps", "meant"), [(None, 0, 1), (None, 7, 0), (0, 0, 0), (2, 0, 2)])
def test_a_null_warmup_epochs_is_one_epoch_unless_counted_in_steps(epochs: int | None, steps: int,
                                                                  meant: int) -> None:
    resolved = with_warmup_resolved({"_target_": "x", "warmup_epochs": epochs, "warmup_steps": steps})
    assert resolved == {"_target_": "x", "warmup_epochs": meant, "warmup_steps": steps}
    assert with_warmup_resolved({"_target_": "x"}) == {"_target_": "x"}  # a config from before the warm-up keys


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
    (["scheduler=warmup_cosine", "scheduler.warmup_epochs=1", "scheduler.warmup_steps=100"],
     "scheduler.warmup_steps and warmup_epochs are both set (100 and 1): keep one, set the other to 0"),
    (["scheduler=cosine", "scheduler.warmup_steps=-1"], "scheduler.warmup_steps must be >= 0"),
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


# ---- a linear warm-up in front of any schedule

def ramp(t: int, steps: int, target: float = LR) -> float:
    return target * (t + 1) / steps


@pytest.mark.parametrize(("scheduler", "overrides", "expected"), [
    ("none", ["scheduler.interval=step", "scheduler.warmup_steps=4"], lambda t: ramp(t, 4) if t < 4 else LR),
    # per epoch, warmed up over 2 epochs: cosine over the 4 epochs left, from epoch 2
    ("cosine", ["scheduler.warmup_epochs=2"],
     lambda t: ramp(t, 2 * STEPS) if t < 2 * STEPS else cos_anneal(LR, 0.0, (t // STEPS - 2) / 4)),
    # 7 steps end mid-epoch 1: optim.lr until the cosine starts with epoch 2
    ("cosine", ["scheduler.warmup_steps=7"],
     lambda t: ramp(t, 7) if t < 7 else cos_anneal(LR, 0.0, max(0, t // STEPS - 2) / 4)),
    ("step", ["scheduler.warmup_epochs=1"],  # step_size 3 counts the epochs after the warm-up
     lambda t: ramp(t, STEPS) if t < STEPS else LR * 0.1 ** ((t // STEPS - 1) // 3)),
    ("onecycle", ["scheduler.warmup_steps=5"],  # up to onecycle's start, then its cycle over the 25 steps left
     lambda t: ramp(t, 5, LR / 25) if t < 5 else onecycle(t - 5, T - 5, LR)),
    ("warmup_cosine", ["scheduler.warmup_epochs=0", "scheduler.warmup_steps=3"],
     lambda t: warmup_then_cosine(t, warmup=3, total=T)),
])
def test_a_warmup_ramps_per_step_then_the_schedule_runs_the_rest(scheduler: str, overrides: list[str],
                                                                 expected: Callable[[int], float]) -> None:
    _, optimizer, schedule = build(scheduler, *overrides)
    assert lr_curve(optimizer, schedule) == pytest.approx([expected(t) for t in range(T)])


def test_plateau_judges_only_the_epochs_after_the_warmup() -> None:
    """The warm-up's epochs (a low loss here) are not the plateau's: it cuts only after 2 stalled epochs of its own."""
    _, optimizer, schedule = build("plateau", "scheduler.warmup_epochs=2", "scheduler.patience=1",
                                   "scheduler.factor=0.5")
    lrs = lr_curve(optimizer, schedule, val_losses=[0.5, 0.5, 1.0, 1.0, 1.0, 1.0])
    assert lrs[:2 * STEPS] == pytest.approx([ramp(t, 2 * STEPS) for t in range(2 * STEPS)])
    assert lrs[2 * STEPS::STEPS] == pytest.approx([LR, LR, LR, LR / 2])


@pytest.mark.parametrize("warmup", ["scheduler.warmup_steps=2", "scheduler.warmup_epochs=1"])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_schedule_trains_behind_a_warmup(scheduler: str, warmup: str) -> None:
    cfg, optimizer, schedule = build(scheduler, "scheduler.warmup_epochs=0", warmup, epochs=2, steps=3)
    model_weight = optimizer.param_groups[0]["params"][0]
    before = model_weight.detach().clone()
    model_weight.grad = torch.ones_like(model_weight)
    lrs = lr_curve(optimizer, schedule, epochs=2, steps=3)
    assert lrs[0] == pytest.approx(lrs[1] / 2) and 0 < lrs[0]  # the ramp's first two steps: 1/N, 2/N
    assert not torch.equal(before, model_weight) and all(lr > 0 for lr in lrs)


@pytest.mark.parametrize("warmup", [[], ["scheduler.warmup_epochs=0", "scheduler.warmup_steps=7"],
                                    ["scheduler.warmup_epochs=3"]])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_resumed_schedule_continues_where_it_stopped(scheduler: str, warmup: list[str]) -> None:
    """Stop after 2 epochs (within a 3-epoch warm-up, or past a 7-step one), restore as trainer.training.train does
    (create_scheduler, then the optimizer's and the scheduler's states, through a weights-only checkpoint), finish:
    the same lrs as an uninterrupted run."""
    _, optimizer, schedule = build(scheduler, *warmup)
    losses = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9]
    full = lr_curve(optimizer, schedule, val_losses=losses)

    _, optimizer, schedule = build(scheduler, *warmup)
    first = lr_curve(optimizer, schedule, epochs=2, val_losses=losses)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    _, optimizer, schedule = build(scheduler, *warmup)
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedule.load_state_dict(checkpoint["scheduler"])
    rest = lr_curve(optimizer, schedule, val_losses=losses, start_epoch=2)
    assert first + rest == pytest.approx(full)


def test_a_warmup_cosine_checkpoint_from_before_the_warmup_keys_resumes_its_course() -> None:
    """Such a checkpoint holds one LambdaLR whose factor ramps itself (then `warmup: 1, warmup_unit: epochs`):
    restored into today's warmup_cosine (warmup_epochs 1), the run goes on as it would have."""
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=LR)
    old = Scheduler(torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(STEPS, T)), "step")
    for _ in range(3):  # stopped within the warm-up
        optimizer.step()
        old.step_batch()
    saved = {"optimizer": optimizer.state_dict(), "scheduler": old.scheduler.state_dict()}

    _, optimizer, schedule = build("warmup_cosine")
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["scheduler"])
    rest = lr_curve(optimizer, schedule, epochs=1, steps=T - 3)
    assert rest == pytest.approx([warmup_then_cosine(t, warmup=STEPS, total=T) for t in range(3, T)])


@pytest.mark.parametrize(("warmup", "refused"), [(1, False), (2, True)])
def test_a_config_from_before_the_warmup_keys_resumes_as_what_it_meant(warmup: int, refused: bool) -> None:
    """A checkpoint's config without the warm-up and per-group lr keys, its warmup_cosine warm-up in `warmup` +
    `warmup_unit`: the same run as today's warmup_cosine (warmup_epochs 1) resumes; another warm-up is refused."""
    wanted = OmegaConf.to_container(composed("scheduler=warmup_cosine"), resolve=True)
    saved = copy.deepcopy(wanted)
    for key in ("layer_decay", "head_lr_mult", "scale_lr_with_batch", "base_batch_size"):
        del saved["optim"][key]
    for key in ("warmup_epochs", "warmup_steps"):
        del saved["scheduler"][key]
    saved["scheduler"] |= {"warmup": warmup, "warmup_unit": "epochs", "steps_per_epoch": None}
    checkpoint = {"config": saved, "epoch": 1, "world_size": 1, "state": {"epoch": 1, "batch_in_epoch": 0}}
    if not refused:
        check_resume_config(checkpoint, wanted, "last.pt", world_size=1)
        return
    with pytest.raises(CheckpointError, match=r"\(scheduler\.warmup_epochs: checkpoint 2 vs requested 1\)"):
        check_resume_config(checkpoint, wanted, "last.pt", world_size=1)


@pytest.mark.parametrize(("warmup", "refused"), [({"warmup_epochs": 1}, False),
                                               ({"warmup_epochs": None, "warmup_steps": 100}, True)])
def test_a_warmup_cosine_checkpoint_resumes_when_its_warmup_is_the_default_epoch(warmup: dict, refused: bool) -> None:
    """warmup_cosine's warmup_epochs is null (1 epoch unless warmup_steps is set): a checkpoint that spells the
    epoch out (made when it was 1) resumes under it; one that warmed up over 100 steps does not."""
    wanted = OmegaConf.to_container(composed("scheduler=warmup_cosine"), resolve=True)
    saved = copy.deepcopy(wanted)
    saved["scheduler"] |= warmup
    checkpoint = {"config": saved, "epoch": 1, "world_size": 1, "state": {"epoch": 1, "batch_in_epoch": 0}}
    if not refused:
        check_resume_config(checkpoint, wanted, "last.pt", world_size=1)
        return
    with pytest.raises(CheckpointError, match=r"\(scheduler\.warmup_epochs: checkpoint 0 vs requested 1, "
                                              r"scheduler\.warmup_steps: checkpoint 100 vs requested 0\)"):
        check_resume_config(checkpoint, wanted, "last.pt", world_size=1)


def test_an_extended_schedule_has_no_warmup() -> None:
    """trainer.extend_schedule rebuilds the schedule over the added epochs from optim.lr: the weights are past a
    warm-up, so there is none (cosine: T_max 2 over epochs 5 and 6)."""
    cfg, optimizer, _ = build("cosine", "scheduler.warmup_epochs=2")
    schedule = create_scheduler(cfg.scheduler, optimizer, steps_per_epoch=STEPS, max_epochs=EPOCHS, start_epoch=4)
    lrs = lr_curve(optimizer, schedule, start_epoch=4)
    assert lrs[::STEPS] == pytest.approx([LR, cos_anneal(LR, 0.0, 1 / 2)]) and lrs[:STEPS] == [LR] * STEPS
