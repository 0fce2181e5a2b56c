"""`mode=lr_find`: an exponential learning-rate sweep over training steps, and the lr it suggests.

The run is built as training builds it (trainer/training/setup.py: data, model, precision, channels_last,
compile), then trains `lr_find.num_steps` optimizer steps with `train_epoch` while the lr grows from
`lr_find.min_lr` to `lr_find.max_lr` (the train loader is cycled when it is shorter). Each step's loss is
recorded and smoothed by a bias-corrected running average; the sweep stops early once the smoothed loss exceeds
`lr_find.early_stop_threshold` times its best. The suggestion is the lr at the steepest descent of the smoothed
curve (PyTorch Lightning's and fastai's rule), the first and last few points left out.

The sweep runs on a fresh optimizer built from `optim.*` (the configured scheduler does not run: the sweep sets
the lr). Each parameter group's lr is scaled by the same factor, so groups with their own lr keep their ratios;
the lrs reported are the `optim.lr` values. Nothing is saved but lr_find.json and lr_find.png.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.optim.lr_scheduler import LambdaLR

from trainer.environment import launched_by_torchrun
from trainer.errors import ConfigError, TrainerError, described
from trainer.reporting.console import RunConsole
from trainer.reporting.run_files import write_json
from trainer.training.loop import Batches, NonFiniteLoss, train_epoch
from trainer.training.metrics import RunningStats
from trainer.training.optim import Scheduler, create_optimizer, lr_batch_factor
from trainer.training.runtime import is_compile_error
from trainer.training.setup import RunSetup, build_run

SKIP_START = 10  # points left out at the start of the curve (the loss barely moves at tiny lrs)
SKIP_END = 1  # and at its end (where the sweep diverged)
MIN_POINTS = 3  # fewer points than this left to judge: no suggestion
# Overrides that made this an lr_find run: the suggested training command leaves them out.
NOT_FOR_TRAINING = ("mode", "optim.lr", "lr_find", "hydra")


@dataclass
class ExponentialSweep:
    """The factor on each group's initial lr at step `k`: `lr_k / reference`, where lr_k = min_lr x
    (max_lr / min_lr)^(k / (num_steps - 1)) runs from min_lr at the first step to max_lr at the last."""

    min_lr: float
    max_lr: float
    num_steps: int
    reference: float  # optim.lr: the lr that the factor 1 stands for

    def lr(self, step: int) -> float:
        return self.min_lr * (self.max_lr / self.min_lr) ** (min(step, self.num_steps - 1) / (self.num_steps - 1))

    def __call__(self, step: int) -> float:
        return self.lr(step) / self.reference


@dataclass
class SweepCurve:
    """The losses of the sweep's steps, raw and smoothed (a running average with bias correction: fastai's
    `SmoothenValue`, Lightning's `_LRCallback`), and whether the sweep should stop."""

    smoothing: float
    early_stop_threshold: float | None
    lrs: list[float] = field(default_factory=list)
    raw: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    average: float = 0.0
    best: float = math.inf
    diverged: bool = False

    def record(self, lr: float, loss: float) -> None:
        beta = 1.0 - self.smoothing
        self.average = beta * self.average + self.smoothing * loss
        value = self.average / (1.0 - beta ** (len(self.raw) + 1))
        self.lrs.append(lr)
        self.raw.append(loss)
        self.smoothed.append(value)
        if not math.isfinite(value):
            self.diverged = True
            return
        threshold = self.early_stop_threshold
        if threshold is not None and len(self.raw) > 1 and value > threshold * self.best:
            self.diverged = True
        self.best = min(self.best, value)


def suggest_lr(lrs: list[float], losses: list[float], skip_start: int = SKIP_START,
               skip_end: int = SKIP_END) -> float | None:
    """The lr where the (smoothed) loss falls fastest per step of log lr, among the finite points but the first
    `skip_start` and the last `skip_end` (fewer when the curve is short); None when fewer than MIN_POINTS are
    finite."""
    import numpy as np

    finite = [(lr, loss) for lr, loss in zip(lrs, losses, strict=True) if math.isfinite(loss)]
    if len(finite) < MIN_POINTS:
        return None
    spare = len(finite) - MIN_POINTS
    start = min(skip_start, spare)
    points = finite[start:len(finite) - min(skip_end, spare - start)]
    gradients = np.gradient(np.array([loss for _, loss in points]), np.log([lr for lr, _ in points]))
    return float(points[int(np.argmin(gradients))][0])


def sweep_batches(run: RunSetup, done: SweepState) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The run's training batches (limit_train_batches applied), pass after pass, until the sweep is done."""
    epoch = 0
    while True:
        run.datamodule.set_train_epoch(epoch)
        for batch in islice(run.train_loader, run.train_steps):
            if done.finished():
                return
            yield batch
        epoch += 1


@dataclass
class SweepState:
    """The sweep in progress: its schedule, its curve, and the loss sums of the steps so far."""

    schedule: ExponentialSweep
    curve: SweepCurve
    loss_sum: float = 0.0
    samples: int = 0

    def finished(self) -> bool:
        return self.curve.diverged or len(self.curve.raw) >= self.schedule.num_steps

    def after_step(self, batch: int, stats: RunningStats) -> None:
        """One optimizer step done: its loss is the mean over the batches it accumulated (a host read)."""
        loss_sum = stats.loss_sum.item()
        loss = (loss_sum - self.loss_sum) / max(stats.samples - self.samples, 1)
        self.loss_sum, self.samples = loss_sum, stats.samples
        self.curve.record(self.schedule.lr(len(self.curve.raw)), loss)


def run_sweep(run: RunSetup, cfg: DictConfig, console: RunConsole) -> SweepCurve:
    """Train `lr_find.num_steps` optimizer steps (fewer when the loss diverges) at growing lrs."""
    find = cfg.lr_find
    optimizer = create_optimizer(cfg.optim, run.model)  # the configured groups and lrs, not yet scheduled
    schedule = ExponentialSweep(find.min_lr, find.max_lr, find.num_steps, float(cfg.optim.lr))
    scheduler = Scheduler(LambdaLR(optimizer, schedule), "step")
    state = SweepState(schedule, SweepCurve(find.smoothing, find.early_stop_threshold))
    batches: Batches = sweep_batches(run, state)
    with console.progress("lr_find", find.num_steps * run.settings.accumulate) as update:
        try:
            # a non-finite loss ends the sweep (trainer.skip_nonfinite would skip batches for as long as it lasts)
            train_epoch(run.train_model, batches, run.regularization, optimizer, scheduler, run.scaler,
                        replace(run.settings, skip_nonfinite=False), on_step=update, after_step=state.after_step)
        except NonFiniteLoss:
            state.curve.diverged = True  # the curve so far stands; the steps after it would only diverge
        except Exception as err:
            if cfg.trainer.compile and is_compile_error(err):
                raise TrainerError(f"torch.compile failed ({described(err)}); "
                                   "run with trainer.compile=false") from err
            raise
    return state.curve


def training_command(overrides: list[str], lr: float) -> str:
    """`python -m trainer OVERRIDES optim.lr=LR`: this run's overrides but those that made it an lr_find run."""
    def key(override: str) -> str:
        return override.lstrip("+~").split("=", 1)[0].split("/", 1)[0]

    kept = [o for o in overrides if not any(key(o) == name or key(o).startswith(f"{name}.")
                                            for name in NOT_FOR_TRAINING)]
    return shlex.join(["python", "-m", "trainer", *kept, f"optim.lr={lr:.1e}"])


def task_overrides() -> list[str]:
    """The command line's overrides, when Hydra runs this task (none when called directly)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def lr_find(cfg: DictConfig, run_dir: Path) -> float | None:
    """Sweep, write lr_find.json and lr_find.png into `run_dir`, print the suggestion; returns it (None when the
    curve is too short to judge)."""
    if launched_by_torchrun():
        raise ConfigError("mode=lr_find runs in one process: start it with python -m trainer, not torchrun")
    from trainer.reporting.plots import lr_find_figure, save_figure
    from trainer.training.train import apply_regularization_to_model

    console = RunConsole(cfg.trainer.progress)
    apply_regularization_to_model(cfg)
    run = build_run(cfg)
    for note in run.notes:  # model.init_from, model.freeze
        console.info(note)
    curve = run_sweep(run, cfg, console)
    suggestion = suggest_lr(curve.lrs, curve.smoothed)
    find = cfg.lr_find
    write_json(run_dir / "lr_find.json", {
        "lrs": curve.lrs, "losses": curve.smoothed, "raw_losses": curve.raw, "suggestion": suggestion,
        "steps": len(curve.lrs), "stopped_early": curve.diverged and len(curve.lrs) < find.num_steps,
        "min_lr": find.min_lr, "max_lr": find.max_lr, "smoothing": find.smoothing,
        "rule": f"steepest descent of the smoothed loss (first {SKIP_START} and last {SKIP_END} points left out)"})
    save_figure(lr_find_figure(curve.lrs, curve.smoothed, curve.raw, suggestion), run_dir / "lr_find.png")
    console.table("lr_find", {"steps": f"{len(curve.lrs)} of {find.num_steps}" + (
        ", stopped: the loss diverged" if curve.diverged else ""), "lr range": f"{find.min_lr:g} .. "
        f"{curve.lrs[-1] if curve.lrs else find.min_lr:.3g}", "best smoothed loss": f"{curve.best:.4g}"})
    if suggestion is None:
        console.info(f"no suggestion: only {len(curve.lrs)} steps before the loss diverged; lower lr_find.min_lr "
                     "or raise lr_find.early_stop_threshold")
    else:
        # with optim.scale_lr_with_batch, training scales the optim.lr it is given: the override is the unscaled lr
        override = suggestion / lr_batch_factor(cfg)
        console.info(f"suggested lr {suggestion:.1e}: {training_command(task_overrides(), override)}")
    console.info(f"wrote {run_dir / 'lr_find.json'} and {run_dir / 'lr_find.png'}")
    return suggestion
