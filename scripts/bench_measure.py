"""What the benchmark's sections (scripts/bench_sections.py) measure with: the result types, timing and medians,
the trainer's run built in-process, the hand-written reference loop, and `python -m trainer` in a subprocess.

torch is imported inside the functions only, so that `scripts/benchmark.py --help` answers at once.
"""

from __future__ import annotations

import gc
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig
    from torch import nn

    from trainer.training.setup import RunSetup

REPO = Path(__file__).resolve().parent.parent
HAND = "hand-written"  # the reference side of every race

T = TypeVar("T")
Say = Callable[[str], None]
Round = Callable[[int, int], tuple[int, float]]  # a side's timed round: (epoch, batches) -> (samples, seconds)


# ---- what a section reports: tables (rendered by scripts/benchmark.py), checks for the summary, raw numbers


@dataclass
class Table:
    """One result table, as cells: printed with rich on the console, written as markdown to BENCHMARKS.md."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Check(NamedTuple):
    """One row of the summary table: a measured value against its target."""

    name: str
    value: str
    target: str
    status: str  # PASS, MISS, n/a, skipped or error


@dataclass
class Section:
    name: str
    tables: list[Table]
    checks: list[Check]
    raw: dict[str, Any]


def check(name: str, value: float | None, target: float, *, at_least: bool, unit: str = "",
          missing: str = "n/a") -> Check:
    """PASS when `value` reaches `target` (at least, or at most); `missing` when nothing was measured."""
    target_text = f"{'≥' if at_least else '≤'} {target:g}{unit}"
    if value is None:
        return Check(name, "-", target_text, missing)
    passed = value >= target if at_least else value <= target
    return Check(name, f"{value:.3g}{unit}", target_text, "PASS" if passed else "MISS")


def skipped(name: str, table: Table, reason: str, check_name: str, target: float) -> Section:
    """A section that cannot run on this machine: one row that says why, and its check `skipped`."""
    table.rows.append(["-", f"skipped: {reason}", *["-"] * (len(table.columns) - 2)])
    return Section(name, [table], [check(check_name, None, target, at_least=True, missing="skipped")], {})


# ---- timing and medians


def spread(values: list[float], digits: int = 0) -> str:
    """`median (min-max)` of a list of rates or times."""
    fmt = f",.{digits}f"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def timed(work: Callable[[], T], device: torch.device | None = None) -> tuple[T, float]:
    """`work()`'s result and its wall seconds, including the work it queued on `device` (CUDA)."""
    synchronize(device)
    start = time.perf_counter()
    result = work()
    synchronize(device)
    return result, time.perf_counter() - start


def free_memory() -> None:
    """Let go of the previous configuration's models, loader workers and cached GPU memory."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- the trainer's set-up, in-process: what trainer/training/train.py builds before its epoch loop


def compose(*overrides: str) -> DictConfig:
    """The config that `python -m trainer OVERRIDES` runs with, validated as the CLI validates it."""
    from trainer.cli import compose_config
    from trainer.schema import validate

    cfg = compose_config(overrides)
    validate(cfg)
    return cfg


def fake_data_config(model: str, image_size: int, num_classes: int, batch_size: int, batches: int, device: str,
                     *overrides: str) -> DictConfig:
    """`model` on `batches` batches of 3-channel FakeData, held in memory (the overhead and GPU races)."""
    return compose(f"model={model}", "data=fake", f"data.image_size={image_size}", "data.in_channels=3",
                   f"data.num_classes={num_classes}", f"data.batch_size={batch_size}",
                   f"data.train_size={batches * batch_size}", "data.in_memory=true", f"trainer.device={device}",
                   "logger=none", *overrides)


def tensor_round(run: RunSetup, data: StagedData, per_step_check: bool = True) -> Round:
    """Rounds of the trainer's loop fed `data`'s tensor batches, as the hand-written loop is fed: the loop's own
    cost, without the data loader. `per_step_check=False` is trainer.check_nonfinite_every_step=false."""
    run = run if per_step_check else replace(run, settings=replace(run.settings, is_finite=None))

    def run_round(epoch: int, batches: int) -> tuple[int, float]:
        stats = run.train_epoch(data.batches(batches))
        return stats.samples, stats.seconds

    return run_round


def loader_round(run: RunSetup) -> Round:
    """Epochs (or their first `batches`) of the real train loader, as the trainer's epoch loop runs them."""

    def run_round(epoch: int, batches: int) -> tuple[int, float]:
        run.datamodule.set_train_epoch(epoch)
        stats = run.train_epoch(islice(run.train_loader, batches))
        run.scheduler.step_epoch(stats.loss)  # after the epoch, outside the timed loop, as in train.py
        return stats.samples, stats.seconds

    return run_round


# ---- the reference: the same training set as two tensors, and the minimal loop anyone would write by hand


@dataclass
class StagedData:
    """The training set as one image tensor and one label tensor on the training device."""

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    generator: torch.Generator

    def batch_indices(self, count: int) -> Iterator[torch.Tensor]:
        """`count` batches of random sample indices: a fresh permutation every pass over the set."""
        import torch

        per_pass = len(self.images) // self.batch_size
        order = torch.empty(0)
        for i in range(count):
            if i % per_pass == 0:
                order = torch.randperm(len(self.images), generator=self.generator, device=self.images.device)
            start = (i % per_pass) * self.batch_size
            yield order[start:start + self.batch_size]

    def batches(self, count: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The trainer's loop fed like the hand-written loop (no data loader): one index per batch."""
        for idx in self.batch_indices(count):
            yield self.images[idx], self.labels[idx]


def stage_train_set(run: RunSetup) -> StagedData:
    """One epoch of the trainer's own train loader, concatenated: exactly the tensors its loop receives
    (normalised, on its device), whichever data path the data module takes."""
    import torch

    run.datamodule.set_train_epoch(0)
    images, labels = zip(*run.train_loader, strict=True)
    generator = torch.Generator(device=run.device).manual_seed(run.cfg.seed)
    return StagedData(torch.cat(images).to(run.device), torch.cat(labels).to(run.device),
                      run.datamodule.batch_size, generator)


@dataclass
class HandLoop:
    """The minimal PyTorch training loop: index a batch, forward, cross-entropy, zero_grad, backward, step."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: StagedData
    precision: Any  # trainer.training.runtime.Precision: its autocast, as the trainer's side uses it
    memory_format: torch.memory_format
    scaler: torch.amp.GradScaler | None = None  # fp16 (precision 16): the gradient scaler anyone would add

    def round(self, epoch: int, batches: int) -> tuple[int, float]:
        self.model.train()
        _, seconds = timed(lambda: self.steps(batches), self.data.images.device)
        return batches * self.data.batch_size, seconds

    def steps(self, batches: int) -> None:
        import torch.nn.functional as F

        for idx in self.data.batch_indices(batches):
            x = self.data.images[idx].to(memory_format=self.memory_format)
            y = self.data.labels[idx]
            with self.precision.autocast():
                loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
                self.optimizer.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()


def build_hand_loop(run: RunSetup, data: StagedData) -> HandLoop:
    """A fresh model of the same architecture with the trainer's initial weights, and the same optimizer: built by
    the trainer's `create_optimizer`, so class, hyperparameters and kernel (fused where torch has one) are identical;
    a gradient scaler of its own where the trainer's run has one (fp16)."""
    from trainer.build import build_model
    from trainer.training.optim import create_optimizer
    from trainer.training.runtime import compile_model

    model = build_model(run.cfg.model)
    model.load_state_dict(run.model.state_dict())  # run.model has not trained yet: the same initial weights
    model = model.to(run.device, memory_format=run.settings.memory_format)
    optimizer = create_optimizer(run.cfg.optim, model)
    tcfg = run.cfg.trainer
    trained = compile_model(model, tcfg.compile, tcfg.compile_mode, tcfg.compile_backend)
    scaler = run.precision.grad_scaler() if run.scaler.is_enabled() else None
    return HandLoop(trained, optimizer, data, run.precision, run.settings.memory_format, scaler)


# ---- a race: the trainer's sides against the hand-written loop, in alternating rounds


def alternate(sides: dict[str, Round], *, warmup: int, batches: int, rounds: int, say: Say) -> dict[str, list[float]]:
    """samples/s of each side in every timed round, after one warm-up round each.

    The sides take turns, in reverse order every other round, so that a drift in machine load (other processes,
    clock changes) falls on all of them alike; the caller compares medians.
    """
    for name, run_round in sides.items():
        say(f"warm-up: {name}, {warmup} batches")
        run_round(0, warmup)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            samples, seconds = sides[name](r + 1, batches)
            rates[name].append(samples / seconds)
        say(f"round {r + 1}/{rounds}: " + ", ".join(f"{name} {rates[name][-1]:,.0f}/s" for name in sides))
    return rates


def race(cfg: DictConfig, trainer_sides: Callable[[RunSetup, StagedData], dict[str, Round]], *, warmup: int,
         batches: int, rounds: int, say: Say,
         wrap: Callable[[str, Round], Round] | None = None) -> tuple[dict[str, list[float]], str]:
    """The run that `cfg` makes (built as trainer/training/train.py builds it), its train set staged as tensors,
    `trainer_sides(run, staged)` and the hand-written loop on the same weights, data and optimizer, timed by
    `alternate`; returns their samples/s by side (the hand-written loop last) and the run's data path.
    `wrap(side, round)`, when given, wraps every side's rounds (the GPU section reads peak memory there)."""
    from trainer.training.setup import build_run

    run = build_run(cfg)
    data = stage_train_set(run)
    sides = {**trainer_sides(run, data), HAND: build_hand_loop(run, data).round}
    if wrap is not None:
        sides = {name: wrap(name, run_round) for name, run_round in sides.items()}
    data_path = f"{type(run.train_loader).__name__} over {type(run.datamodule.train_set).__name__}"
    rates = alternate(sides, warmup=warmup, batches=batches, rounds=rounds, say=say)
    del run, data, sides  # the models and loader workers go before the next configuration is built
    free_memory()
    return rates, data_path


def versus_hand(rates: dict[str, list[float]]) -> dict[str, float]:
    """Each trainer side's median samples/s divided by the hand-written loop's."""
    hand = median(rates[HAND])
    return {side: median(values) / hand for side, values in rates.items() if side != HAND}


def race_row(label: str, rates: dict[str, list[float]]) -> list[str]:
    """`label`, every side's median (min-max) samples/s, then every trainer side's ratio to the hand-written loop."""
    return [label, *(spread(values) for values in rates.values()),
            *(f"{ratio:.3f}" for ratio in versus_hand(rates).values())]


# ---- python -m trainer in a subprocess


def run_cli(*args: str, python_flags: tuple[str, ...] = (), timeout: float = 120) -> tuple[float, str]:
    """Wall seconds of `python -m trainer ARGS` from this repo, and its stderr; a failure raises with its tail."""
    command = [sys.executable, *python_flags, "-m", "trainer", *args]
    proc, wall = timed(lambda: subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout))
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{shlex.join(command)} exited with {proc.returncode}:\n{tail}")
    return wall, proc.stderr


def imports(importtime_stderr: str) -> list[tuple[str, int]]:
    """(module, cumulative microseconds) of every import in `python -X importtime` output."""
    rows = []
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2 and "imported package" not in line:
            _, cumulative, name = (part.strip() for part in line.split("|"))
            rows.append((name, int(cumulative)))
    return rows


def largest_packages(imported: list[tuple[str, int]], count: int = 3) -> list[tuple[str, float]]:
    """The root packages (no dot in the name, at any import depth) with the most cumulative import
    milliseconds, the trainer's own package left out: where a command's start-up goes."""
    packages: dict[str, float] = {}
    for name, cumulative in imported:
        if "." not in name and name != "trainer":
            packages[name] = max(packages.get(name, 0.0), cumulative / 1000)
    return sorted(packages.items(), key=lambda item: -item[1])[:count]
