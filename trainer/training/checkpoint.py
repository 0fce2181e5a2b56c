"""Checkpoints: written atomically, loaded without ever running pickled code, and the `Checkpointer` hook that
saves a run's `TrainState` with everything that decides the rest of the run and restores it on resume."""

from __future__ import annotations

import math
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import OmegaConf

from trainer import __version__
from trainer.errors import CheckpointError, TrainerError, described
from trainer.reporting.run_files import atomic_write
from trainer.training.checkpoint_checks import (
    check_entries,
    load_model_weights,
    refuse_directory,
    refuse_non_checkpoint,
    unpickling_reason,
)
from trainer.training.hooks import EpochEvent, Hook, StepEvent
from trainer.training.loop import NonFiniteLoss
from trainer.training.optim import create_scheduler, load_optimizer_state
from trainer.training.runtime import capture_rng_state, restore_rng_state

if TYPE_CHECKING:
    from trainer.training.metrics import EpochStats
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


# Modules that have moved: a checkpoint made before names its `_target_`s by the old paths.
MOVED_MODULES = {"trainer.optim.": "trainer.training.optim.", "trainer.augment.": "trainer.data.augment.",
                 "trainer.regularization.": "trainer.training.regularization.",
                 "trainer.loggers.": "trainer.reporting.loggers."}


def current_target(target: object) -> object:
    """A `_target_` by its current module path (unchanged unless its module has moved)."""
    for old, new in MOVED_MODULES.items():
        if isinstance(target, str) and target.startswith(old):
            return new + target[len(old):]
    return target


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict) -> None:
    """The gradient scaler's state, when both the checkpoint's and this run's scale (fp16): a resume may switch
    precision, and a scaler that starts afresh or is disabled has nothing to take over."""
    if state and scaler.is_enabled():
        scaler.load_state_dict(state)


def config_mismatch(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    """The dotted keys (`prefix` + key) whose values differ between two configs, sorted; nested sections are
    compared key by key, and a `_target_` by its current module path."""
    differing: list[str] = []
    for key in set(saved) | set(wanted):
        old, new, name = saved.get(key), wanted.get(key), f"{prefix}{key}"
        if key == "_target_":
            old = current_target(old)
        if isinstance(old, dict) and isinstance(new, dict):
            differing += config_mismatch(old, new, f"{name}.")
        elif old != new:
            differing.append(name)
    return sorted(differing)


def value_at(cfg: dict, key: str) -> object:
    """`cfg`'s value at a dotted key (None where it has none)."""
    if key in cfg or "." not in key:
        return cfg.get(key)
    head, rest = key.split(".", 1)
    return value_at(cfg[head], rest) if isinstance(cfg.get(head), dict) else None


def differences(saved: dict, wanted: dict, keys: list[str]) -> str:
    return ", ".join(f"{k}: checkpoint {value_at(saved, k)!r} vs requested {value_at(wanted, k)!r}" for k in keys)


def check_model_config(saved: dict, wanted: dict, path: str | Path) -> None:
    differing = config_mismatch(saved, wanted)
    if differing:
        details = differences({"model": saved}, {"model": wanted}, [f"model.{k}" for k in differing])
        raise CheckpointError(f"checkpoint {path} was made for another model ({details})")


# What a resume keeps (README, Reliability): the keys that decide the epochs' batches and the lr schedule. `optim`
# too: the optimizer's settings, its lr among them, come back from the checkpoint, so a changed one would be ignored.
RESUME_KEYS = ("seed", "data", "optim", "scheduler", "trainer.accumulate_grad_batches", "trainer.limit_train_batches",
               "trainer.overfit_batches", "trainer.max_epochs")
# data keys that change only how fast the same batches come (augmentation draws aside), or where the same files lie
SPEED_ONLY_KEYS = ("data.num_workers", "data.in_memory", "data.root", "data.download")


def resume_view(cfg: dict, world_size: int) -> dict:
    """What of a run's config (resolved, as checkpoints store it) and process count a resume must keep."""
    return {key: value_at(cfg, key) for key in RESUME_KEYS} | {"world_size": world_size}


def follows_length(cfg: dict) -> bool:
    """Whether the lr schedule's shape depends on trainer.max_epochs: a cosine T_max equal to it (its default
    follows it), or a per-step schedule whose total_steps is left to the run's length."""
    scheduler, max_epochs = cfg.get("scheduler") or {}, value_at(cfg, "trainer.max_epochs")
    return scheduler.get("T_max") == max_epochs or ("total_steps" in scheduler and scheduler["total_steps"] is None)


def length_keys(saved: dict, wanted: dict) -> set[str]:
    """The keys that differ only because the schedule follows a changed trainer.max_epochs."""
    if not (follows_length(saved) or follows_length(wanted)):
        return {"trainer.max_epochs"}
    both_follow = all((c.get("scheduler") or {}).get("T_max") == value_at(c, "trainer.max_epochs") for c in (saved,
                                                                                                         wanted))
    return {"trainer.max_epochs"} | ({"scheduler.T_max"} if both_follow else set())


def extends_schedule(checkpoint: dict, wanted: dict) -> bool:
    """Whether this resume rebuilds the schedule (trainer.extend_schedule): from an epoch boundary, with a raised
    trainer.max_epochs, for a schedule whose shape depends on it."""
    saved, state = checkpoint["config"], checkpoint.get("state") or {}
    raised = (value_at(wanted, "trainer.max_epochs") or 0) > (value_at(saved, "trainer.max_epochs") or 0)
    return bool(value_at(wanted, "trainer.extend_schedule")) and not state.get("batch_in_epoch") and raised and \
        follows_length(saved)


def check_resume_config(checkpoint: dict, wanted: dict, path: str | Path, world_size: int) -> None:
    """Refuse a resume whose config (resolved) would change the model, or the run's batches or lr schedule."""
    saved, state = checkpoint["config"], checkpoint.get("state") or {}
    check_model_config(saved.get("model") or {}, wanted.get("model") or {}, path)
    old, new = resume_view(saved, checkpoint.get("world_size", 1)), resume_view(wanted, world_size)
    length = length_keys(saved, wanted)
    differing = [k for k in config_mismatch(old, new) if k not in SPEED_ONLY_KEYS]
    if not (follows_length(saved) or follows_length(wanted)) or extends_schedule(checkpoint, wanted):
        differing = [k for k in differing if k not in length]  # the same schedule, run longer or shorter
    if not differing:
        return
    saved_epochs, epochs = old["trainer.max_epochs"], new["trainer.max_epochs"]
    boundary, raised = not state.get("batch_in_epoch"), (epochs or 0) > (saved_epochs or 0)
    if set(differing) <= length and boundary and raised and state.get("epoch", checkpoint["epoch"]) >= saved_epochs:
        groups = (checkpoint.get("optimizer") or {}).get("param_groups") or [{}]
        lr = groups[0].get("lr", float("nan"))
        raise CheckpointError(
            f"checkpoint {path} finished its {saved_epochs}-epoch lr schedule, at lr {lr:g}: epochs "
            f"{saved_epochs + 1}..{epochs} would start at lr {lr:g} on that ended schedule; set "
            "trainer.extend_schedule=true to run a fresh schedule over them from optim.lr, or resume with "
            f"trainer.max_epochs={saved_epochs}")
    hint = ""
    if "trainer.max_epochs" in differing and raised:
        hint = ("; trainer.extend_schedule=true rebuilds the schedule for a raised trainer.max_epochs" if boundary
                else "; trainer.extend_schedule needs an epoch-boundary checkpoint: finish this epoch first")
    raise CheckpointError(f"checkpoint {path} was made with other settings for the run's batches or lr schedule "
                          f"({differences(old, new, differing)}); resume with the checkpoint's values or start a "
                          f"new run{hint}")


def finite_weights(model: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer is finite (one host read)."""
    checks = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


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
        is_best = math.isfinite(val.loss) and math.isfinite(val.acc) and val.acc > self.best_val_acc
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
        self.check_epoch(epoch)
        self.save(state, epoch.is_best)

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
