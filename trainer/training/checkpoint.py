"""Checkpoints: written atomically, loaded without ever running pickled code, and the `Checkpointer` hook that
saves a run's `TrainState` with everything that decides the rest of the run and restores it on resume."""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import OmegaConf

from trainer import __version__
from trainer.errors import CheckpointError, TrainerError, described
from trainer.reporting.run_files import atomic_link, atomic_write
from trainer.training.checkpoint_checks import (
    check_entries,
    load_model_weights,
    refuse_directory,
    refuse_non_checkpoint,
    unpickling_reason,
)
from trainer.training.hooks import EpochEvent, Hook, StepEvent
from trainer.training.kept_checkpoints import BEST, KeptCheckpoints
from trainer.training.loop import NonFiniteLoss
from trainer.training.optim import create_scheduler, load_optimizer_state
from trainer.training.resume_config import extends_schedule
from trainer.training.runtime import capture_rng_state, restore_rng_state
from trainer.training.selection import Monitor, resumed_best

if TYPE_CHECKING:
    from trainer.training.metrics import EpochStats, Predictions
    from trainer.training.setup import RunSetup
    from trainer.training.timing import PhaseTimes


def save_checkpoint(payload: dict, path: Path) -> None:
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load with `weights_only=True`; every way this can fail becomes a one-line CheckpointError.

    torch's warnings while loading (a pickle protocol it guesses, a TorchScript dispatch) are not the user's
    business and are silenced: the error line says what is wrong with the file.
    """
    path = Path(path)
    refuse_directory(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    refuse_non_checkpoint(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"refusing to load {path}: it needs arbitrary unpickling, which could run code "
                "(only weights-only checkpoints are accepted)") from None
        raise CheckpointError(f"checkpoint {path} is corrupt: {unpickling_reason(err)}") from None
    except Exception as err:  # torch reports a damaged file as almost any error (KeyError, IndexError, ...)
        reason = described(err).split(" (Could this error message be improved?")[0]  # torch's plea, not the cause
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {reason}") from None
    check_entries(payload, path)
    return payload


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict) -> None:
    """The gradient scaler's state, when both the checkpoint's and this run's scale (fp16): a resume may switch
    precision, and a scaler that starts afresh or is disabled has nothing to take over."""
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)


def finite_weights(model: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer is finite (one host read)."""
    checks = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


@dataclass
class TrainState:
    """Progress that a checkpoint carries forward."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    best_val_acc: float = -1.0  # the val accuracy of the weights best.pt holds (the EMA's, when they are selected)
    best_epoch: int = 0  # the epoch best.pt holds: the best trainer.monitor value so far
    history: list[dict] = field(default_factory=list)
    batch_in_epoch: int = 0  # > 0 in a mid-epoch checkpoint: batches of epoch `epoch + 1` already trained
    partial: dict | None = None  # that unfinished epoch's running sums (RunningStats.state_dict)
    skipped_batches: int = 0  # batches dropped for a non-finite loss (trainer.skip_nonfinite)
    best_score: float | None = None  # the trainer.monitor value of best_epoch
    top_k: list[dict] = field(default_factory=list)  # trainer.save_top_k's epochs, best first: epoch, score, file
    early_stopping_best: float | None = None  # trainer.early_stopping's best value so far
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    test: dict | None = None  # the test pass after the last epoch (not saved: it comes after the last checkpoint)
    # The report's predictions of the selected weights, when the pass that scored them collected them (the best
    # epoch's validation, or the test pass); never saved: a resumed run reports with a pass of its own.
    predictions: Predictions | None = None

    def saved(self) -> dict:
        """The fields a checkpoint stores: all but `predictions`."""
        return {k: v for k, v in asdict(replace(self, predictions=None)).items() if k != "predictions"}

    def remaining_epochs(self, max_epochs: int) -> Iterator[int]:
        """The epochs (from 0) still to run: up to max_epochs, unless early stopping has ended the run."""
        while self.epoch < max_epochs and not self.stopped_early:
            yield self.epoch

    def end_epoch(self, train: EpochStats, val: EpochStats, val_ema: EpochStats | None, lr: float,
                  monitor: Monitor) -> bool:
        """Count a trained and validated epoch and add its metrics row; returns whether its `monitor` value is
        the best so far (a non-finite val loss or accuracy never is)."""
        self.epoch += 1
        self.skipped_batches += train.skipped
        # Only values that a resumed run reproduces exactly; throughput goes to the loggers and the summary.
        row = {"epoch": self.epoch, "step": self.global_step, "lr": lr, "train_loss": train.loss,
               "train_acc": train.acc, "val_loss": val.loss, "val_acc": val.acc, "val_top5": val.top5}
        if val_ema is not None:
            row |= {"val_ema_loss": val_ema.loss, "val_ema_acc": val_ema.acc}
        self.history.append(row)
        value = monitor.value(row)
        is_best = math.isfinite(val.loss) and math.isfinite(val.acc) and monitor.improves(value, self.best_score)
        if is_best:
            self.best_score, self.best_epoch = value, self.epoch
            self.best_val_acc = row["val_ema_acc" if monitor.uses_ema else "val_acc"]
        return is_best


class Checkpointer(Hook):
    """`last.pt` after every epoch; `best.pt` beside it for a new best `trainer.monitor` value (holding the EMA
    weights as its model when the monitor scores them), the `save_top_k` best epochs as `epoch=E-<metric>=V.pt`
    and `epoch=E.pt` every `save_every_n_epochs`; mid-epoch every `checkpoint_every_n_steps` optimizer steps and
    on a stop signal. `restore` resumes from one. An epoch's selected files are one file written once, hard linked
    under each name, and last.pt too unless best.pt holds the EMA weights (where the file system has hard links).

    Every rank's RNG state and partial-epoch sums are gathered into the checkpoint, so that a resumed rank
    continues its own draws; rank 0 alone writes. The checkpoint holds everything that decides the rest of
    the run, and what inference needs without the training data (`DataModule.inference_info`).
    """

    def __init__(self, run: RunSetup, run_dir: Path, times: PhaseTimes) -> None:
        tcfg = run.cfg.trainer
        self.run, self.times, self.folder = run, times, run_dir / "checkpoints"
        self.last, self.best = self.folder / "last.pt", self.folder / BEST
        self.enabled, self.every_n_steps = bool(tcfg.save_checkpoints), tcfg.checkpoint_every_n_steps
        self.monitor = Monitor.from_config(tcfg)
        self.kept = KeptCheckpoints(self.folder, self.monitor, tcfg.save_top_k, tcfg.save_every_n_epochs)
        # Without a best.pt to write, the selected weights are kept in memory (on the CPU) for the test pass.
        self.best_in_memory = not (self.enabled and tcfg.save_top_k >= 1)
        self.best_weights: dict | None = None
        self.live_best_epoch: int | None = None  # best.pt's epoch while the run's weights still are its weights

    def before_epoch(self, state: TrainState) -> None:
        self.live_best_epoch = None  # training on changes them

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
        self.check_epoch(epoch)
        if epoch.is_best and self.best_in_memory:
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.selected_model().items()}
        selected, periodic, evicted = self.kept.plan(state, epoch.is_best)
        self.save(state, selected, periodic, evicted)
        # under torchrun each rank's BatchNorm statistics are its own, and best.pt holds rank 0's
        live = self.enabled and BEST in selected and not self.run.ctx.enabled
        self.live_best_epoch = state.epoch if live else None

    def check_epoch(self, epoch: EpochEvent) -> None:
        """Stop the run, before this epoch replaces any checkpoint, when it trained on nothing (every batch
        skipped for a non-finite loss) or left weights that are not finite or do not validate to a finite loss."""
        train, val = epoch.train, epoch.val
        if train.skipped and not train.samples:
            problem = (f"every batch of epoch {epoch.epoch} ({train.skipped}) had a non-finite loss and was skipped "
                       "(trainer.skip_nonfinite)")
        elif not (math.isfinite(val.loss) and math.isfinite(val.acc)):
            problem = f"the validation loss after epoch {epoch.epoch} is {val.loss}"
        elif self.run.ctx.any(not finite_weights(self.run.model), self.run.device):  # buffers differ by rank
            problem = f"the weights after epoch {epoch.epoch} are not finite"
        else:
            return
        raise TrainerError(f"{problem}; the run stops and its last good checkpoint is kept. Lower optim.lr or set "
                           "trainer.grad_clip_norm")

    def save(self, state: TrainState, selected: list[str] = (), periodic: list[str] = (),
             evicted: list[str] = ()) -> None:
        """Write the `selected` checkpoints (this epoch's monitored weights) as pending files, the `periodic`
        ones, then last.pt; then put the pending ones in place and delete the `evicted` top-k files (see
        kept_checkpoints.py). A collective call: every rank takes part, rank 0 writes."""
        with self.times.phase("checkpoint"):
            payload = self.payload(state)
            if payload is not None:
                pending = [self.kept.pending(name, state.epoch) for name in selected]
                chosen = self.selected_payload(payload, state) if selected else None
                for index, path in enumerate(pending):  # the same checkpoint: written once, linked
                    if index == 0 or not atomic_link(pending[0], path):
                        save_checkpoint(chosen, path)
                for name in periodic:
                    save_checkpoint(payload, self.folder / name)
                # last.pt is this epoch's selected checkpoint too, unless that holds the EMA weights as its model
                if not (pending and not self.monitor.uses_ema and atomic_link(pending[0], self.last)):
                    save_checkpoint(payload, self.last)
                self.kept.commit(pending, list(evicted))
            self.run.ctx.barrier()

    def selected_model(self) -> dict:
        """The state dict of the weights trainer.monitor scores: the EMA's for val_ema/*, else the model's."""
        return self.run.ema.module.state_dict() if self.monitor.uses_ema else self.run.model.state_dict()

    def selected_weights(self) -> tuple[dict, str] | None:
        """The run's selected weights for the test pass and what they are: best.pt's, or those kept in memory
        when no best.pt is written; None when neither exists (a resumed run that has not improved since).
        When the last epoch wrote best.pt, its weights are taken from the model (or the EMA) in memory, which are
        the very tensors the file holds, instead of reading them back."""
        if self.live_best_epoch is not None:
            kind = " (EMA weights)" if self.monitor.uses_ema else ""
            return self.selected_model(), f"checkpoints/best.pt, epoch {self.live_best_epoch}{kind}"
        if self.best.is_file():
            checkpoint = load_checkpoint(self.best, map_location=self.run.device)
            kind = " (EMA weights)" if checkpoint.get("weights") == "ema" else ""
            return checkpoint["model"], f"checkpoints/best.pt, epoch {checkpoint['epoch']}{kind}"
        if self.best_weights is not None:
            kind = "EMA weights" if self.monitor.uses_ema else "weights"
            return self.best_weights, f"the best epoch's {kind}, kept in memory (no best.pt saved)"
        return None

    def selected_payload(self, payload: dict, state: TrainState) -> dict:
        """This epoch's checkpoint as trainer.monitor selected it: with the EMA weights as its model when the
        monitor scores them (`weights: ema`; such a checkpoint is not resumed from), and what chose it."""
        monitor = self.monitor
        return {**payload, "model": self.selected_model(), "weights": monitor.weights,
                "selected": {"monitor": monitor.name, "mode": monitor.mode, "epoch": state.epoch,
                             "value": monitor.value(state.history[-1])}}

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
            "weights": "model", "state": state.saved(), "epoch": state.epoch, "rng": rng[0], "rank_rng": rng,
            "rank_partial": partials, "world_size": ctx.world_size,
            "ema": run.ema.state_dict() if run.ema is not None else None,
            "classes": list(run.datamodule.classes), "inference": run.datamodule.inference_info(),
        }

    def restore(self, checkpoint: dict, path: Path) -> TrainState:
        """Load a checkpoint into the run's objects (after `build_run`, whose scheduler resets the lr) and
        return its progress; this rank continues with its own RNG state and partial-epoch sums.

        Call `check_resume_config` first: it refuses what this would not restore faithfully. With
        `trainer.extend_schedule` and a raised max_epochs the scheduler is rebuilt instead of restored."""
        run, ctx = self.run, self.run.ctx
        load_model_weights(run.model, checkpoint["model"], path)
        if run.ema is not None:
            if checkpoint.get("ema") is None:
                raise CheckpointError(f"checkpoint {path} has no EMA weights to resume with ema_decay set")
            run.ema.load_state_dict(checkpoint["ema"])
        load_scaler_state(run.scaler, checkpoint["scaler"])
        load_optimizer_state(run.optimizer, checkpoint["optimizer"])
        state = TrainState(**checkpoint["state"])
        if state.best_score is None and state.best_epoch:  # saved before trainer.monitor existed
            state.best_score = resumed_best(state, self.monitor)
        if state.early_stopping_best is None:  # early stopping switched on at this resume
            state.early_stopping_best = state.best_score
        if ctx.is_main and self.enabled and path.parent.resolve() == self.folder.resolve():
            self.kept.reconcile(state)  # finish or drop what a kill left half done
        elif ctx.is_main and self.enabled:
            self.kept.adopt(path.parent, state)  # resumed into a new run dir: bring best.pt and the top k along
        if extends_schedule(checkpoint, OmegaConf.to_container(run.cfg, resolve=True)):
            tcfg = run.cfg.trainer  # a fresh schedule over the added epochs (trainer.extend_schedule)
            run.scheduler = create_scheduler(run.cfg.scheduler, run.optimizer, max_epochs=tcfg.max_epochs,
                                             steps_per_epoch=math.ceil(run.train_steps / tcfg.accumulate_grad_batches),
                                             start_epoch=state.epoch)
        else:
            run.scheduler.load_state_dict(checkpoint["scheduler"])
        rank_partial = checkpoint.get("rank_partial") or [state.partial]
        state.partial = rank_partial[ctx.rank] if ctx.rank < len(rank_partial) else None
        rank_rng = checkpoint.get("rank_rng") or [checkpoint["rng"]]
        restore_rng_state(rank_rng[ctx.rank] if ctx.rank < len(rank_rng) else checkpoint["rng"])
        return state
