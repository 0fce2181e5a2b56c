"""Benchmark the trainer: its hot loop against a hand-written PyTorch loop, its start-up, default job and data paths.

Everything runs in one invocation, so the figures are comparable (same machine, same load, same torch build):

1. overhead  steady-state training samples/s of the trainer's own hot loop (`trainer.training.loop.train_epoch` over the
             data module's train loader, set up as trainer/train.py sets it up) against a minimal hand-written
             loop on the same model, batch, data tensors and optimizer, in alternating rounds (CPU, 32 px).
2. job       `python -m trainer` (the default job) end to end, as a user runs it.
3. startup   `python -m trainer --help` and `--cfg job`, and whether they import torch.
4. data      one MNIST epoch with `data.in_memory=true` against the DataLoader path (0 and 2 workers).
5. gpu       ResNet-50, 224 px, batch 256, bf16 + channels_last, with and without torch.compile (CUDA only).

    .venv/bin/python scripts/benchmark.py               # everything (tens of minutes on 2 CPU cores)
    .venv/bin/python scripts/benchmark.py --quick       # small everything (1-2 minutes)
    .venv/bin/python scripts/benchmark.py --only overhead,startup --json bench.json
    .venv/bin/python scripts/benchmark.py --append      # also add a dated section to BENCHMARKS.md

Each section prints a table, and a final table holds the targets with PASS or MISS. torch is imported only once a
benchmark runs, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from trainer.errors import described

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig
    from torch import nn

    from trainer.training.setup import RunSetup

REPO = Path(__file__).resolve().parent.parent
MNIST_ROOT = REPO.parent / "shared" / "data"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
SECTIONS = ("overhead", "job", "startup", "data", "gpu")

# The summary table's targets.
TARGET_OVERHEAD = 0.97  # trainer samples/s divided by the hand-written loop's
TARGET_HELP_S = 1.0  # `python -m trainer --help`, wall seconds
TARGET_JOB_S = 8.0  # `python -m trainer`, the default job, wall seconds
TARGET_IN_MEMORY = 1.5  # in-memory samples/s divided by the faster DataLoader variant's
MODEL_ALONE = "model alone (no input pipeline)"

OVERHEAD_MODELS = ("simple_cnn", "resnet18")
OVERHEAD_BATCH = 128
GPU_BATCH = 256
GPU_STAGED_BATCHES = 4  # distinct 224-px FakeData batches kept on the GPU (1,024 images, 0.6 GB as float32)


@dataclass(frozen=True)
class Plan:
    """How much of everything runs: the full benchmark or `--quick`."""

    rounds: int  # timed rounds per side, the sides taking turns (overhead, gpu)
    batches: dict[str, int]  # batches per overhead round, by model
    warmup: dict[str, int]  # batches of the one warm-up round per side, by model
    job_runs: int
    startup_runs: int
    data_batches: int | None  # batches in the timed MNIST epoch; None: the whole epoch
    data_warmup: int
    gpu_batches: int
    gpu_warmup: int  # compiles the model when torch.compile is on


FULL = Plan(rounds=5, batches={"simple_cnn": 30, "resnet18": 8}, warmup={"simple_cnn": 5, "resnet18": 2},
            job_runs=5, startup_runs=5, data_batches=None, data_warmup=5, gpu_batches=20, gpu_warmup=5)
QUICK = Plan(rounds=2, batches={"simple_cnn": 4, "resnet18": 1}, warmup={"simple_cnn": 2, "resnet18": 1},
             job_runs=1, startup_runs=2, data_batches=8, data_warmup=2, gpu_batches=5, gpu_warmup=3)


# ---- what a section reports: tables for the console and BENCHMARKS.md, checks for the summary, raw numbers


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def rich(self) -> RichTable:
        table = RichTable(title=self.title, title_justify="left", title_style="bold")
        for i, column in enumerate(self.columns):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in self.rows:
            table.add_row(*(escape(cell) for cell in row))
        return table

    def markdown(self) -> str:
        def line(cells: Iterable[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        lines = [f"### {self.title}", "", line(self.columns), "|" + "---|" * len(self.columns)]
        lines += [line(row) for row in self.rows]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines)


@dataclass
class Check:
    """One line of the summary: a measured value against its target."""

    name: str
    value: str
    target: str
    status: str  # PASS, MISS, n/a, skipped or error


def check(name: str, value: float | None, target: float, *, at_least: bool, unit: str = "",
          missing: str = "n/a") -> Check:
    """PASS when `value` reaches `target` (at least, or at most); `missing` when nothing was measured."""
    target_text = f"{'≥' if at_least else '≤'} {target:g}{unit}"
    if value is None:
        return Check(name, "-", target_text, missing)
    passed = value >= target if at_least else value <= target
    return Check(name, f"{value:.3g}{unit}", target_text, "PASS" if passed else "MISS")


@dataclass
class Section:
    name: str
    tables: list[Table]
    checks: list[Check]
    raw: dict[str, Any]


Say = Callable[[str], None]
Round = Callable[[int, int], tuple[int, float]]  # a side's timed round: (epoch, batches) -> (samples, seconds)


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], digits: int = 0) -> str:
    """`median (min-max)` of a list of rates or times."""
    fmt = f",.{digits}f"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


# ---- the trainer's set-up, in-process: what trainer/train.py builds before its epoch loop


def compose(*overrides: str) -> DictConfig:
    """The config that `python -m trainer OVERRIDES` runs with, composed in-process and validated as the CLI
    validates it."""
    from trainer.cli import compose_config
    from trainer.schema import validate

    cfg = compose_config(overrides)
    validate(cfg)
    return cfg


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

    def round(self, epoch: int, batches: int) -> tuple[int, float]:
        import torch.nn.functional as F

        images, labels, device = self.data.images, self.data.labels, self.data.images.device
        self.model.train()
        synchronize(device)
        start = time.perf_counter()
        for idx in self.data.batch_indices(batches):
            x = images[idx].to(memory_format=self.memory_format)
            y = labels[idx]
            with self.precision.autocast():
                loss = F.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        synchronize(device)
        return batches * self.data.batch_size, time.perf_counter() - start


def build_hand_loop(run: RunSetup, data: StagedData) -> HandLoop:
    """A fresh model of the same architecture with the trainer's initial weights, and the same optimizer: built by
    the trainer's `create_optimizer`, so class, hyperparameters and kernel (fused where torch has one) are identical."""
    from trainer.build import build_model
    from trainer.training.optim import create_optimizer
    from trainer.training.runtime import compile_model

    model = build_model(run.cfg.model)
    model.load_state_dict(run.model.state_dict())  # run.model has not trained yet: the same initial weights
    model = model.to(run.device, memory_format=run.settings.memory_format)
    optimizer = create_optimizer(run.cfg.optim, model)
    tcfg = run.cfg.trainer
    trained = compile_model(model, tcfg.compile, tcfg.compile_mode, tcfg.compile_backend)
    return HandLoop(trained, optimizer, data, run.precision, run.settings.memory_format)


def synchronize(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


def free_memory() -> None:
    """Let go of the previous configuration's models, loader workers and cached GPU memory."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---- 1. overhead: the trainer's hot loop against the hand-written loop (CPU)


def bench_overhead(plan: Plan, say: Say) -> Section:
    import torch

    from trainer.training.setup import build_run

    table = Table(f"1. overhead: trainer vs hand-written loop (CPU, 32 px, batch {OVERHEAD_BATCH}, fake data)",
                  ["model", "trainer samples/s", "trainer loop, tensor batches", "hand-written samples/s",
                   "trainer / hand", "loop only / hand"])
    checks, raw = [], {}
    for name in OVERHEAD_MODELS:
        batches = plan.batches[name]
        say(f"overhead: {name}, {batches} batches a round, {plan.rounds} rounds")
        cfg = compose(f"model={name}", "data=fake", "data.image_size=32", "data.in_channels=3",
                      "data.num_classes=10", f"data.batch_size={OVERHEAD_BATCH}",
                      f"data.train_size={batches * OVERHEAD_BATCH}", "data.in_memory=true", "trainer.device=cpu",
                      "logger=none")
        run = build_run(cfg)  # what trainer/train.py builds before its epoch loop
        data = stage_train_set(run)
        hand = build_hand_loop(run, data)
        rates = alternate({
            "trainer": loader_round(run),
            "trainer loop on tensor batches": tensor_round(run, data),
            "hand-written": hand.round,
        }, warmup=plan.warmup[name], batches=batches, rounds=plan.rounds, say=say)
        trainer = median(rates["trainer"])
        loop_only = median(rates["trainer loop on tensor batches"])
        reference = median(rates["hand-written"])
        table.rows.append([name, spread(rates["trainer"]), spread(rates["trainer loop on tensor batches"]),
                           spread(rates["hand-written"]), f"{trainer / reference:.3f}", f"{loop_only / reference:.3f}"])
        checks.append(check(f"overhead {name} (trainer / hand, CPU)", trainer / reference, TARGET_OVERHEAD,
                            at_least=True))
        raw[name] = {"rates": rates, "ratio": trainer / reference, "loop_only_ratio": loop_only / reference,
                     "batches_per_round": batches, "data_path": f"{type(run.train_loader).__name__} over "
                                                              f"{type(run.datamodule.train_set).__name__}"}
        del run, data, hand
        free_memory()
    table.notes = [
        f"medians (min-max) of {plan.rounds} alternating rounds after one warm-up round each; "
        f"{', '.join(f'{m} {plan.batches[m]}' for m in OVERHEAD_MODELS)} batches a round",
        "trainer: trainer.training.loop.train_epoch over the fake data module's train loader, set up as "
        f"trainer/training/train.py does (data path: {raw.get(OVERHEAD_MODELS[0], {}).get('data_path', '?')})",
        "trainer loop, tensor batches: the same train_epoch fed the hand-written loop's tensor batches, "
        "i.e. the loop's own cost without the data loader",
        "hand-written: X[idx], Y[idx] -> F.cross_entropy(model(x), y) -> zero_grad -> backward -> step, on the "
        "same model (same initial weights) and data tensors, optimizer built by the same create_optimizer "
        "(AdamW, config lr and weight decay)",
        f"torch threads: {torch.get_num_threads()} (torch's default, not set); ResNet-18 with its ImageNet stem",
    ]
    return Section("overhead", [table], checks, raw)


# ---- 2. the default job, end to end


def bench_job(plan: Plan, say: Say) -> Section:
    walls, summaries = [], []
    for i in range(plan.job_runs):
        say(f"default job: run {i + 1}/{plan.job_runs}")
        with tempfile.TemporaryDirectory(prefix="benchmark-job-") as tmp:
            run_dir = Path(tmp) / "run"
            wall, _ = run_cli(f"hydra.run.dir={run_dir}", timeout=900)
            summaries.append(json.loads((run_dir / "summary.json").read_text()))
        walls.append(wall)
    inside = [s["wall_s"] for s in summaries]
    table = Table("2. default job: python -m trainer, end to end", ["what", "seconds", "note"])
    table.rows = [
        ["wall time (subprocess)", spread(walls, 2), f"median (min-max) of {len(walls)} run(s)"],
        ["outside the run", f"{median(walls) - median(inside):.2f}", "Python, torch and Hydra start-up, exit"],
        ["inside the run (summary.json wall_s)", spread(inside, 2), "the phases below"],
    ]
    phase_notes = {"setup": "data, model, optimizer (torch imports torch._dynamo here), loaders",
                   "train": "the epochs' training steps", "validate": "the epochs' validation passes",
                   "checkpoint": "last.pt and best.pt after every epoch", "report": "figures, per-class scores",
                   "other": "metrics files, logging, progress display"}
    for phase, note in phase_notes.items():
        seconds = [s["phase_s"][phase] for s in summaries if phase in s.get("phase_s", {})]
        if seconds:
            table.rows.append([f"  {phase}", spread(seconds, 2), note])
    last = summaries[-1]
    table.notes = [f"last run: best_val_acc {last.get('best_val_acc', float('nan')):.4f}, {last.get('epochs')} epochs, "
                   f"{last.get('train_samples_per_s')} train samples/s, device {last.get('device')}"]
    return Section("job", [table], [check("default job wall time", median(walls), TARGET_JOB_S, at_least=False,
                                          unit=" s")],
                   {"wall_s": walls, "run_wall_s": inside, "summaries": summaries})


def run_cli(*args: str, python_flags: tuple[str, ...] = (), timeout: float = 120) -> tuple[float, str]:
    """Wall seconds of `python -m trainer ARGS` from this repo, and its stderr; a failure raises with its tail."""
    command = [sys.executable, *python_flags, "-m", "trainer", *args]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{shlex.join(command)} exited with {proc.returncode}:\n{tail}")
    return wall, proc.stderr


# ---- 3. CLI start-up


def bench_startup(plan: Plan, say: Say) -> Section:
    table = Table("3. CLI start-up",
                  ["command", "wall s", "torch imported", "largest packages imported (-X importtime)"])
    checks, raw = [], {}
    for args in (["--help"], ["--cfg", "job"]):
        label = "python -m trainer " + " ".join(args)
        say(f"start-up: {label}, {plan.startup_runs} runs")
        walls = [run_cli(*args)[0] for _ in range(plan.startup_runs)]
        _, stderr = run_cli(*args, python_flags=("-X", "importtime"))  # a separate run: importtime slows it
        torch_imported = any(name == "torch" or name.startswith("torch.") for name in all_imports(stderr))
        largest = largest_packages(stderr)
        table.rows.append([label, spread(walls, 2), "yes" if torch_imported else "no",
                           ", ".join(f"{name} {ms:.0f} ms" for name, ms in largest)])
        raw[label] = {"wall_s": walls, "torch_imported": torch_imported, "largest_imports_ms": dict(largest)}
        if args == ["--help"]:
            checks.append(check("python -m trainer --help", median(walls), TARGET_HELP_S, at_least=False, unit=" s"))
    table.notes = [f"medians (min-max) of {plan.startup_runs} runs; torch imported: from `python -X importtime` "
                   "in one more run of the same command"]
    return Section("startup", [table], checks, raw)


def all_imports(importtime_stderr: str) -> list[str]:
    """Every module name in `python -X importtime` output."""
    return [line.split("|")[2].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2 and "imported package" not in line]


def largest_packages(importtime_stderr: str, count: int = 3) -> list[tuple[str, float]]:
    """The root packages (no dot in the name, at any import depth) with the most cumulative import
    milliseconds, the trainer's own package left out: where a command's start-up goes."""
    packages: dict[str, float] = {}
    for line in importtime_stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2 or "imported package" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split("|"))
        if "." not in name and name != "trainer":
            packages[name] = max(packages.get(name, 0.0), int(cumulative) / 1000)
    return sorted(packages.items(), key=lambda item: -item[1])[:count]


# ---- 4. the data path: in-memory against the DataLoader


def bench_data(plan: Plan, say: Say) -> Section:
    from trainer.training.setup import build_run

    table = Table("4. data path: MNIST, simple_cnn, augment=basic augment.flip=false, one epoch",
                  ["variant", "train loader", "samples/s", "epoch s", "in-memory speed-up", "loader alone, samples/s"])
    raw: dict[str, Any] = {}
    if not (MNIST_ROOT / "MNIST" / "raw").is_dir():
        table.rows.append(["all", "-", "skipped", "-", f"no MNIST files in {MNIST_ROOT / 'MNIST' / 'raw'}"])
        return Section("data", [table], [check("in-memory speed-up", None, TARGET_IN_MEMORY, at_least=True,
                                               missing="skipped")], raw)
    base = ("data=mnist", f"data.root={MNIST_ROOT}", "model=simple_cnn", "augment=basic", "augment.flip=false",
            "logger=none")
    variants = {"in-memory (data.in_memory=true)": ("data.in_memory=true", "data.num_workers=0"),
                "DataLoader, 0 workers": ("data.in_memory=false", "data.num_workers=0"),
                "DataLoader, 2 workers": ("data.in_memory=false", "data.num_workers=2")}
    notes, device = [], "?"
    for label, overrides in variants.items():
        cfg = compose(*base, *overrides)
        say(f"data: {label}")
        run = build_run(cfg)  # what trainer/train.py builds before its epoch loop
        device = str(run.device)
        run.datamodule.set_train_epoch(0)
        run.train_epoch(islice(run.train_loader, plan.data_warmup))  # loader workers start here, outside the timing
        run.datamodule.set_train_epoch(1)
        stats = run.train_epoch(islice(run.train_loader, plan.data_batches or len(run.train_loader)))
        epoch_s = len(run.datamodule.train_set) / stats.samples_per_s
        run.datamodule.set_train_epoch(2)  # the input pipeline by itself: batches made, nothing trained
        began, served = time.perf_counter(), 0
        for inputs, _ in islice(run.train_loader, plan.data_batches or len(run.train_loader)):
            served += len(inputs)
        synchronize(run.device)
        raw[label] = {"samples_per_s": stats.samples_per_s, "samples": stats.samples, "seconds": stats.seconds,
                      "epoch_s": epoch_s, "loader": type(run.train_loader).__name__,
                      "loader_samples_per_s": served / (time.perf_counter() - began)}
        if label.startswith("in-memory"):  # the model by itself: the same loop fed ready tensors, no pipeline
            data = stage_train_set(run)
            samples, seconds = tensor_round(run, data)(3, plan.data_batches or len(run.train_loader))
            raw[MODEL_ALONE] = {"samples_per_s": samples / seconds, "samples": samples, "seconds": seconds,
                                "epoch_s": len(run.datamodule.train_set) * seconds / samples,
                                "loader": "staged tensors", "loader_samples_per_s": None}
            del data
        del run
        free_memory()
    in_memory = raw.get("in-memory (data.in_memory=true)")
    model_alone = raw.get(MODEL_ALONE)
    loaders = {label: r for label, r in raw.items() if label.startswith("DataLoader")}
    for label, r in raw.items():
        speedup = "-" if in_memory is None or r is in_memory or r is model_alone else \
            f"{in_memory['samples_per_s'] / r['samples_per_s']:.2f}x"
        pipeline = "-" if r["loader_samples_per_s"] is None else f"{r['loader_samples_per_s']:,.0f}"
        table.rows.append([label, r["loader"], f"{r['samples_per_s']:,.0f}", f"{r['epoch_s']:.2f}", speedup, pipeline])
    best_loader = max((r["samples_per_s"] for r in loaders.values()), default=None)
    speedup_value = in_memory["samples_per_s"] / best_loader if in_memory and best_loader else None
    if model_alone and best_loader:
        notes.append(f"the most any input pipeline could gain here: model alone / faster DataLoader = "
                     f"{model_alone['samples_per_s'] / best_loader:.2f}x (the model's own step bounds the epoch)")
    timed = f"its first {plan.data_batches} batches" if plan.data_batches else "the whole epoch"
    table.notes = [
        f"in-process train_epoch on {device}: epoch 2 timed over {timed}, after {plan.data_warmup} warm-up "
        "batches of epoch 1 (process start-up, data decoding and the loader workers' start are not timed)",
        "epoch s: the 8,000 training images at the measured samples/s",
        *notes,
        "the summary's speed-up is in-memory over the faster DataLoader variant",
        "loader alone: the same batches of epoch 3 made and thrown away, no model: the input pipeline's own rate",
        f"{MODEL_ALONE}: the trainer's loop over one epoch of the in-memory batches, staged beforehand as "
        "tensors (no input pipeline at all): the speed of the model's own steps",
    ]
    raw["speedup_vs_best_dataloader"] = speedup_value
    return Section("data", [table], [check("in-memory speed-up (MNIST epoch)", speedup_value, TARGET_IN_MEMORY,
                                           at_least=True, unit="x")], raw)


# ---- 5. GPU: ResNet-50, bf16, channels_last, with and without torch.compile


def bench_gpu(plan: Plan, say: Say, compile_mode: str) -> Section:
    import torch

    from trainer.training.setup import build_run

    title = f"5. GPU: ResNet-50, 224 px, batch {GPU_BATCH}, bf16 + channels_last"
    columns = ["torch.compile", "trainer samples/s", "trainer, no per-step finite check", "hand-written samples/s",
               "trainer / hand", "no check / hand"]
    if not torch.cuda.is_available():
        table = Table(title, columns, [["-", "skipped: no CUDA device", "-", "-", "-", "-"]])
        return Section("gpu", [table], [check("GPU overhead (trainer / hand)", None, TARGET_OVERHEAD,
                                              at_least=True, missing="skipped")], {})
    table = Table(f"{title} on {torch.cuda.get_device_name()}", columns)
    checks, raw = [], {}
    for mode in (None, compile_mode):
        label = f"mode={mode}" if mode else "off"
        say(f"gpu: torch.compile {label}")
        cfg = compose("model=resnet50", "data=fake", "data.image_size=224", "data.in_channels=3",
                      "data.num_classes=1000", f"data.batch_size={GPU_BATCH}",
                      f"data.train_size={GPU_STAGED_BATCHES * GPU_BATCH}", "trainer.device=cuda",
                      "data.in_memory=true", "trainer.precision=bf16", "trainer.channels_last=true",
                      f"trainer.compile={str(mode is not None).lower()}", f"trainer.compile_mode={mode or 'default'}",
                      "logger=none")
        run = build_run(cfg)  # what trainer/train.py builds before its epoch loop
        data = stage_train_set(run)
        hand = build_hand_loop(run, data)
        sides: dict[str, Round] = {"trainer": tensor_round(run, data),
                                   "trainer, no per-step check": tensor_round(run, data, per_step_check=False),
                                   "hand-written": hand.round}
        rates = alternate(sides, warmup=plan.gpu_warmup, batches=plan.gpu_batches, rounds=plan.rounds, say=say)
        trainer, reference = median(rates["trainer"]), median(rates["hand-written"])
        unchecked = median(rates["trainer, no per-step check"])
        table.rows.append([label, spread(rates["trainer"]), spread(rates["trainer, no per-step check"]),
                           spread(rates["hand-written"]), f"{trainer / reference:.3f}", f"{unchecked / reference:.3f}"])
        checks.append(check(f"GPU overhead, compile {label} (trainer / hand)", trainer / reference,
                            TARGET_OVERHEAD, at_least=True))
        raw[label] = {"rates": rates, "ratio": trainer / reference}
        del run, data, hand, sides
        free_memory()
    table.notes = [
        f"medians (min-max) of {plan.rounds} alternating rounds of {plan.gpu_batches} batches after a "
        f"{plan.gpu_warmup}-batch warm-up (which compiles)",
        f"both sides read the same {GPU_STAGED_BATCHES * GPU_BATCH:,} FakeData images staged on the GPU, one index "
        "a batch (FakeData decodes per sample on the CPU, which would bound both); inputs and model in "
        "channels_last, Precision('bf16').autocast() on both sides, optimizer from create_optimizer (fused AdamW)",
        "no per-step finite check: train_epoch(is_finite=None), i.e. trainer.check_nonfinite_every_step=false",
    ]
    return Section("gpu", [table], checks, raw)


# ---- the report: machine, summary, BENCHMARKS.md, JSON


def machine_info() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "python": platform.python_version(), "load_average": round(os.getloadavg()[0], 2)}


def machine_line(machine: dict[str, Any]) -> str:
    load = f"load average {machine['load_average']} at start"
    if "load_average_end" in machine:
        load += f", {machine['load_average_end']} at end"
    return (f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} ({machine['torch_threads']} "
            f"threads), GPU: {machine['gpu'] or 'none'}, Python {machine['python']}, {load}")


def summary_table(sections: list[Section], quick: bool = False) -> Table:
    table = Table("summary", ["check", "value", "target", "result"],
                  [[c.name, c.value, c.target, c.status] for s in sections for c in s.checks])
    if quick:
        table.notes = ["--quick times a few batches and runs: a check tells that the section works, not the "
                       "figure; record figures from a full run"]
    return table


def print_rich(console: Console, table: Table) -> None:
    rich_table = table.rich()
    if table.title == "summary":
        for row, c in zip(rich_table.rows, (r[3] for r in table.rows), strict=True):
            row.style = {"PASS": "green", "MISS": "red", "error": "bold red"}.get(c)
    console.print(rich_table)
    for note in table.notes:
        console.print(f"  [dim]{escape(note)}[/dim]")
    console.print()


def append_markdown(path: Path, sections: list[Section], machine: dict[str, Any], command: str) -> None:
    """A dated section at the end of `path`: the machine, every table, then the summary."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"## {stamp}: `{command}`", f"Machine: {machine_line(machine)}."]
    parts += [table.markdown() for section in sections for table in section.tables]
    parts.append(summary_table(sections, quick="--quick" in command.split()).markdown())
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(existing.rstrip("\n") + "\n\n" + "\n\n".join(parts) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the trainer against a hand-written PyTorch loop, and time its CLI start-up, default "
                    "job and data paths, in one invocation.")
    parser.add_argument("--quick", action="store_true", help="small everything (about 1-2 minutes on 2 CPU cores)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--append", nargs="?", const=BENCHMARKS_MD, type=Path, metavar="PATH",
                        help=f"add a dated section with the results to PATH (default: {BENCHMARKS_MD.name})")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the raw numbers to PATH")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode of the GPU section's compiled run (default: %(default)s)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown or not args.only:
        parser.error(f"--only: unknown section(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # benchmark this checkout's trainer package
    console = Console()
    if not console.is_terminal:  # piped or captured: rich would wrap the tables at 80 columns
        console = Console(width=150)
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()

    def say(message: str) -> None:
        console.print(f"[dim]{time.perf_counter() - started:6.1f}s  {escape(message)}[/dim]")

    say("importing torch")
    machine = machine_info()
    console.print(f"Machine: {escape(machine_line(machine))}\n")
    benches: dict[str, Callable[[], Section]] = {
        "overhead": lambda: bench_overhead(plan, say),
        "job": lambda: bench_job(plan, say),
        "startup": lambda: bench_startup(plan, say),
        "data": lambda: bench_data(plan, say),
        "gpu": lambda: bench_gpu(plan, say, args.compile_mode),
    }
    sections: list[Section] = []
    for name in SECTIONS:
        if name not in args.only:
            continue
        try:
            section = benches[name]()
        except Exception as err:  # one broken section must not lose the others' figures
            console.print(f"[bold red]{name} failed:[/bold red] {escape(traceback.format_exc())}")
            section = Section(name, [Table(f"{name}: failed", ["error"], [[described(err)]])],
                              [Check(name, "-", "-", "error")], {"error": traceback.format_exc()})
        sections.append(section)
        for table in section.tables:
            print_rich(console, table)
    print_rich(console, summary_table(sections, quick=args.quick))
    machine["load_average_end"] = round(os.getloadavg()[0], 2)  # other processes skew every figure: say how busy
    say(f"done in {time.perf_counter() - started:.0f} s (load average now {machine['load_average_end']})")

    command = shlex.join(["scripts/benchmark.py", *(sys.argv[1:] if argv is None else argv)])
    if args.append:
        append_markdown(args.append, sections, machine, command)
        console.print(f"appended to {args.append}")
    if args.json:
        args.json.write_text(json.dumps({"command": command, "date": datetime.now().isoformat(timespec="seconds"),
                                         "machine": machine, "sections": {s.name: s.raw for s in sections},
                                         "summary": [asdict(c) for s in sections for c in s.checks]},
                                        indent=2, default=str))
        console.print(f"wrote {args.json}")
    return 1 if any(c.status == "error" for s in sections for c in s.checks) else 0


if __name__ == "__main__":
    sys.exit(main())
