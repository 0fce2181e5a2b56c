"""The test pass: after the last epoch, the selected weights (best.pt's) are scored once on the test split.

Validation chooses the checkpoint; the test split, never seen by that choice, says how good it is. Data sets
without a test split (digits, fake, an imagefolder without data.test_dir) report their val scores only.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from trainer.training.checkpoint import load_checkpoint
from trainer.training.checkpoint_checks import load_model_weights
from trainer.training.loop import validate
from trainer.training.tta import with_tta

if TYPE_CHECKING:
    from trainer.training.metrics import EpochStats
    from trainer.training.selection import Monitor
    from trainer.training.setup import RunSetup


def load_selected(run: RunSetup, best: Path, monitor: Monitor) -> str:
    """Put the weights the run selected into `run.model` (best.pt's, or without one the final weights: the
    EMA's when the monitor scores them); returns what they are, for summary.json."""
    if best.is_file():
        checkpoint = load_checkpoint(best, map_location=run.device)
        load_model_weights(run.model, checkpoint["model"], best)
        kind = " (EMA weights)" if checkpoint.get("weights") == "ema" else ""
        return f"checkpoints/best.pt, epoch {checkpoint['epoch']}{kind}"
    if monitor.uses_ema and run.ema is not None:
        run.model.load_state_dict(run.ema.module.state_dict())
        return "final EMA weights (no best.pt saved)"
    return "final weights (no best.pt saved)"


def score_test_split(run: RunSetup, tta: str) -> EpochStats | None:
    """`run.model` on the test split over every rank's shard, with test-time augmentation `tta`; None when the
    data set has no test split. trainer.limit_test_batches caps the batches."""
    data, ctx = run.datamodule, run.ctx
    if data.test_set is None:
        return None
    loader = data.test_loader(run.device.type == "cuda", device=run.device, rank=ctx.rank, world_size=ctx.world_size)
    steps = min(len(loader), run.cfg.trainer.limit_test_batches or len(loader))
    stats = validate(with_tta(run.model, tta), islice(loader, steps), nn.CrossEntropyLoss(), run.precision,
                     run.settings.memory_format)
    return ctx.reduce_stats(stats, run.device)


def test_pass_summary(stats: EpochStats | None, tested: str, tta: str) -> dict:
    """The test pass's entries in summary.json (scores None without a test split)."""
    return {"test_acc": stats.acc if stats else None, "test_loss": stats.loss if stats else None,
            "test_top5": stats.top5 if stats else None, "test_samples": stats.samples if stats else None,
            "tested": tested, "tta": tta}
