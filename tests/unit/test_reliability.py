"""Stop signals and non-finite losses in-process (tests/e2e/test_resume.py stops and resumes real runs)."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from torch import nn

from tests.conftest import NaNAfter, mlp, toy_batches
from trainer.training.loop import LoopSettings, NonFiniteLoss, train_epoch
from trainer.training.optim import Scheduler
from trainer.training.preemption import StopSignals
from trainer.training.regularization import Regularization
from trainer.training.runtime import Precision


def test_a_stop_signal_sets_a_flag_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def _epoch(model: nn.Module, skip: bool):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = Scheduler(torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0), "epoch")
    prec = Precision("32", torch.device("cpu"))
    batches = toy_batches(batches=5, features=4, batch_size=8)
    return train_epoch(model, batches, Regularization(), optimizer, scheduler, prec.grad_scaler(),
                       LoopSettings(prec, skip_nonfinite=skip))


def test_a_non_finite_loss_stops_at_its_batch() -> None:
    with pytest.raises(NonFiniteLoss) as err:
        _epoch(NaNAfter(mlp(in_features=4), good=2), skip=False)
    assert err.value.batch == 3


def test_skip_nonfinite_drops_and_counts_the_bad_batches() -> None:
    model = NaNAfter(mlp(in_features=4), good=2)
    stats = _epoch(model, skip=True)
    assert stats.skipped == 3 and stats.samples == 16
    assert all(torch.isfinite(p).all() for p in model.parameters())
