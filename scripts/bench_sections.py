"""The benchmark's sections (run by scripts/benchmark.py; the GPU one is in scripts/bench_gpu.py, the image-folder one
in scripts/bench_imagefolder.py): each measures, then returns its Section: a table, its checks against the targets
below, and the raw numbers."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from bench_gpu import bench_gpu
from bench_imagefolder import FULL_FOLDER, QUICK_FOLDER, FolderPlan, bench_imagefolder
from bench_measure import (
    REPO,
    Round,
    Say,
    Section,
    StagedData,
    Table,
    check,
    compose,
    fake_data_config,
    free_memory,
    imports,
    largest_packages,
    loader_round,
    race,
    race_row,
    run_cli,
    skipped,
    spread,
    stage_train_set,
    tensor_round,
    timed,
    versus_hand,
)

if TYPE_CHECKING:
    from trainer.training.setup import RunSetup

DATA_ROOT = REPO.parent / "shared" / "data"  # MNIST/ for the data section, cifar-10-batches-py/ for the GPU one

# The summary table's targets.
TARGET_OVERHEAD = 0.97  # trainer samples/s divided by the hand-written loop's
TARGET_HELP_S = 1.0  # `python -m trainer --help`, wall seconds
TARGET_JOB_S = 8.0  # `python -m trainer`, the default job, wall seconds
TARGET_IN_MEMORY = 1.5  # in-memory samples/s divided by the faster DataLoader variant's
# The GPU section's targets are in scripts/bench_gpu.py (trainer / hand there: TARGET_GPU_OVERHEAD, 0.98).

OVERHEAD_MODELS = ("simple_cnn", "resnet18")
OVERHEAD_BATCH = 128

IN_MEMORY = "in-memory (data.in_memory=true)"
MODEL_ALONE = "model alone (no input pipeline)"
DATA_BASE = ("data=mnist", "model=simple_cnn", "augment=basic", "augment.flip=false", "logger=none")
DATA_VARIANTS = {IN_MEMORY: ("data.in_memory=true", "data.num_workers=0"),
                 "DataLoader, 0 workers": ("data.in_memory=false", "data.num_workers=0"),
                 "DataLoader, 2 workers": ("data.in_memory=false", "data.num_workers=2")}


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
    compile_mode: str = "default"  # torch.compile mode of the GPU section's compiled run
    imagefolder: FolderPlan = FULL_FOLDER  # the image-folder section's sizes (scripts/bench_imagefolder.py)
    data_root: Path = DATA_ROOT  # the data and GPU sections' data.root (benchmark.py --data)


FULL = Plan(rounds=5, batches={"simple_cnn": 30, "resnet18": 8}, warmup={"simple_cnn": 5, "resnet18": 2},
            job_runs=5, startup_runs=5, data_batches=None, data_warmup=5, gpu_batches=20, gpu_warmup=5)
QUICK = Plan(rounds=2, batches={"simple_cnn": 4, "resnet18": 1}, warmup={"simple_cnn": 2, "resnet18": 1},
             job_runs=1, startup_runs=2, data_batches=8, data_warmup=2, gpu_batches=5, gpu_warmup=3,
             imagefolder=QUICK_FOLDER)


# ---- 1. overhead: the trainer's hot loop against the hand-written loop (CPU)


def overhead_sides(run: RunSetup, data: StagedData) -> dict[str, Round]:
    return {"trainer": loader_round(run), "trainer loop on tensor batches": tensor_round(run, data)}


def bench_overhead(plan: Plan, say: Say) -> Section:
    import torch

    table = Table(f"1. overhead: trainer vs hand-written loop (CPU, 32 px, batch {OVERHEAD_BATCH}, fake data)",
                  ["model", "trainer samples/s", "trainer loop, tensor batches", "hand-written samples/s",
                   "trainer / hand", "loop only / hand"])
    checks, raw = [], {}
    for name in OVERHEAD_MODELS:
        batches = plan.batches[name]
        say(f"overhead: {name}, {batches} batches a round, {plan.rounds} rounds")
        cfg = fake_data_config(name, 32, 10, OVERHEAD_BATCH, batches, "cpu")
        rates, data_path = race(cfg, overhead_sides, warmup=plan.warmup[name], batches=batches, rounds=plan.rounds,
                                say=say)
        ratio, loop_only_ratio = versus_hand(rates).values()
        table.rows.append(race_row(name, rates))
        checks.append(check(f"overhead {name} (trainer / hand, CPU)", ratio, TARGET_OVERHEAD, at_least=True))
        raw[name] = {"rates": rates, "ratio": ratio, "loop_only_ratio": loop_only_ratio,
                     "batches_per_round": batches, "data_path": data_path}
    table.notes = [
        f"medians (min-max) of {plan.rounds} alternating rounds after one warm-up round each; "
        f"{', '.join(f'{m} {plan.batches[m]}' for m in OVERHEAD_MODELS)} batches a round",
        "trainer: trainer.training.loop.train_epoch over the fake data module's train loader, set up as "
        f"trainer/training/train.py does (data path: {raw[OVERHEAD_MODELS[0]]['data_path']})",
        "trainer loop, tensor batches: the same train_epoch fed the hand-written loop's tensor batches, "
        "i.e. the loop's own cost without the data loader",
        "hand-written: X[idx], Y[idx] -> F.cross_entropy(model(x), y) -> zero_grad -> backward -> step, on the "
        "same model (same initial weights) and data tensors, optimizer built by the same create_optimizer "
        "(AdamW, config lr and weight decay)",
        f"torch threads: {torch.get_num_threads()} (torch's default, not set); ResNet-18 with its ImageNet stem",
    ]
    return Section("overhead", [table], checks, raw)


# ---- 2. the default job, end to end


JOB_PHASES = {"setup": "data, model, optimizer (torch imports torch._dynamo here), loaders",
              "train": "the epochs' training steps", "validate": "the epochs' validation passes",
              "checkpoint": "last.pt and best.pt after every epoch", "report": "figures, per-class scores",
              "other": "metrics files, logging, progress display"}


def default_job() -> tuple[float, dict[str, Any]]:
    """Wall seconds of `python -m trainer` in a fresh run directory, and the run's summary.json."""
    with tempfile.TemporaryDirectory(prefix="benchmark-job-") as tmp:
        run_dir = Path(tmp) / "run"
        wall, _ = run_cli(f"hydra.run.dir={run_dir}", timeout=900)
        return wall, json.loads((run_dir / "summary.json").read_text())


def bench_job(plan: Plan, say: Say) -> Section:
    from trainer.reporting.console import format_value

    walls, summaries = [], []
    for i in range(plan.job_runs):
        say(f"default job: run {i + 1}/{plan.job_runs}")
        wall, summary = default_job()
        walls.append(wall)
        summaries.append(summary)
    inside = [s["wall_s"] for s in summaries]
    table = Table("2. default job: python -m trainer, end to end", ["what", "seconds", "note"], [
        ["wall time (subprocess)", spread(walls, 2), f"median (min-max) of {len(walls)} run(s)"],
        ["outside the run", f"{median(walls) - median(inside):.2f}", "Python, torch and Hydra start-up, exit"],
        ["inside the run (summary.json wall_s)", spread(inside, 2), "the phases below"],
    ])
    for phase, note in JOB_PHASES.items():
        seconds = [s["phase_s"][phase] for s in summaries if phase in s.get("phase_s", {})]
        if seconds:
            table.rows.append([f"  {phase}", spread(seconds, 2), note])
    last = {key: format_value(summaries[-1].get(key))
            for key in ("best_val_acc", "epochs", "train_samples_per_s", "device")}
    table.notes = [f"last run: best_val_acc {last['best_val_acc']}, {last['epochs']} epochs, "
                   f"{last['train_samples_per_s']} train samples/s, device {last['device']}"]
    return Section("job", [table], [check("default job wall time", median(walls), TARGET_JOB_S, at_least=False,
                                          unit=" s")],
                   {"wall_s": walls, "run_wall_s": inside, "summaries": summaries})


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
        imported = imports(stderr)
        torch_imported = any(name == "torch" or name.startswith("torch.") for name, _ in imported)
        largest = largest_packages(imported)
        table.rows.append([label, spread(walls, 2), "yes" if torch_imported else "no",
                           ", ".join(f"{name} {ms:.0f} ms" for name, ms in largest)])
        raw[label] = {"wall_s": walls, "torch_imported": torch_imported, "largest_imports_ms": dict(largest)}
        if args == ["--help"]:
            checks.append(check("python -m trainer --help", median(walls), TARGET_HELP_S, at_least=False, unit=" s"))
    table.notes = [f"medians (min-max) of {plan.startup_runs} runs; torch imported: from `python -X importtime` "
                   "in one more run of the same command"]
    return Section("startup", [table], checks, raw)


# ---- 4. the data path: in-memory against the DataLoader


def epoch_figures(run: RunSetup, samples: int, seconds: float, loader: str,
                  loader_rate: float | None) -> dict[str, Any]:
    return {"samples_per_s": samples / seconds, "samples": samples, "seconds": seconds,
            "epoch_s": len(run.datamodule.train_set) * seconds / samples, "loader": loader,
            "loader_samples_per_s": loader_rate}


def time_data_path(run: RunSetup, batches: int, warmup: int) -> dict[str, Any]:
    """Epoch 2's first `batches` through the trainer's loop after `warmup` batches of epoch 1 (the loader workers
    start there, outside the timing); then epoch 3's batches made and thrown away: the input pipeline alone."""
    epoch = loader_round(run)
    epoch(0, warmup)
    samples, seconds = epoch(1, batches)
    run.datamodule.set_train_epoch(2)
    served, loader_s = timed(lambda: sum(len(inputs) for inputs, _ in islice(run.train_loader, batches)), run.device)
    return epoch_figures(run, samples, seconds, type(run.train_loader).__name__, served / loader_s)


def data_row(label: str, figures: dict[str, Any], in_memory: dict[str, Any]) -> list[str]:
    speedup = (f"{in_memory['samples_per_s'] / figures['samples_per_s']:.2f}x" if label.startswith("DataLoader")
               else "-")
    pipeline = "-" if figures["loader_samples_per_s"] is None else f"{figures['loader_samples_per_s']:,.0f}"
    return [label, figures["loader"], f"{figures['samples_per_s']:,.0f}", f"{figures['epoch_s']:.2f}", speedup,
            pipeline]


def bench_data(plan: Plan, say: Say) -> Section:
    from trainer.training.setup import build_run

    table = Table("4. data path: MNIST, simple_cnn, augment=basic augment.flip=false, one epoch",
                  ["variant", "train loader", "samples/s", "epoch s", "in-memory speed-up", "loader alone, samples/s"])
    speedup_check = "in-memory speed-up (MNIST epoch)"
    mnist_raw = plan.data_root / "MNIST" / "raw"
    if not mnist_raw.is_dir():
        return skipped("data", table, f"no MNIST files in {mnist_raw}", speedup_check, TARGET_IN_MEMORY)
    raw: dict[str, Any] = {}
    for label, overrides in DATA_VARIANTS.items():
        say(f"data: {label}")
        run = build_run(compose(*DATA_BASE, f"data.root={plan.data_root}", *overrides))  # train.py's set-up
        batches, device = plan.data_batches or len(run.train_loader), str(run.device)
        raw[label] = time_data_path(run, batches, plan.data_warmup)
        if label == IN_MEMORY:  # the model by itself: the same loop fed ready tensors, no pipeline
            samples, seconds = tensor_round(run, stage_train_set(run))(3, batches)
            raw[MODEL_ALONE] = epoch_figures(run, samples, seconds, "staged tensors", None)
        del run
        free_memory()
    table.rows = [data_row(label, figures, raw[IN_MEMORY]) for label, figures in raw.items()]
    best_loader = max(figures["samples_per_s"] for label, figures in raw.items() if label.startswith("DataLoader"))
    raw["speedup_vs_best_dataloader"] = raw[IN_MEMORY]["samples_per_s"] / best_loader
    timed_part = f"its first {plan.data_batches} batches" if plan.data_batches else "the whole epoch"
    table.notes = [
        f"in-process train_epoch on {device}: epoch 2 timed over {timed_part}, after {plan.data_warmup} warm-up "
        "batches of epoch 1 (process start-up, data decoding and the loader workers' start are not timed)",
        "epoch s: the 8,000 training images at the measured samples/s",
        f"the most any input pipeline could gain here: model alone / faster DataLoader = "
        f"{raw[MODEL_ALONE]['samples_per_s'] / best_loader:.2f}x (the model's own step bounds the epoch)",
        "the summary's speed-up is in-memory over the faster DataLoader variant",
        "loader alone: the same batches of epoch 3 made and thrown away, no model: the input pipeline's own rate",
        f"{MODEL_ALONE}: the trainer's loop over one epoch of the in-memory batches, staged beforehand as "
        "tensors (no input pipeline at all): the speed of the model's own steps",
    ]
    return Section("data", [table], [check(speedup_check, raw["speedup_vs_best_dataloader"], TARGET_IN_MEMORY,
                                           at_least=True, unit="x")], raw)


SECTIONS: dict[str, Callable[[Plan, Say], Section]] = {
    "overhead": bench_overhead, "job": bench_job, "startup": bench_startup, "data": bench_data, "gpu": bench_gpu,
    "imagefolder": bench_imagefolder,
}
