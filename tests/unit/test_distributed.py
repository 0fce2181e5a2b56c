"""The data-parallel context without a process group, and the weights digest that checks ranks stay in step
(tests/e2e/test_torchrun.py trains with torchrun on CPU)."""

from __future__ import annotations

import torch

from trainer.training.distributed import Distributed, weights_digest
from trainer.training.metrics import EpochStats


def test_one_process_needs_no_process_group() -> None:
    ctx = Distributed()
    stats = EpochStats(loss=0.5, acc=0.75, top5=None, samples=8, seconds=1.0)
    assert not ctx.enabled and ctx.is_main
    assert ctx.reduce_stats(stats, torch.device("cpu")) is stats
    assert ctx.gather("x") == ["x"] and ctx.broadcast(3) == 3 and ctx.any(True, torch.device("cpu"))
    assert not ctx.all_finite(torch.tensor(float("nan")))


def test_weights_digest_sees_one_changed_value() -> None:
    model = torch.nn.Linear(3, 2)
    before = weights_digest(model)
    assert weights_digest(model) == before
    with torch.no_grad():
        model.bias[0] += 1e-6
    assert weights_digest(model) != before
