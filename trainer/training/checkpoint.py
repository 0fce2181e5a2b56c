"""Checkpoints: written atomically, loaded without ever running pickled code, and the `Checkpointer` hook that
saves a run's `TrainState` with everything that decides the rest of the run and restores it on resume."""

from __future__ import annotations

import math
import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import OmegaConf

from trainer import __version__
from trainer.errors import CheckpointError
from trainer.reporting.run_files import atomic_write
from trainer.training.hooks import EpochEvent, Hook, StepEvent
from trainer.training.loop import NonFiniteLoss
from trainer.training.optim import load_optimizer_state
from trainer.training.runtime import capture_rng_state, restore_rng_state

if TYPE_CHECKING:
    from trainer.training.metrics import EpochStats
    from trainer.training.setup import RunSetup
    from trainer.training.timing import PhaseTimes

REQUIRED_KEYS = ("model", "config", "epoch")


def save_checkpoint(payload: dict, path: Path) -> None:
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load with `weights_only=True`; every way this can fail becomes a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "unsafe pickle"
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"refusing to load {path}: it needs arbitrary unpickling, which could run code "
                "(only weights-only checkpoints are accepted)") from None
        raise CheckpointError(f"checkpoint {path} is corrupt: {reason}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {reason}") from None
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a trainer checkpoint (expected keys {', '.join(REQUIRED_KEYS)})")
    return payload


def config_mismatch(saved: dict, wanted: dict) -> list[str]:
    """The keys whose values differ between two model configs, sorted."""
    return sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))


def check_model_config(saved: dict, wanted: dict, path: str | Path) -> None:
    differing = config_mismatch(saved, wanted)
    if differing:
        details = ", ".join(f"model.{k}: checkpoint {saved.get(k)!r} vs requested {wanted.get(k)!r}"
                            for k in differing)
        raise CheckpointError(f"checkpoint {path} was made for another model ({details})")


@dataclass
class TrainState:
    """Progress that a checkpoint carries forward."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_val_acc: float = -1.0
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    batch_in_epoch: int = 0  # > 0 in a mid-epoch checkpoint: batches of epoch `epoch + 1` already trained
    partial: dict | None = None  # that unfinished epoch's running sums (RunningStats.state_dict)
    skipped_batches: int = 0  # batches dropped for a non-finite loss (trainer.skip_nonfinite)

    def end_epoch(self, train: EpochStats, val: EpochStats, val_ema: EpochStats | None, lr: float) -> bool:
        """Count a trained and validated epoch and add its metrics row; returns whether it is the best so far."""
        self.epoch += 1
        self.skipped_batches += train.skipped
        is_best = val.acc > self.best_val_acc
        if is_best:
            self.best_val_acc, self.best_epoch = val.acc, self.epoch
        # Only values that a resumed run reproduces exactly; throughput goes to the loggers and the summary.
        row = {"epoch": self.epoch, "step": self.global_step, "lr": lr, "train_loss": train.loss,
               "train_acc": train.acc, "val_loss": val.loss, "val_acc": val.acc, "val_top5": val.top5}
        if val_ema is not None:
            row |= {"val_ema_loss": val_ema.loss, "val_ema_acc": val_ema.acc}
        self.history.append(row)
        return is_best


class Checkpointer(Hook):
    """`last.pt` after every epoch (and `best.pt` beside it for a new best), mid-epoch every
    `trainer.checkpoint_every_n_steps` optimizer steps and on a stop signal; `restore` resumes from one.

    Every rank's RNG state and partial-epoch sums are gathered into the checkpoint, so that a resumed rank
    continues its own draws; rank 0 alone writes. The checkpoint holds everything that decides the rest of
    the run, and what inference needs without the training data (`DataModule.inference_info`).
    """

    def __init__(self, run: RunSetup, run_dir: Path, times: PhaseTimes) -> None:
        self.run, self.times = run, times
        self.last, self.best = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
        self.enabled = bool(run.cfg.trainer.save_checkpoints)
        self.every_n_steps = run.cfg.trainer.checkpoint_every_n_steps

    def after_step(self, state: TrainState, step: StepEvent) -> None:
        every = self.every_n_steps
        due = every is not None and state.global_step % every == 0
        if not ((due or step.stopping) and step.mid_epoch):
            return
        ctx, device = self.run.ctx, self.run.device
        if self.run.settings.is_finite is None and ctx.any(not math.isfinite(step.stats.mean_loss()), device):
            raise NonFiniteLoss(step.batch)  # never replace the last good checkpoint with diverged weights
        state.batch_in_epoch, state.partial = step.batch, step.stats.state_dict()
        self.save(state)
        state.batch_in_epoch, state.partial = 0, None

    def after_validation(self, state: TrainState, epoch: EpochEvent) -> None:
        self.save(state, epoch.is_best)

    def save(self, state: TrainState, is_best: bool = False) -> None:
        """Write last.pt (and best.pt); a collective call: every rank takes part, rank 0 writes."""
        with self.times.phase("checkpoint"):
            payload = self.payload(state)
            if payload is not None:
                save_checkpoint(payload, self.last)
                if is_best:
                    save_checkpoint(payload, self.best)
            self.run.ctx.barrier()

    def payload(self, state: TrainState) -> dict | None:
        """The checkpoint's contents on rank 0 (None on the other ranks, or with save_checkpoints=false)."""
        run, ctx = self.run, self.run.ctx
        rng = ctx.gather(capture_rng_state())  # every rank's, so a resumed rank continues its own draws
        partials = ctx.gather(state.partial)  # and every rank's sums of an unfinished epoch
        if not self.enabled or not ctx.is_main:
            return None
        return {
            "version": __version__, "config": OmegaConf.to_container(run.cfg, resolve=True),
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
            "state": asdict(state), "epoch": state.epoch, "rng": rng[0], "rank_rng": rng,
            "rank_partial": partials, "world_size": ctx.world_size,
            "ema": run.ema.state_dict() if run.ema is not None else None,
            "classes": list(run.datamodule.classes), "inference": run.datamodule.inference_info(),
        }

    def restore(self, checkpoint: dict, path: Path) -> TrainState:
        """Load a checkpoint into the run's objects (after `build_run`, whose scheduler resets the lr) and
        return its progress; this rank continues with its own RNG state and partial-epoch sums."""
        run, ctx = self.run, self.run.ctx
        run.model.load_state_dict(checkpoint["model"])
        if run.ema is not None:
            if checkpoint.get("ema") is None:
                raise CheckpointError(f"checkpoint {path} has no EMA weights to resume with ema_decay set")
            run.ema.load_state_dict(checkpoint["ema"])
        run.scaler.load_state_dict(checkpoint["scaler"])
        load_optimizer_state(run.optimizer, checkpoint["optimizer"])
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        state = TrainState(**checkpoint["state"])
        saved_world = checkpoint.get("world_size", 1)
        if state.batch_in_epoch and saved_world != ctx.world_size:
            raise CheckpointError(f"checkpoint {path} stopped mid-epoch with {saved_world} process(es); "
                                  f"resume it with {saved_world}, not {ctx.world_size}")
        rank_partial = checkpoint.get("rank_partial") or [state.partial]
        state.partial = rank_partial[ctx.rank] if ctx.rank < len(rank_partial) else None
        rank_rng = checkpoint.get("rank_rng") or [checkpoint["rng"]]
        restore_rng_state(rank_rng[ctx.rank] if ctx.rank < len(rank_rng) else checkpoint["rng"])
        return state
