"""`mode=train`: build the run from its config, restore a checkpoint into it, then train and validate epoch by
epoch, handing each event to the run's hooks, and write the summary.

Read `run_training` top to bottom: checks, set-up (trainer/training/setup.py), resume (the Checkpointer in
trainer/training/checkpoint.py), the epoch loop, the summary. Checkpoints, the console, metrics.csv, loggers
and the report are hooks (trainer/training/hooks.py), not code in the loop.
"""

from __future__ import annotations

import logging
import time
from itertools import islice
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from trainer.build import build_logger, count_parameters
from trainer.errors import ConfigError, TrainerError, described
from trainer.hydra_callbacks import PrunedJob
from trainer.reporting.console import RunConsole, format_value, option_name, write_config_tree
from trainer.reporting.hooks import Throughput, reporting_hooks
from trainer.reporting.loggers import ended_on_error
from trainer.reporting.run_files import write_json
from trainer.training.checkpoint import Checkpointer, TrainState, load_checkpoint
from trainer.training.checkpoint_checks import refuse_directory
from trainer.training.distributed import (
    Distributed,
    init_distributed,
    shared_run_dir,
    shutdown_distributed,
    weights_digest,
)
from trainer.training.freeze import check_freeze_options, unfreeze_hooks
from trainer.training.hooks import EpochEvent, Hooks
from trainer.training.loop import NonFiniteLoss
from trainer.training.metrics import EpochStats, RunningStats
from trainer.training.optim import global_batch_size, scale_lr_with_batch
from trainer.training.preemption import StopOnSignal, StopSignals
from trainer.training.resume_config import check_resume_config
from trainer.training.runtime import freeze_setup_objects, is_compile_error, release_setup_objects
from trainer.training.scoring import (
    collected_split,
    load_selected,
    report_predictions,
    score_test_split,
    test_pass_summary,
    validate_epoch,
)
from trainer.training.search_report import ReportToTrial, trial_reporting
from trainer.training.selection import EarlyStopping, Monitor
from trainer.training.setup import RunSetup, build_run
from trainer.training.timing import PhaseTimes

log = logging.getLogger("trainer")

# What torch says when a model's feature maps shrink below its kernels (a timm or torchvision model on small images).
INPUT_TOO_SMALL = ("Kernel size can't be greater than actual input size", "Output size is too small")
PHASES = ("setup", "train", "validate", "checkpoint", "test", "report")  # summary.json phase_s, with `other`
# The summary.json entries the console's summary table shows: the result, and how long it took.
SHOWN = ("best_val_acc", "best_epoch", "monitor", "best_score", "selected_on", "test_acc", "test_loss", "tested",
         "stopped_epoch", "epochs", "wall_s", "train_samples_per_s")


def train(cfg: DictConfig, run_dir: Path) -> float | PrunedJob:
    """Train in this process, or as one rank of a `torchrun` job (then rank 0 writes every file)."""
    ctx, device = init_distributed(cfg.trainer.device)
    try:
        return run_training(cfg, shared_run_dir(ctx, run_dir), ctx, device)
    finally:
        release_setup_objects()
        shutdown_distributed(ctx)


def run_training(cfg: DictConfig, run_dir: Path, ctx: Distributed,
                 rank_device: torch.device | None) -> float | PrunedJob:
    """The whole run; returns the best trainer.monitor value (the objective a sweeper optimises, in the
    monitor's direction: val/acc by default, maximised), or a PrunedJob when an Optuna search pruned it."""
    wall_start, times, tcfg = time.perf_counter(), PhaseTimes(), cfg.trainer
    monitor, early = Monitor.from_config(tcfg), tcfg.early_stopping
    resume_path = resolve_resume(tcfg.resume, run_dir)
    check_torchrun_options(cfg, ctx, rank_device)
    check_freeze_options(cfg, ctx)
    console = RunConsole(tcfg.progress if ctx.is_main else "none")
    if ctx.is_main:
        tree = write_config_tree(cfg, run_dir / "config_tree.txt")
        if cfg.extras.print_config:
            console.tree(tree)
    checkpoint = load_checkpoint(resume_path) if resume_path else None
    apply_regularization_to_model(cfg)
    scaled_lr = scale_lr_with_batch(cfg, ctx.world_size)  # optim.scale_lr_with_batch: before anything reads optim.lr
    if scaled_lr:
        console.info(scaled_lr)
    if checkpoint is not None:
        check_resume_config(checkpoint, OmegaConf.to_container(cfg, resolve=True), resume_path, ctx.world_size)

    # ---- set-up: seeds, device, data, model, optimisation; then the checkpoint's state, when resuming
    run = build_run(cfg, ctx, rank_device, resumed=checkpoint is not None)
    checkpointer = Checkpointer(run, run_dir, times)
    state = checkpointer.restore(checkpoint, resume_path) if checkpoint is not None else TrainState()
    if checkpoint is not None:
        console.info(f"Resumed from {resume_path} after {position(state)} (step {state.global_step})")
    for note in run.notes:  # model.init_from, model.freeze
        console.info(note)
    logger = build_logger(cfg.logger if ctx.is_main else {}, str(run_dir), cfg)  # rank 0 alone logs
    console.table("trainer", describe_run(run, state, run_dir))
    throughput = Throughput()
    reporting = reporting_hooks(run, run_dir, console, logger, times) if ctx.is_main else []
    stopping = [EarlyStopping(monitor, early.patience, early.min_delta, console)] if early.patience else []
    search = trial_reporting(monitor, console) if ctx.is_main else []  # after the checkpoint: a pruned run keeps it
    collected = collected_split(run)  # the pass that collects the report's predictions: test, val or none
    times.record("setup", wall_start)
    freeze_setup_objects()

    # ---- the epoch loop
    with StopSignals() as stop, ended_on_error(logger):
        stop_on_signal = StopOnSignal(run_dir, stop, ctx, run.device)  # last: after the checkpoint is saved
        unfreezing = unfreeze_hooks(cfg, run.model, run.optimizer, console)  # first: the epoch trains what it lifts
        hooks = Hooks([*unfreezing, throughput, *reporting, *stopping, checkpointer, *search, stop_on_signal], state,
                      stop, ctx, run.device, run.train_steps)
        for epoch in state.remaining_epochs(tcfg.max_epochs):
            hooks.before_epoch()
            with times.phase("train"):
                train_stats = ctx.reduce_stats(train_one_epoch(run, state, hooks, console, epoch), run.device)
            with times.phase("validate"):
                val_stats, ema_stats, predictions = validate_epoch(run, console, collect=collected == "val")
            lr = run.optimizer.param_groups[0]["lr"]
            run.scheduler.step_epoch(val_stats.loss)
            is_best = state.end_epoch(train_stats, val_stats, ema_stats, lr, monitor)
            if is_best:  # this epoch's weights become best.pt: its validation is the report's
                state.predictions = predictions
            hooks.after_validation(EpochEvent(state.epoch, train_stats, val_stats, ema_stats, lr, is_best))
    in_sync = len(set(ctx.gather(weights_digest(run.model)))) == 1 if ctx.enabled else None

    # ---- the test: the selected weights (best.pt's), once, on the test split; then the report
    with ended_on_error(logger):
        with times.phase("test"):
            tested = load_selected(run, checkpointer)
            test_stats, test_predictions = score_test_split(run, cfg.eval.tta, collect=collected == "test")
            state.test = test_pass_summary(test_stats, tested, cfg.eval.tta)
            state.predictions = report_predictions(run, state.predictions, test_predictions)
        hooks.at_end()

    # ---- the summary
    summary = run_summary(run, state, times, time.perf_counter() - wall_start, throughput, in_sync, resume_path,
                          run_dir, search)
    if ctx.is_main:
        write_json(run_dir / "summary.json", summary)
    console.table("summary", {k: format_value(summary[k]) for k in SHOWN if summary.get(k) is not None})
    console.info(f"wrote {run_dir / 'summary.json'} (every entry; also metrics.csv, checkpoints/ and the report)")
    if summary.get("pruned"):
        return PrunedJob(state.epoch, state.best_score)
    return state.best_score if state.best_score is not None else float("nan")


def train_one_epoch(run: RunSetup, state: TrainState, hooks: Hooks, console: RunConsole, epoch: int) -> EpochStats:
    """Epoch `epoch` (from 0) from where `state` stands: a resumed epoch continues at its saved batch and sums.

    The batch order is a function of (seed, epoch), so a resumed run replays the same batches.
    """
    start_batch = state.batch_in_epoch
    run.datamodule.set_train_epoch(epoch, start_batch)
    stats = RunningStats(run.device)
    if state.partial is not None:
        stats.load_state_dict(state.partial)
    state.batch_in_epoch, state.partial = 0, None
    batches = islice(run.train_loader, run.train_steps - start_batch)
    with console.progress(f"epoch {epoch + 1}/{run.cfg.trainer.max_epochs}", run.train_steps) as update:
        try:
            return run.train_epoch(batches, stats=stats, start_batch=start_batch, on_step=update,
                                   after_step=hooks.after_step)
        except NonFiniteLoss as err:
            raise TrainerError(f"non-finite loss at epoch {epoch + 1}, batch {err.batch} (step "
                               f"{state.global_step + 1}); the last good checkpoint is kept. Lower "
                               "optim.lr, set trainer.grad_clip_norm, or trainer.skip_nonfinite=true") from None
        except Exception as err:
            if run.cfg.trainer.compile and is_compile_error(err):
                raise TrainerError(f"torch.compile failed ({described(err)}); "
                                   "run with trainer.compile=false") from err
            if any(text in str(err) for text in INPUT_TOO_SMALL):  # timm/torchvision models are not checked up front
                raise ConfigError(f"model={option_name('model', run.cfg.model._target_)} does not fit "
                                  f"data.image_size={run.cfg.data.image_size}: {described(err)}; use larger "
                                  "images or a model with fewer downsampling stages") from None
            raise


def check_torchrun_options(cfg: DictConfig, ctx: Distributed, rank_device: torch.device | None) -> None:
    """Refuse, before anything is built, torchrun options that the devices do not support (a run dir that holds
    another run was refused before Hydra wrote into it: trainer/run_dirs.py)."""
    tcfg = cfg.trainer
    if ctx.enabled and tcfg.skip_nonfinite:
        raise ConfigError("trainer.skip_nonfinite=true is not supported under torchrun (every rank must take "
                          "the same steps); leave it false")
    if ctx.enabled and tcfg.sync_batchnorm and (rank_device is None or rank_device.type != "cuda"):
        raise ConfigError("trainer.sync_batchnorm=true needs CUDA devices (SyncBatchNorm has no CPU kernels)")


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """`auto` means this run dir's last.pt when it exists; a path must exist, and be a file (a run dir is refused,
    naming its checkpoints/last.pt when it has one)."""
    if resume is None:
        return None
    if resume == "auto":
        candidate = run_dir / "checkpoints" / "last.pt"
        return candidate if candidate.is_file() else None
    refuse_directory(Path(resume))
    return Path(resume)


def apply_regularization_to_model(cfg: DictConfig) -> None:
    """`regularization.dropout` / `.stochastic_depth` replace the model's own rates in the run's config, which
    the model's schema then checks again (timm's: not also set by model.kwargs)."""
    applied = []
    for key in ("dropout", "stochastic_depth"):
        value = cfg.regularization[key]
        if value is None:
            continue
        if key not in cfg.model:
            raise ConfigError(f"regularization.{key}={value} but model={option_name('model', cfg.model._target_)} "
                              f"has no {key} setting")
        cfg.model[key] = value
        applied.append(f"regularization.{key}={value} sets model.{key}")
    if not applied:
        return
    try:
        OmegaConf.to_object(cfg.model)
    except ValueError as err:
        raise ConfigError(f"invalid config: model.{err}; {', '.join(applied)}") from None


def position(state: TrainState) -> str:
    """Where a checkpoint stopped: `epoch 3`, or `epoch 3, batch 40 of epoch 4`."""
    mid = f", batch {state.batch_in_epoch} of epoch {state.epoch + 1}" if state.batch_in_epoch else ""
    return f"epoch {state.epoch}{mid}"


def global_batch(run: RunSetup) -> int:
    """Samples per optimizer step over every process."""
    return global_batch_size(run.cfg, run.ctx.world_size)


def describe_run(run: RunSetup, state: TrainState, run_dir: Path) -> dict[str, str]:
    """The console's `trainer` table: what trains, on what, how, where."""
    cfg, tcfg, ctx, data = run.cfg, run.cfg.trainer, run.ctx, run.datamodule
    batch = (f"batch {data.batch_size}" if global_batch(run) == data.batch_size else
             f"batch {data.batch_size} per process x {ctx.world_size} process(es) x "
             f"{tcfg.accumulate_grad_batches} accumulated = {global_batch(run)}")
    precision = run.precision.name
    name = f" {cfg.model.name}" if "name" in cfg.model else ""  # the architecture of model=timm|torchvision
    return {
        "model": f"{option_name('model', cfg.model._target_)}{name} ({count_parameters(run.model):,} parameters)",
        "data": f"{option_name('data', cfg.data._target_)}: {len(data.train_set):,} train / "
                f"{len(data.val_set):,} val" + (f" / {len(data.test_set):,} test" if data.test_set else "")
                + f", {batch}",
        "selection": describe_selection(tcfg),
        "optimisation": f"{option_name('optim', cfg.optim._target_)} lr {cfg.optim.lr:g}, "
                        f"scheduler {option_name('scheduler', cfg.scheduler._target_)}",
        "device": f"{run.device} ({'fp' if precision == '32' else ''}{precision} precision)"
                  + (f", {ctx.world_size} processes" if ctx.enabled else "")
                  + (", channels_last" if tcfg.channels_last else "")
                  + (f", compiled ({tcfg.compile_mode})" if tcfg.compile else ""),
        "epochs": f"{state.epoch + 1}..{tcfg.max_epochs}" if state.epoch else str(tcfg.max_epochs),
        "run dir": str(run_dir),
    }


def describe_selection(tcfg: DictConfig) -> str:
    """The console's `selection` row: what chooses best.pt, what else is kept, when the run stops early."""
    monitor, early = Monitor.from_config(tcfg), tcfg.early_stopping
    kept = f", top {tcfg.save_top_k} kept" if tcfg.save_top_k > 1 else ""
    kept += f", every {tcfg.save_every_n_epochs} epoch(s) kept" if tcfg.save_every_n_epochs else ""
    stop = f", early stopping after {early.patience} epoch(s) without improvement" if early.patience else ""
    return f"best.pt on {monitor.name} ({monitor.mode}){kept}{stop}"


def selection_summary(run: RunSetup, state: TrainState, search: list[ReportToTrial] | None = None) -> dict:
    """summary.json's result: what selected best.pt, on which split, its scores, and whether the run stopped early
    (`pruned`, in a run of an Optuna search: whether its trial was pruned)."""
    monitor = Monitor.from_config(run.cfg.trainer)
    return {
        "best_val_acc": state.best_val_acc, "best_epoch": state.best_epoch, "monitor": monitor.name,
        "monitor_mode": monitor.mode, "best_score": state.best_score,
        "selected_on": "test" if run.datamodule.val_is_test else "val", **(state.test or {}),
        "stopped_early": state.stopped_early, "stopped_epoch": state.epoch if state.stopped_early else None,
        **({"pruned": any(hook.pruned for hook in search)} if search else {}),
    }


def run_summary(run: RunSetup, state: TrainState, times: PhaseTimes, wall_s: float, throughput: Throughput,
                in_sync: bool | None, resume_path: Path | None, run_dir: Path,
                search: list[ReportToTrial] | None = None) -> dict:
    """summary.json: the result, where the time went, and what ran where."""
    cfg, last = run.cfg, state.history[-1] if state.history else {}
    return {
        **selection_summary(run, state, search), "final_val_acc": last.get("val_acc"),
        "final_val_loss": last.get("val_loss"),
        "epochs": state.epoch, "global_step": state.global_step, "skipped_batches": state.skipped_batches,
        "wall_s": round(wall_s, 3), "phase_s": times.summary(PHASES, wall_s),
        "train_samples_per_s": throughput.samples_per_s,
        "device": str(run.device), "precision": run.precision.name, "params": count_parameters(run.model),
        "batch_size": run.datamodule.batch_size, "world_size": run.ctx.world_size, "global_batch": global_batch(run),
        "torch_threads": torch.get_num_threads(),
        "ranks_in_sync": in_sync,
        "model": option_name("model", cfg.model._target_), "data": option_name("data", cfg.data._target_),
        "resumed_from": str(resume_path) if resume_path else None, "run_dir": str(run_dir),
    }
