"""The train/validate loop: learning, precision modes, clipping and scheduler intervals, on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.loop import train_epoch, validate
from trainer.metrics import RunningStats, topk_correct
from trainer.optim import Scheduler
from trainer.runtime import Precision

CPU = torch.device("cpu")


def toy_batches(seed: int = 0, batches: int = 8, classes: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Linearly separable blobs: a working loop must fit them."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, 6, generator=gen) * 4
    out = []
    for _ in range(batches):
        y = torch.randint(0, classes, (16,), generator=gen)
        out.append((centers[y] + torch.randn(16, 6, generator=gen), y))
    return out


def setup(precision: str = "32", lr: float = 0.05, interval: str = "epoch"):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))
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
        stats = train_epoch(model, data, criterion, optimizer, scheduler, scaler, prec)
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
    train_epoch(model, toy_batches(batches=1), nn.CrossEntropyLoss(), optimizer, scheduler, scaler, prec,
                grad_clip_norm=0.01)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-3)


@pytest.mark.parametrize(("interval", "expected_lr"), [("step", 0.05 * 0.5**8), ("epoch", 0.05)])
def test_loop_steps_per_step_schedulers_after_every_batch(interval: str, expected_lr: float) -> None:
    model, optimizer, scheduler, scaler, prec = setup(interval=interval)
    train_epoch(model, toy_batches(batches=8), nn.CrossEntropyLoss(), optimizer, scheduler, scaler, prec)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr)


def test_progress_callback_gets_the_loss_only_at_log_intervals() -> None:
    model, optimizer, scheduler, scaler, prec = setup()
    calls: list[tuple[int, float | None]] = []
    train_epoch(model, toy_batches(batches=6), nn.CrossEntropyLoss(), optimizer, scheduler, scaler, prec,
                log_every=3, on_step=lambda done, loss: calls.append((done, loss)))
    assert [done for done, _ in calls] == [1, 2, 3, 4, 5, 6]
    assert [done for done, loss in calls if loss is not None] == [3, 6]


def test_topk_and_running_stats_count_hits() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0, 0, 0, 0], [0.8, 0.1, 0.05, 0, 0, 0]])
    target = torch.tensor([1, 2])
    assert topk_correct(logits, target, 1).item() == 1
    assert topk_correct(logits, target, 3).item() == 2
    stats = RunningStats(CPU)
    stats.update(torch.tensor(2.0), logits, target)
    snap = stats.snapshot(seconds=0.5)
    assert (snap.loss, snap.acc, snap.top5, snap.samples, snap.samples_per_s) == (2.0, 0.5, 1.0, 2, 4.0)
