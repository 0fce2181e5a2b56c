"""The train/validate loop: learning, precision modes, clipping and scheduler intervals, on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import mlp, toy_batches
from trainer.training.ema import create_ema
from trainer.training.loop import LoopSettings, train_epoch, validate, validate_models
from trainer.training.metrics import RunningStats, topk_correct
from trainer.training.optim import Scheduler
from trainer.training.regularization import Regularization
from trainer.training.runtime import Precision

CPU = torch.device("cpu")


def setup(precision: str = "32", lr: float = 0.05, interval: str = "epoch"):
    """The toy MLP with SGD + momentum, a halving StepLR at `interval`, and `precision`'s scaler."""
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scheduler = Scheduler(torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5), interval)
    prec = Precision(precision, CPU)
    return model, optimizer, scheduler, prec.grad_scaler(), prec


@pytest.mark.parametrize("precision", ["32", "bf16", "16"])
def test_training_reduces_loss_in_every_precision(precision: str) -> None:
    model, optimizer, scheduler, scaler, prec = setup(precision)
    data = toy_batches()
    criterion = nn.CrossEntropyLoss()
    before = validate(model, data, criterion, prec)
    for _ in range(5):
        stats = train_epoch(model, data, Regularization(), optimizer, scheduler, scaler, LoopSettings(prec))
        assert torch.isfinite(torch.tensor(stats.loss))
    after = validate(model, data, criterion, prec)
    assert after.loss < before.loss * 0.5
    assert after.acc > 0.9
    assert after.samples == sum(len(y) for _, y in data)


def test_only_fp16_uses_a_gradient_scaler() -> None:
    assert Precision("16", CPU).grad_scaler().is_enabled()
    assert not Precision("bf16", CPU).grad_scaler().is_enabled()
    assert not Precision("32", CPU).grad_scaler().is_enabled()


def test_bf16_autocast_runs_matmuls_in_bf16_on_cpu() -> None:
    with Precision("bf16", CPU).autocast():
        out = nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16


def test_gradient_clipping_bounds_the_update() -> None:
    model, optimizer, scheduler, scaler, prec = setup(lr=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # plain SGD: update = -grad
    scheduler = Scheduler(torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0), "epoch")
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    train_epoch(model, toy_batches(batches=1), Regularization(), optimizer, scheduler, scaler,
                LoopSettings(prec, grad_clip_norm=0.01))
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-3)


@pytest.mark.parametrize(("interval", "expected_lr"), [("step", 0.05 * 0.5**8), ("epoch", 0.05)])
def test_loop_steps_per_step_schedulers_after_every_batch(interval: str, expected_lr: float) -> None:
    model, optimizer, scheduler, scaler, prec = setup(interval=interval)
    train_epoch(model, toy_batches(batches=8), Regularization(), optimizer, scheduler, scaler, LoopSettings(prec))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr)


def test_progress_callback_gets_the_loss_at_the_first_batch_and_at_log_intervals() -> None:
    model, optimizer, scheduler, scaler, prec = setup()
    calls: list[tuple[int, float | None]] = []
    train_epoch(model, toy_batches(batches=6), Regularization(), optimizer, scheduler, scaler,
                LoopSettings(prec, log_every=3), on_step=lambda done, loss: calls.append((done, loss)))
    assert [done for done, _ in calls] == [1, 2, 3, 4, 5, 6]
    assert [done for done, loss in calls if loss is not None] == [1, 3, 6]


def test_topk_and_running_stats_count_hits() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0, 0, 0, 0], [0.8, 0.1, 0.05, 0, 0, 0]])
    target = torch.tensor([1, 2])
    assert topk_correct(logits, target, 1).item() == 1
    assert topk_correct(logits, target, 3).item() == 2
    stats = RunningStats(CPU)
    stats.update(torch.tensor(2.0), logits, target)
    snap = stats.snapshot(seconds=0.5)
    assert (snap.loss, snap.acc, snap.top5, snap.samples, snap.samples_per_s) == (2.0, 0.5, 1.0, 2, 4.0)


def test_auxiliary_logits_add_weighted_losses() -> None:
    from trainer.training.loop import AUX_LOSS_WEIGHT, forward_with_aux

    class TwoHeads(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, 2 * x

    logits = torch.randn(4, 3)
    targets = torch.tensor([0, 1, 2, 0])
    criterion = nn.CrossEntropyLoss()
    out, loss = forward_with_aux(TwoHeads(), logits, targets, criterion)
    assert torch.equal(out, logits)
    expected = criterion(logits, targets) + AUX_LOSS_WEIGHT * criterion(2 * logits, targets)
    assert loss.item() == pytest.approx(expected.item())


def test_gradient_accumulation_equals_one_big_batch() -> None:
    (x1, y1), (x2, y2) = toy_batches(batches=2)
    results = []
    for batches, accumulate in (([(x1, y1), (x2, y2)], 2), ([(torch.cat([x1, x2]), torch.cat([y1, y2]))], 1)):
        model, optimizer, scheduler, scaler, prec = setup(interval="step")
        stats = train_epoch(model, batches, Regularization(), optimizer, scheduler, scaler,
                            LoopSettings(prec, accumulate=accumulate))
        assert stats.steps == 1
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)  # the scheduler stepped once
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1])


def test_a_partial_accumulation_at_the_end_of_an_epoch_still_steps() -> None:
    model, optimizer, scheduler, scaler, prec = setup()
    stats = train_epoch(model, toy_batches(batches=5), Regularization(), optimizer, scheduler, scaler,
                        LoopSettings(prec, accumulate=2))
    assert stats.steps == 3 and stats.samples == 5 * 16


def test_ema_follows_every_optimizer_step() -> None:
    model, optimizer, scheduler, scaler, prec = setup()
    ema = create_ema(model, decay=0.5)
    train_epoch(model, toy_batches(batches=4), Regularization(), optimizer, scheduler, scaler, LoopSettings(prec),
                ema=ema)
    assert int(ema.n_averaged) == 4
    assert not torch.equal(ema.module[0].weight, model[0].weight)


def test_ema_counts_optimizer_steps_not_batches_and_averages_every_n() -> None:
    model, optimizer, scheduler, scaler, prec = setup()
    ema = create_ema(model, decay=0.5, every_n_steps=2)
    train_epoch(model, toy_batches(batches=10), Regularization(), optimizer, scheduler, scaler,
                LoopSettings(prec, accumulate=2), ema=ema)
    assert (int(ema.n_steps), int(ema.n_averaged)) == (5, 2)


@pytest.mark.parametrize("regularization", [Regularization(mixup_alpha=0.4), Regularization(cutmix_alpha=1.0),
                                            Regularization(label_smoothing=0.1)])
def test_mixing_regularizers_still_learn(regularization: Regularization) -> None:
    model, optimizer, scheduler, scaler, prec = setup()
    data = [(x.reshape(16, 1, 2, 3), y) for x, y in toy_batches()]
    flat = nn.Sequential(nn.Flatten(), model)
    for _ in range(5):
        train_epoch(flat, data, regularization, optimizer, scheduler, scaler, LoopSettings(prec))
    assert validate(flat, data, nn.CrossEntropyLoss(), prec).acc > 0.8


def test_phase_times_nest_without_double_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from trainer.training import timing

    clock = [100.0]
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    times = timing.PhaseTimes()
    with times.phase("train"):
        clock[0] += 1.0
        with times.phase("checkpoint"):
            clock[0] += 5.0
        clock[0] += 2.0
    with times.phase("checkpoint"):
        clock[0] += 0.5
    assert times.seconds == {"train": 3.0, "checkpoint": 5.5}  # the nested checkpoint is not train time
    summary = times.summary(("setup", "train", "checkpoint"), wall_s=10.0)
    assert summary == {"setup": 0.0, "train": 3.0, "checkpoint": 5.5, "other": 1.5}


def test_the_weights_and_their_ema_are_scored_in_one_read_of_the_split() -> None:
    """Each val batch is read (loaded, decoded) once and scored by both models, with the scores each model's own
    pass gives."""
    batches, reads = toy_batches(), []

    def counted():
        for batch in batches:
            reads.append(1)
            yield batch

    model, other = mlp(), mlp(hidden=8)
    precision = Precision("32", torch.device("cpu"))
    both = validate_models({"model": model, "ema": other}, counted(), nn.CrossEntropyLoss(), precision)
    assert len(reads) == len(batches)
    for name, net in (("model", model), ("ema", other)):
        alone = validate(net, batches, nn.CrossEntropyLoss(), precision)
        assert (both[name].loss, both[name].acc, both[name].samples) == pytest.approx(
            (alone.loss, alone.acc, alone.samples))
    assert both["model"].loss != pytest.approx(both["ema"].loss)

