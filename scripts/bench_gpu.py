"""The benchmark's GPU section (registered in scripts/bench_sections.py as `gpu`; it runs on a CUDA device only).

1. ResNet-50 at 224 px, batch 256, channels_last: the trainer's hot loop against the minimal hand-written loop
   (bench_measure.race: same weights, staged data and optimizer, alternating rounds) in bf16, eager and with
   torch.compile, and in fp16 with the gradient scaler (both sides scale), eager; peak GPU memory of each side.
2. The data path on the GPU: one epoch of ResNet-18 (CIFAR stem) on the shared CIFAR-10 subset with augment=basic,
   `data.in_memory=true` (batches made on the GPU) against the DataLoader (0 and 8 workers); peak memory of each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench_measure import (
    HAND,
    Round,
    Say,
    Section,
    StagedData,
    Table,
    check,
    compose,
    fake_data_config,
    free_memory,
    loader_round,
    race,
    spread,
    tensor_round,
    versus_hand,
)

if TYPE_CHECKING:
    from bench_sections import Plan

    from trainer.training.setup import RunSetup

TARGET_GPU_OVERHEAD = 0.98  # trainer samples/s / hand-written loop's, ResNet-50 bf16 channels_last, eager and compiled
TARGET_GPU_IN_MEMORY = 1.5  # in-memory samples/s / the faster DataLoader variant's (as the CPU data section's)

GPU_BATCH = 256
GPU_STAGED_BATCHES = 4  # distinct 224-px FakeData batches kept on the GPU (1,024 images, 0.6 GB as float32)
NO_CHECK = "trainer, no per-step check"
GIB = 2**30

CIFAR_BATCH = 512
CIFAR_BASE = ("data=cifar10", "data.val_fraction=0", f"data.batch_size={CIFAR_BATCH}", "model=resnet18",
              "model.stem=cifar", "augment=basic", "trainer.device=cuda", "trainer.precision=bf16",
              "trainer.channels_last=true", "logger=none")
IN_MEMORY = "in-memory (data.in_memory=true)"
CIFAR_VARIANTS = {IN_MEMORY: ("data.in_memory=true", "data.num_workers=0"),
                  "DataLoader, 0 workers": ("data.in_memory=false", "data.num_workers=0"),
                  "DataLoader, 8 workers": ("data.in_memory=false", "data.num_workers=8")}


def resnet_rows(plan: Plan) -> dict[str, tuple[str, str | None]]:
    """Each ResNet-50 row's label: (trainer.precision, torch.compile mode or None for eager)."""
    return {"bf16, eager": ("bf16", None), f"bf16, compile mode={plan.compile_mode}": ("bf16", plan.compile_mode),
            "fp16 + GradScaler, eager": ("16", None)}


def gpu_sides(run: RunSetup, data: StagedData) -> dict[str, Round]:
    return {"trainer": tensor_round(run, data), NO_CHECK: tensor_round(run, data, per_step_check=False)}


def peak_tracker(peaks: dict[str, int]) -> Callable[[str, Round], Round]:
    """A `race(wrap=...)` that keeps each side's highest torch.cuda.max_memory_allocated over its rounds."""
    import torch

    def wrap(name: str, run_round: Round) -> Round:
        def tracked(epoch: int, batches: int) -> tuple[int, float]:
            torch.cuda.reset_peak_memory_stats()
            result = run_round(epoch, batches)
            peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated())
            return result

        return tracked

    return wrap


def gib(values: list[int]) -> str:
    return " / ".join(f"{value / GIB:.1f}" for value in values)


def bench_resnet50(plan: Plan, say: Say) -> tuple[Table, list, dict[str, Any]]:
    import torch

    from trainer.reporting.console import format_value

    table = Table(f"5. GPU: ResNet-50, 224 px, batch {GPU_BATCH}, channels_last, on {torch.cuda.get_device_name()}",
                  ["precision, torch.compile", "trainer samples/s", "trainer, no per-step finite check",
                   "hand-written samples/s", "trainer / hand", "no check / hand", "peak GiB: trainer / hand"])
    checks, raw = [], {}
    for label, (precision, mode) in resnet_rows(plan).items():
        say(f"gpu: ResNet-50 {label}")
        cfg = fake_data_config("resnet50", 224, 1000, GPU_BATCH, GPU_STAGED_BATCHES, "cuda",
                               f"trainer.precision={precision}", "trainer.channels_last=true",
                               f"trainer.compile={str(mode is not None).lower()}",
                               f"trainer.compile_mode={mode or 'default'}")
        peaks: dict[str, int] = {}
        rates, _ = race(cfg, gpu_sides, warmup=plan.gpu_warmup, batches=plan.gpu_batches, rounds=plan.rounds,
                        say=say, wrap=peak_tracker(peaks))
        ratios = versus_hand(rates)
        table.rows.append([label, *(spread(values) for values in rates.values()),
                           *(f"{ratio:.3f}" for ratio in ratios.values()), gib([peaks["trainer"], peaks[HAND]])])
        if precision == "bf16":
            checks.append(check(f"GPU overhead, ResNet-50 {label} (trainer / hand)", ratios["trainer"],
                                TARGET_GPU_OVERHEAD, at_least=True))
        raw[label] = {"rates": rates, "ratio": ratios["trainer"], "no_check_ratio": ratios[NO_CHECK],
                      "peak_bytes": peaks, "precision": precision, "compile_mode": mode}
    table.notes = [
        f"medians (min-max) of {plan.rounds} alternating rounds of {plan.gpu_batches} batches after a "
        f"{plan.gpu_warmup}-batch warm-up (which compiles)",
        f"both sides read the same {format_value(GPU_STAGED_BATCHES * GPU_BATCH)} FakeData images staged on the GPU, "
        "one index a batch (FakeData decodes per sample on the CPU, which would bound both); inputs and model in "
        "channels_last, the run's Precision autocast on both sides, optimizer from create_optimizer (fused AdamW)",
        "fp16: the trainer's GradScaler against the hand loop's own scale -> backward -> step -> update; no target "
        "is set for it",
        "no per-step finite check: train_epoch(is_finite=None), i.e. trainer.check_nonfinite_every_step=false",
        "peak: torch.cuda.max_memory_allocated over a side's rounds; it counts everything resident (both sides' "
        "models and optimizer states, the staged images) plus that side's own activations",
    ]
    return table, checks, raw


def time_cifar_epoch(run: RunSetup, warmup: int) -> dict[str, Any]:
    """Epoch 1 of the train loader through the trainer's loop after `warmup` batches of epoch 0 (the loader's
    workers start there, and cuDNN picks its kernels), with the peak GPU memory of the timed epoch."""
    import torch

    epoch = loader_round(run)
    epoch(0, warmup)
    torch.cuda.reset_peak_memory_stats()
    samples, seconds = epoch(1, len(run.train_loader))
    return {"samples_per_s": samples / seconds, "samples": samples, "seconds": seconds,
            "loader": type(run.train_loader).__name__, "peak_bytes": torch.cuda.max_memory_allocated()}


def bench_cifar_data(plan: Plan, say: Say) -> tuple[Table, list, dict[str, Any]]:
    from trainer.training.setup import build_run

    table = Table(f"5b. GPU data path: CIFAR-10 subset, ResNet-18 (CIFAR stem), batch {CIFAR_BATCH}, bf16 + "
                  "channels_last, augment=basic, one epoch",
                  ["variant", "train loader", "samples/s", "epoch s", "in-memory speed-up", "peak GiB"])
    speedup_check = "in-memory speed-up (CIFAR-10 epoch, GPU)"
    cifar = plan.data_root / "cifar-10-batches-py"
    if not cifar.is_dir():
        table.rows.append(["-", f"skipped: no CIFAR-10 batches in {cifar}", *["-"] * 4])
        return table, [check(speedup_check, None, TARGET_GPU_IN_MEMORY, at_least=True, unit="x", missing="skipped")], {}
    raw: dict[str, Any] = {}
    for label, overrides in CIFAR_VARIANTS.items():
        say(f"gpu data: {label}")
        run = build_run(compose(*CIFAR_BASE, f"data.root={plan.data_root}", *overrides))
        raw[label] = time_cifar_epoch(run, plan.gpu_warmup)
        del run
        free_memory()
    best_loader = max(figures["samples_per_s"] for label, figures in raw.items() if label != IN_MEMORY)
    speedup = raw[IN_MEMORY]["samples_per_s"] / best_loader
    for label, figures in raw.items():
        gain = f"{raw[IN_MEMORY]['samples_per_s'] / figures['samples_per_s']:.2f}x" if label != IN_MEMORY else "-"
        table.rows.append([label, figures["loader"], f"{figures['samples_per_s']:,.0f}", f"{figures['seconds']:.2f}",
                           gain, gib([figures["peak_bytes"]])])
    raw["speedup_vs_best_dataloader"] = speedup
    table.notes = [
        f"in-process train_epoch: epoch 1 timed whole ({raw[IN_MEMORY]['samples']:,} images), after "
        f"{plan.gpu_warmup} warm-up batches of epoch 0 (workers start, cuDNN picks kernels)",
        "augment=basic (padded random crop and flip): per sample in the DataLoader's workers, per batch on the GPU "
        "in memory; data.val_fraction=0 (every train image trains)",
        "peak: torch.cuda.max_memory_allocated over the timed epoch",
    ]
    return table, [check(speedup_check, speedup, TARGET_GPU_IN_MEMORY, at_least=True, unit="x")], raw


def bench_gpu(plan: Plan, say: Say) -> Section:
    import torch

    if not torch.cuda.is_available():
        tables = [Table("5. GPU: ResNet-50, 224 px, batch 256, channels_last",
                        ["precision, torch.compile", "trainer samples/s", "hand-written samples/s", "trainer / hand"],
                        [["-", "skipped: no CUDA device", "-", "-"]]),
                  Table("5b. GPU data path: CIFAR-10 subset", ["variant", "samples/s"],
                        [["-", "skipped: no CUDA device"]])]
        names = [f"GPU overhead, ResNet-50 {label} (trainer / hand)" for label, (precision, _) in
                 resnet_rows(plan).items() if precision == "bf16"]
        checks = [check(name, None, TARGET_GPU_OVERHEAD, at_least=True, missing="skipped") for name in names]
        checks.append(check("in-memory speed-up (CIFAR-10 epoch, GPU)", None, TARGET_GPU_IN_MEMORY, at_least=True,
                            unit="x", missing="skipped"))
        return Section("gpu", tables, checks, {"skipped": "no CUDA device"})
    resnet, resnet_checks, resnet_raw = bench_resnet50(plan, say)
    data, data_checks, data_raw = bench_cifar_data(plan, say)
    return Section("gpu", [resnet, data], resnet_checks + data_checks, {"resnet50": resnet_raw, "cifar10": data_raw})
