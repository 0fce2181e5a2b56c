"""`mode=train`: build everything from the config, then train and validate epoch by epoch.

Read it top to bottom: set-up, optional resume, the epoch loop, the summary.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from trainer import __version__
from trainer.build import count_parameters
from trainer.environment import local_world_size
from trainer.errors import CheckpointError, ConfigError, TrainerError, described
from trainer.reporting.console import RunConsole, write_config_tree
from trainer.reporting.report import write_run_report
from trainer.reporting.run_files import write_json, write_metrics_csv
from trainer.training.checkpoint import check_model_config, load_checkpoint, save_checkpoint
from trainer.training.distributed import (
    Distributed,
    init_distributed,
    shared_run_dir,
    shutdown_distributed,
    weights_digest,
)
from trainer.training.loop import NonFiniteLoss, validate
from trainer.training.metrics import RunningStats
from trainer.training.optim import load_optimizer_state
from trainer.training.preemption import Preempted, StopSignals
from trainer.training.runtime import capture_rng_state, is_compile_error, restore_rng_state
from trainer.training.setup import build_run
from trainer.training.timing import PhaseTimes

log = logging.getLogger("trainer")

RUN_FILES = ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.csv", "summary.json")
PHASES = ("setup", "train", "validate", "checkpoint", "report")  # summary.json phase_s, with `other`


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


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """`auto` means this run dir's last.pt when it exists; a path must exist."""
    if resume is None:
        return None
    if resume == "auto":
        candidate = run_dir / "checkpoints" / "last.pt"
        return candidate if candidate.is_file() else None
    return Path(resume)


def refuse_to_overwrite(run_dir: Path, resume: str | None, resume_path: Path | None) -> None:
    """A run dir that already holds another run's results is never written over.

    `trainer.resume=auto` declares the run dir as this run's own: it continues from its last.pt, or
    starts it afresh when an earlier attempt was killed before its first checkpoint.
    """
    if resume == "auto":
        return
    own_last = run_dir / "checkpoints" / "last.pt"
    if resume_path is not None and resume_path.resolve() == own_last.resolve():
        return
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if existing:
        raise ConfigError(f"run dir {run_dir} already holds a run ({', '.join(existing)}); "
                          "continue it with trainer.resume=auto or choose another hydra.run.dir")


def apply_regularization_to_model(cfg: DictConfig) -> None:
    """`regularization.dropout` / `.stochastic_depth` replace the model's own rates in the run's config."""
    for key in ("dropout", "stochastic_depth"):
        value = cfg.regularization[key]
        if value is None:
            continue
        if key not in cfg.model:
            raise ConfigError(f"regularization.{key}={value} but model={_choice('model', cfg.model._target_)} "
                              f"has no {key} setting")
        cfg.model[key] = value


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Train in this process, or as one rank of a `torchrun` job (then rank 0 writes every file)."""
    ctx, device = init_distributed(cfg.trainer.device)
    try:
        return _train(cfg, shared_run_dir(ctx, run_dir), ctx, device)
    finally:
        shutdown_distributed(ctx)


def _train(cfg: DictConfig, run_dir: Path, ctx: Distributed, rank_device: torch.device | None) -> float:
    wall_start = time.perf_counter()
    times = PhaseTimes()
    tcfg = cfg.trainer
    console = RunConsole(tcfg.progress if ctx.is_main else "none")
    resume_path = resolve_resume(tcfg.resume, run_dir)
    refuse_to_overwrite(run_dir, tcfg.resume, resume_path)
    if ctx.enabled and tcfg.skip_nonfinite:
        raise ConfigError("trainer.skip_nonfinite=true is not supported under torchrun (every rank must take "
                          "the same steps); leave it false")
    if ctx.enabled and tcfg.sync_batchnorm and (rank_device is None or rank_device.type != "cuda"):
        raise ConfigError("trainer.sync_batchnorm=true needs CUDA devices (SyncBatchNorm has no CPU kernels)")
    if ctx.is_main:
        console.tree(write_config_tree(cfg, run_dir / "config_tree.txt"))
    checkpoint = load_checkpoint(resume_path) if resume_path else None
    apply_regularization_to_model(cfg)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if checkpoint is not None:
        check_model_config(checkpoint["config"]["model"], model_cfg, resume_path)

    # ---- set-up: seeds, device, data, model, optimisation (trainer/training/setup.py)
    run = build_run(cfg, ctx, rank_device)
    device, precision, datamodule, model = run.device, run.precision, run.datamodule, run.model
    optimizer, scheduler, scaler, ema = run.optimizer, run.scheduler, run.scaler, run.ema
    train_steps, val_steps, fmt = run.train_steps, run.val_steps, run.memory_format
    val_criterion = nn.CrossEntropyLoss()
    state = TrainState()

    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        if ema is not None:
            if checkpoint.get("ema") is None:
                raise CheckpointError(f"checkpoint {resume_path} has no EMA weights to resume with ema_decay set")
            ema.load_state_dict(checkpoint["ema"])
        scaler.load_state_dict(checkpoint["scaler"])
        # after create_scheduler (in build_run), which resets the optimizer's lr to the schedule's start
        load_optimizer_state(optimizer, checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        state = TrainState(**checkpoint["state"])
        saved_world = checkpoint.get("world_size", 1)
        if state.batch_in_epoch and saved_world != ctx.world_size:
            raise CheckpointError(f"checkpoint {resume_path} stopped mid-epoch with {saved_world} process(es); "
                                  f"resume it with {saved_world}, not {ctx.world_size}")
        rank_partial = checkpoint.get("rank_partial") or [state.partial]
        state.partial = rank_partial[ctx.rank] if ctx.rank < len(rank_partial) else None
        rank_rng = checkpoint.get("rank_rng") or [checkpoint["rng"]]
        restore_rng_state(rank_rng[ctx.rank] if ctx.rank < len(rank_rng) else checkpoint["rng"])
        position = f"epoch {state.epoch}" + (f", batch {state.batch_in_epoch} of epoch {state.epoch + 1}"
                                             if state.batch_in_epoch else "")
        console.info(f"Resumed from {resume_path} after {position} (step {state.global_step})")

    logger = instantiate(cfg.logger if ctx.is_main else {"_target_": "trainer.reporting.loggers.NullLogger"},
                         run_dir=str(run_dir))
    params = count_parameters(model)
    global_batch = datamodule.batch_size * ctx.world_size * tcfg.accumulate_grad_batches
    batch_text = (f"batch {datamodule.batch_size}" if global_batch == datamodule.batch_size else
                  f"batch {datamodule.batch_size} per process x {ctx.world_size} process(es) x "
                  f"{tcfg.accumulate_grad_batches} accumulated = {global_batch}")
    console.table("trainer", {
        "model": f"{_choice('model', cfg.model._target_)} ({params:,} parameters)",
        "data": f"{_choice('data', cfg.data._target_)}: {len(datamodule.train_set):,} train / "
                f"{len(datamodule.val_set):,} val, {batch_text}",
        "optimisation": f"{_choice('optim', cfg.optim._target_)} lr {cfg.optim.lr:g}, "
                        f"scheduler {_choice('scheduler', cfg.scheduler._target_)}",
        "device": f"{device} ({'fp' if precision.name == '32' else ''}{precision.name} precision)"
                  + (f", {ctx.world_size} processes" if ctx.enabled else "")
                  + (", channels_last" if tcfg.channels_last else "")
                  + (f", compiled ({tcfg.compile_mode})" if tcfg.compile else ""),
        "epochs": f"{state.epoch + 1}..{tcfg.max_epochs}" if state.epoch else str(tcfg.max_epochs),
        "run dir": str(run_dir),
    })

    def save(is_best: bool = False) -> None:
        """last.pt (and best.pt) with everything that decides the rest of the run; rank 0 writes them."""
        with times.phase("checkpoint"):
            rng = ctx.gather(capture_rng_state())  # every rank's, so a resumed rank continues its own draws
            partials = ctx.gather(state.partial)  # and every rank's sums of an unfinished epoch
            if not tcfg.save_checkpoints or not ctx.is_main:
                ctx.barrier()
                return
            payload = {
                "version": __version__, "config": OmegaConf.to_container(cfg, resolve=True),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "state": asdict(state), "epoch": state.epoch, "rng": rng[0], "rank_rng": rng,
                "rank_partial": partials, "world_size": ctx.world_size,
                "ema": ema.state_dict() if ema is not None else None, "classes": list(datamodule.classes),
            }
            save_checkpoint(payload, run_dir / "checkpoints" / "last.pt")
            if is_best:
                save_checkpoint(payload, run_dir / "checkpoints" / "best.pt")
            ctx.barrier()

    def stop_agreed() -> bool:
        """Whether any rank got a stop signal (an all-reduce under torchrun): then every rank stops here."""
        if ctx.any(bool(stop.requested), device) and not stop.requested:
            stop.requested = "a signal on another rank"
        return bool(stop.requested)

    def after_step(batch: int, stats: RunningStats) -> None:
        """Mid-epoch checkpoints every N optimizer steps, and the graceful stop after a signal."""
        state.global_step += 1
        stop_agreed()
        every = tcfg.checkpoint_every_n_steps
        due = every is not None and state.global_step % every == 0 and batch < train_steps
        if (due or stop.requested) and batch < train_steps:
            if run.is_finite is None and ctx.any(not math.isfinite(stats.mean_loss()), device):
                raise NonFiniteLoss(batch)  # never replace the last good checkpoint with diverged weights
            state.batch_in_epoch, state.partial = batch, stats.state_dict()
            save()
            state.batch_in_epoch, state.partial = 0, None
        if stop.requested and batch < train_steps:  # on an epoch's last step: finish the epoch, then stop
            log.warning("%s received: stopped at epoch %d, batch %d", stop.requested, state.epoch + 1, batch)
            raise Preempted(f"{stop.requested}: saved {run_dir / 'checkpoints' / 'last.pt'}; resume with: "
                            f"{resume_command(run_dir)}")

    times.record("setup", wall_start)

    # ---- the epoch loop
    train_samples = train_seconds = 0.0
    with StopSignals() as stop:
        for epoch in range(state.epoch, tcfg.max_epochs):
            # The batch order is a function of (seed, epoch): a resumed run replays the same batches.
            start_batch = state.batch_in_epoch
            datamodule.set_train_epoch(epoch, start_batch)
            stats = RunningStats(device)
            if state.partial is not None:
                stats.load_state_dict(state.partial)
            state.batch_in_epoch, state.partial = 0, None
            with console.progress(f"epoch {epoch + 1}/{tcfg.max_epochs}", train_steps) as update, \
                    times.phase("train"):
                try:
                    train_stats = run.train_epoch(
                        islice(run.train_loader, train_steps - start_batch), stats=stats, start_batch=start_batch,
                        on_step=update, after_step=after_step)
                except NonFiniteLoss as err:
                    raise TrainerError(f"non-finite loss at epoch {epoch + 1}, batch {err.batch} (step "
                                       f"{state.global_step + 1}); the last good checkpoint is kept. Lower "
                                       "optim.lr, set trainer.grad_clip_norm, or trainer.skip_nonfinite=true") from None
                except Exception as err:
                    if tcfg.compile and is_compile_error(err):
                        raise TrainerError(f"torch.compile failed ({described(err)}); "
                                           "run with trainer.compile=false") from err
                    raise
            train_stats = ctx.reduce_stats(train_stats, device)
            with times.phase("validate"):
                val_stats = ctx.reduce_stats(
                    validate(model, islice(run.val_loader, val_steps), val_criterion, precision, fmt), device)
                ema_stats = ctx.reduce_stats(
                    validate(ema.module, islice(run.val_loader, val_steps), val_criterion, precision, fmt), device
                ) if ema else None
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step_epoch(val_stats.loss)

            state.epoch = epoch + 1
            state.skipped_batches += train_stats.skipped
            train_samples += train_stats.samples
            train_seconds += train_stats.seconds
            is_best = val_stats.acc > state.best_val_acc
            if is_best:
                state.best_val_acc, state.best_epoch = val_stats.acc, state.epoch
            # Only values that a resumed run reproduces exactly; throughput goes to TensorBoard and the summary.
            row = {"epoch": state.epoch, "step": state.global_step, "lr": lr,
                   "train_loss": train_stats.loss, "train_acc": train_stats.acc,
                   "val_loss": val_stats.loss, "val_acc": val_stats.acc, "val_top5": val_stats.top5}
            if ema_stats is not None:
                row |= {"val_ema_loss": ema_stats.loss, "val_ema_acc": ema_stats.acc}
            state.history.append(row)
            if ctx.is_main:
                write_metrics_csv(run_dir / "metrics.csv", state.history)
            logger.log_scalars({"train/loss": train_stats.loss, "train/acc": train_stats.acc,
                                "val/loss": val_stats.loss, "val/acc": val_stats.acc, "lr": lr,
                                "throughput": train_stats.samples_per_s}
                               | ({"val_ema/loss": ema_stats.loss, "val_ema/acc": ema_stats.acc} if ema_stats else {}),
                               state.epoch)
            console.info(
                f"epoch {state.epoch:>3}/{tcfg.max_epochs}  train loss {train_stats.loss:.4f} acc "
                f"{train_stats.acc:.4f}  val loss {val_stats.loss:.4f} acc {val_stats.acc:.4f}"
                + (f" top5 {val_stats.top5:.4f}" if val_stats.top5 is not None else "")
                + (f"  ema acc {ema_stats.acc:.4f}" if ema_stats is not None else "")
                + f"  lr {lr:.3g}  {train_stats.samples_per_s:,.0f} samples/s" + ("  *best" if is_best else ""))
            save(is_best)
            if stop_agreed():
                raise Preempted(f"{stop.requested}: saved {run_dir / 'checkpoints' / 'last.pt'} after epoch "
                                f"{state.epoch}; resume with: {resume_command(run_dir)}")
    in_sync = len(set(ctx.gather(weights_digest(model)))) == 1 if ctx.enabled else None
    if tcfg.report and tcfg.save_checkpoints and ctx.is_main:  # figures and per-class scores of best.pt
        full_val = datamodule.val_loader(device.type == "cuda", device=device) if ctx.enabled else run.val_loader
        with times.phase("report"):
            write_run_report(run_dir, state.history, model, islice(full_val, val_steps * ctx.world_size),
                             list(datamodule.classes), precision, logger, cfg, log_graph=logger.graph)
    logger.close()

    # ---- the summary
    last = state.history[-1] if state.history else {}
    wall_s = time.perf_counter() - wall_start
    summary = {
        "best_val_acc": state.best_val_acc, "best_epoch": state.best_epoch,
        "final_val_acc": last.get("val_acc"), "final_val_loss": last.get("val_loss"),
        "epochs": state.epoch, "global_step": state.global_step, "skipped_batches": state.skipped_batches,
        "wall_s": round(wall_s, 3), "phase_s": times.summary(PHASES, wall_s),
        "train_samples_per_s": round(train_samples / train_seconds, 1) if train_seconds else None,
        "device": str(device), "precision": precision.name, "params": params,
        "batch_size": datamodule.batch_size, "world_size": ctx.world_size, "global_batch": global_batch,
        "torch_threads": torch.get_num_threads(),
        "ranks_in_sync": in_sync,
        "model": _choice("model", cfg.model._target_), "data": _choice("data", cfg.data._target_),
        "resumed_from": str(resume_path) if resume_path else None, "run_dir": str(run_dir),
    }
    if ctx.is_main:
        write_json(run_dir / "summary.json", summary)
    console.table("summary", {k: _fmt(v) for k, v in summary.items() if k not in ("run_dir",) and v is not None})
    return state.best_val_acc


def resume_command(run_dir: Path) -> str:
    """The command line that continues this run in the same run dir."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [o for o in overrides if not o.startswith(("trainer.resume=", "hydra.run.dir="))]
    processes = local_world_size()
    launcher = f"torchrun --nproc_per_node={processes} -m trainer" if processes > 1 else "python -m trainer"
    return " ".join([launcher, *kept, f"hydra.run.dir={run_dir}", "trainer.resume=auto"])


def _choice(group: str, fallback: str) -> str:
    """The option name picked for a config group (e.g. `resnet50`), or the target's class name."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return choice
    return fallback.rsplit(".", 1)[-1]


def _fmt(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {item:.2f} s" for key, item in value.items())  # phase_s
    if isinstance(value, float):
        return f"{value:.4f}" if value < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
