"""The scoring passes: each epoch's validation, and after the last epoch the test pass, which scores the selected
weights (best.pt's) once on the test split.

Validation chooses the checkpoint; the test split, never seen by that choice, says how good it is. Data sets
without a test split (digits, fake, an imagefolder without data.test_dir) report their val scores only.

The pass that scores the selected weights also collects what the end-of-run report draws (`collected_split`),
so the report never reads the data again: the test pass, or without a test split the validation of the epoch
that became best. The report makes a pass of its own only where no such pass exists: a resumed run whose best
epoch came before the resume, and on data without a test split `eval.tta` (validation scores without it) or
torchrun (see `collected_split`). Under torchrun the test pass's shards are gathered into the whole split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from itertools import islice
from typing import TYPE_CHECKING

from torch import nn

from trainer.reporting.hooks import reports
from trainer.training.checkpoint_checks import load_model_weights
from trainer.training.loop import validate, validate_models
from trainer.training.metrics import REPORT_SAMPLES, PredictionCollector, Predictions, merge_shards
from trainer.training.selection import Monitor
from trainer.training.tta import with_tta

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

    from trainer.data.base import DataModule
    from trainer.reporting.console import RunConsole
    from trainer.training.checkpoint import Checkpointer
    from trainer.training.distributed import Distributed
    from trainer.training.metrics import EpochStats
    from trainer.training.setup import RunSetup


def validate_epoch(run: RunSetup, console: RunConsole,
                   collect: bool = False) -> tuple[EpochStats, EpochStats | None, Predictions | None]:
    """The model's (and the EMA weights') val metrics over every rank's shard, with a progress bar; with `collect`,
    also the report's predictions (on this rank's shard) of the weights trainer.monitor selects."""
    criterion, fmt = nn.CrossEntropyLoss(), run.settings.memory_format
    models = {"model": run.model} | ({"ema": run.ema.module} if run.ema is not None else {})
    selected = Monitor.from_config(run.cfg.trainer).weights if collect else None
    collector = PredictionCollector() if collect else None
    with console.progress("validate", run.val_steps) as update:  # one read of the split for both weights
        scores = validate_models(models, counted(islice(run.val_loader, run.val_steps), update), criterion,
                                 run.precision, fmt, {selected: collector} if collector else None)
    scores = {name: run.ctx.reduce_stats(stats, run.device) for name, stats in scores.items()}
    return scores["model"], scores.get("ema"), collector.result() if collector else None


def counted(batches: Iterable, update: Callable[[int, float | None], None], before: int = 0) -> Iterator:
    """`batches`, calling `update(batches done, None)` after each (a progress bar's count; no loss to show)."""
    for done, batch in enumerate(batches, start=before + 1):
        yield batch
        update(done, None)


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


def collected_split(run: RunSetup) -> str | None:
    """The split whose scoring pass collects the report's predictions: "test" (the test pass), "val" (every
    epoch's validation; the best epoch's are kept), or None: no report, or one that makes its own pass where
    validation does not score best.pt's weights exactly: with `eval.tta` (validation scores without it), and under
    torchrun (each rank's BatchNorm statistics follow its own batches; best.pt holds rank 0's)."""
    if not reports(run.cfg.trainer):
        return None
    if run.datamodule.test_set is not None:
        return "test"
    return "val" if run.cfg.eval.tta == "none" and not run.ctx.enabled else None


def score_test_split(run: RunSetup, tta: str, collect: bool = False) -> tuple[EpochStats | None, Predictions | None]:
    """`run.model` on the test split over every rank's shard, with test-time augmentation `tta`, and with
    `collect` the report's predictions of the whole split; (None, None) when the data set has no test split.
    trainer.limit_test_batches caps the batches."""
    data, ctx = run.datamodule, run.ctx
    if data.test_set is None:
        return None, None
    batches = split_batches(data, "test", run.cfg.trainer, run.device.type == "cuda", run.device, ctx.rank,
                            ctx.world_size)
    collector = PredictionCollector() if collect else None
    stats = validate(with_tta(run.model, tta), batches, nn.CrossEntropyLoss(), run.precision,
                     run.settings.memory_format, collect=collector)
    return ctx.reduce_stats(stats, run.device), whole_split(ctx, collector.result() if collector else None)


def report_predictions(run: RunSetup, kept: Predictions | None, tested: Predictions | None) -> Predictions | None:
    """The report's predictions of the selected weights: the test pass's, or without a test split the best
    epoch's validation's (`kept`, this rank's shard) over the whole split; None: the report makes its own pass."""
    return tested if run.datamodule.test_set is not None else whole_split(run.ctx, kept)


def whole_split(ctx: Distributed, predictions: Predictions | None) -> Predictions | None:
    """This rank's `predictions` of its shard gathered with every other rank's into the whole split's, in its
    order (a collective call under torchrun: every rank holds a shard's, or none does)."""
    if predictions is None or not ctx.enabled:
        return predictions
    shown = math.ceil(REPORT_SAMPLES / ctx.world_size)  # each rank's first samples, for the split's first 16
    return merge_shards(ctx.gather(replace(predictions, samples=predictions.samples[:shown])))


def test_pass_summary(stats: EpochStats | None, tested: str, tta: str) -> dict:
    """The test pass's entries in summary.json (scores None without a test split)."""
    return {"test_acc": stats.acc if stats else None, "test_loss": stats.loss if stats else None,
            "test_top5": stats.top5 if stats else None, "test_samples": stats.samples if stats else None,
            "tested": tested if stats else None, "tta": tta if stats else None}
