"""The test pass: after the last epoch, the selected weights (best.pt's) are scored once on the test split.

Validation chooses the checkpoint; the test split, never seen by that choice, says how good it is. Data sets
without a test split (digits, fake, an imagefolder without data.test_dir) report their val scores only.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import TYPE_CHECKING

from torch import nn

from trainer.training.checkpoint_checks import load_model_weights
from trainer.training.loop import validate
from trainer.training.tta import with_tta

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

    from trainer.data.base import DataModule
    from trainer.training.checkpoint import Checkpointer
    from trainer.training.metrics import EpochStats
    from trainer.training.setup import RunSetup


def load_selected(run: RunSetup, checkpointer: Checkpointer) -> str:
    """Put the weights the run selected into `run.model` (best.pt's, or those kept in memory without one; the
    final weights when there are neither); returns what they are, for summary.json."""
    selected = checkpointer.selected_weights()
    if selected is None:
        return "final weights (no better epoch since the resumed checkpoint, whose best.pt is not here)"
    weights, description = selected
    load_model_weights(run.model, weights, checkpointer.best)
    return description


def split_batches(data: DataModule, split: str, tcfg: DictConfig, pin_memory: bool, device: torch.device | None = None,
                  rank: int = 0, world_size: int = 1) -> Iterator:
    """The batches of `split` (test or val) for this rank, capped by trainer.limit_test_batches or
    trainer.limit_val_batches: what the test pass, the report and mode=eval score."""
    make = data.test_loader if split == "test" else data.val_loader
    loader = make(pin_memory, device=device, rank=rank, world_size=world_size)
    limit = tcfg.limit_test_batches if split == "test" else tcfg.limit_val_batches
    return islice(loader, min(len(loader), limit or len(loader)))


def score_test_split(run: RunSetup, tta: str) -> EpochStats | None:
    """`run.model` on the test split over every rank's shard, with test-time augmentation `tta`; None when the
    data set has no test split. trainer.limit_test_batches caps the batches."""
    data, ctx = run.datamodule, run.ctx
    if data.test_set is None:
        return None
    batches = split_batches(data, "test", run.cfg.trainer, run.device.type == "cuda", run.device, ctx.rank,
                            ctx.world_size)
    stats = validate(with_tta(run.model, tta), batches, nn.CrossEntropyLoss(), run.precision,
                     run.settings.memory_format)
    return ctx.reduce_stats(stats, run.device)


def test_pass_summary(stats: EpochStats | None, tested: str, tta: str) -> dict:
    """The test pass's entries in summary.json (scores None without a test split)."""
    return {"test_acc": stats.acc if stats else None, "test_loss": stats.loss if stats else None,
            "test_top5": stats.top5 if stats else None, "test_samples": stats.samples if stats else None,
            "tested": tested if stats else None, "tta": tta if stats else None}
