"""The benchmark's image-folder section (registered in scripts/bench_sections.py as `imagefolder`).

The shared CIFAR-10 subset (../shared/data/cifar-10-batches-py) is written once as JPEGs (PIL, quality 95) into
outputs/benchmark/ as `train/<class>/*.jpg` and `test/<class>/*.jpg`, then for each data.decoder:

- end to end: `python -m trainer data=imagefolder ...` (one epoch of resnet18 at 32 px, batch 128, AdamW, cosine,
  2 loader workers, augment=basic, data.val_dir = the test folder) against the minimal hand-written loop of
  scripts/bench_imagefolder_hand.py on the same settings, both timed as subprocesses, in alternating order;
- the loader alone: the trainer's train loader and the hand loop's, epochs made and thrown away, no model.

data.val_dir is the test folder (as timm's train.py validates on a val folder): both sides train on all 10,000
training images, run one validation pass over the 2,000 test images and write best.pt and last.pt (the trainer
writes the file once and links it under both names, the epoch being the best); the trainer also writes its report,
which the hand loop does not.
Both sides are timed as whole processes (start-up included), and by phase from inside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from statistics import median
from typing import Any

from bench_folder_passes import HAND, TRAINER, hand_spec, loader_epochs, per_image_costs, validation_passes
from bench_jpeg_folder import jpeg_folder
from bench_measure import REPO, Check, Say, Section, Table, check, compose, run_cli, spread, timed

CIFAR_DIR = REPO.parent / "shared" / "data" / "cifar-10-batches-py"  # where the other sections take their data
HAND_SCRIPT = Path(__file__).resolve().parent / "bench_imagefolder_hand.py"
DECODERS = ("pil", "torchvision")

TARGET_END_TO_END = 1.0  # hand loop wall / trainer wall: the trainer at least as fast end to end
TARGET_DECODER = 1.3  # torchvision decoder's loader samples/s over the pil decoder's
TARGET_VALIDATION = 0.95  # the trainer's validation pass against a hand inference_mode loop over the same loader
TARGET_REPORT_S = 1.5  # summary.json's phase_s.report: the report draws what the scoring pass collected

JOB = ("data=imagefolder", "data.num_classes=10", "data.image_size=32", "data.batch_size=128", "data.num_workers=2",
       "model=resnet18", "optim=adamw", "scheduler=cosine", "augment=basic", "trainer.max_epochs=1", "logger=none")
PHASES = ("setup", "train", "validate", "checkpoint", "test", "report", "other")


@dataclass(frozen=True)
class FolderPlan:
    """How much of the image-folder section runs: images per class written, end-to-end runs, loader rounds."""

    train_per_class: int | None  # None: all of the subset's (1,000 a class)
    test_per_class: int | None  # None: all (200 a class)
    runs: int  # end-to-end runs per side and decoder
    loader_rounds: int  # loader-alone epochs per loader, the loaders taking turns
    loader_warmup: int  # batches of epoch 0 before the first timed epoch (starts persistent workers)
    cost_images: int  # images timed one by one for the decode and transform costs


FULL_FOLDER = FolderPlan(train_per_class=None, test_per_class=None, runs=3, loader_rounds=5, loader_warmup=4,
                         cost_images=1000)
QUICK_FOLDER = FolderPlan(train_per_class=40, test_per_class=10, runs=1, loader_rounds=1, loader_warmup=1,
                          cost_images=100)


# ---- the two sides' settings: the trainer's overrides, and the hand loop's spec taken from the same config


def decoder_overrides(decoder: str) -> tuple[str, ...] | str:
    """The override that picks `decoder`, or why this checkout's config cannot run it (a line for the table)."""
    from trainer.schema.data import ImageFolderConfig

    if "decoder" not in {f.name for f in fields(ImageFolderConfig)}:
        return () if decoder == "pil" else "this checkout's data=imagefolder has no data.decoder key"
    try:
        compose(*JOB, "data.train_dir=.", f"data.decoder={decoder}")
    except Exception as err:  # a value the schema refuses: a ConfigError or Hydra's own
        return f"data.decoder={decoder} is refused here: {' '.join(str(err).split())[:160]}"
    return (f"data.decoder={decoder}",)


def trainer_overrides(folder: Path, decoder_args: tuple[str, ...]) -> list[str]:
    return [*JOB, f"data.train_dir={folder / 'train'}", f"data.val_dir={folder / 'test'}", *decoder_args]


# ---- end to end: each side as a subprocess


def trainer_job(overrides: list[str]) -> dict[str, Any]:
    """`python -m trainer OVERRIDES` in a fresh run dir: its process wall seconds, phases and scores."""
    with tempfile.TemporaryDirectory(prefix="benchmark-imagefolder-") as tmp:
        wall, _ = run_cli(*overrides, f"hydra.run.dir={Path(tmp) / 'run'}", timeout=1800)
        summary = json.loads((Path(tmp) / "run" / "summary.json").read_text())
    return {"wall_s": wall, "run_wall_s": summary["wall_s"], "phase_s": summary["phase_s"],
            "train_samples_per_s": summary["train_samples_per_s"], "val_acc": summary.get("best_val_acc")}


def hand_job(overrides: list[str], decoder: str) -> dict[str, Any]:
    """scripts/bench_imagefolder_hand.py on the same job: its process wall seconds, phases and scores."""
    with tempfile.TemporaryDirectory(prefix="benchmark-imagefolder-hand-") as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps(hand_spec(compose(*overrides), decoder, Path(tmp) / "checkpoints")))
        command = [sys.executable, str(HAND_SCRIPT), str(spec), str(result)]
        proc, wall = timed(lambda: subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800))
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"{HAND_SCRIPT.name} exited with {proc.returncode}:\n{tail}")
        out = json.loads(result.read_text())
    return {"wall_s": wall, "run_wall_s": out["wall_s"], "phase_s": out["phase_s"],
            "train_samples_per_s": out["train_samples_per_s"], "val_acc": out["val_acc"]}


def end_to_end(jobs: dict[str, list[str]], runs: int, say: Say) -> dict[str, dict[str, list[dict]]]:
    """Every decoder's two sides `runs` times, the sides' order reversed every other run; the runs by decoder, side."""
    results: dict[str, dict[str, list[dict]]] = {d: {TRAINER: [], HAND: []} for d in jobs}
    for r in range(runs):
        for decoder, overrides in jobs.items():
            for side in ((TRAINER, HAND) if r % 2 == 0 else (HAND, TRAINER)):
                say(f"imagefolder: run {r + 1}/{runs}, decoder={decoder}, {side}")
                job = trainer_job(overrides) if side == TRAINER else hand_job(overrides, decoder)
                job["load_average"] = round(os.getloadavg()[0], 2)  # other work on the machine skews a run
                results[decoder][side].append(job)
                say(f"  {job['wall_s']:.1f} s, {job['train_samples_per_s']:,.0f} train samples/s, load average "
                    f"{job['load_average']}")
    return results


# ---- the tables


def med(jobs: list[dict], key: str) -> float:
    return median(job[key] for job in jobs)


def hand_over_trainer(sides: dict[str, list[dict]]) -> float:
    """The median over the runs of the hand loop's wall over the trainer's in the same run (the two ran back to
    back): above 1, the trainer is faster end to end. A pair shares the machine's load of its minutes."""
    return median(hand["wall_s"] / ours["wall_s"] for ours, hand in zip(sides[TRAINER], sides[HAND], strict=True))


def skipped_rows(table: Table, skips: dict[str, str]) -> None:
    for decoder, reason in skips.items():
        table.rows.append([decoder, "skipped", *["-"] * (len(table.columns) - 2)])
        table.notes.append(f"decoder={decoder} skipped: {reason}")


def end_to_end_tables(results: dict[str, dict[str, list[dict]]], skips: dict[str, str], manifest: dict,
                      runs: int) -> list[Table]:
    train, test = manifest["images"]["train"], manifest["images"]["test"]
    table = Table(f"6. image folder: one epoch of resnet18 at 32 px, trainer vs hand loop, end to end ({train:,} "
                  f"train / {test:,} val JPEGs, batch 128, 2 workers, CPU)",
                  ["decoder", "side", "wall s", "samples/s over the wall", "train samples/s", "val acc",
                   "trainer / hand"])
    phases = Table("6b. image folder: where the time went (seconds, medians)",
                   ["decoder", "side", "start-up", *PHASES])
    for decoder, sides in results.items():
        for side, jobs in sides.items():
            walls = [job["wall_s"] for job in jobs]
            ratio = f"{hand_over_trainer(sides):.3f}" if side == TRAINER else "-"
            table.rows.append([decoder, side, spread(walls, 1), f"{train / median(walls):,.0f}",
                               f"{med(jobs, 'train_samples_per_s'):,.0f}", f"{med(jobs, 'val_acc'):.3f}", ratio])
            start_up = median(job["wall_s"] - job["run_wall_s"] for job in jobs)
            phases.rows.append([decoder, side, f"{start_up:.2f}", *(
                f"{median(job['phase_s'][p] for job in jobs):.2f}" if p in jobs[0]["phase_s"] else "-"
                for p in PHASES)])
    table.notes = [
        f"medians (min-max) of {runs} run(s) per side, each a subprocess timed from launch to exit; the sides "
        "alternate, the order reversed every other run; the JPEGs are in the page cache; torch threads: default",
        "trainer: python -m trainer " + " ".join(JOB) + " data.train_dir=<folder>/train data.val_dir=<folder>/test "
        "[data.decoder=D]: train, validate, best.pt (last.pt a hard link to it), the (absent) test split, report",
        "hand loop: scripts/bench_imagefolder_hand.py: ImageFolder + DataLoader (shuffle, same workers), the same "
        "model class and arguments, the same v2 transforms (resize to image_size / crop_fraction, centre crop, "
        "augment=basic's padded crop and flip, normalise), fused AdamW with the config's lr/betas/eps/decay, "
        "CosineAnnealingLR, one inference_mode validation pass at the trainer's eval batch, then best.pt and "
        "last.pt (model, optimizer, scheduler); no report, no logs",
        "trainer / hand: the median over the runs of the hand loop's wall over the trainer's, the two of a run "
        "back to back (above 1: the trainer is faster end to end)",
    ]
    phases.notes = [
        "trainer: summary.json's phase_s; start-up: process wall - summary.json wall_s (interpreter, imports, "
        "Hydra's compose, exit)",
        "hand loop: its own timers, the same phases; start-up: process wall - its in-process wall (interpreter, "
        "torch and torchvision imports, exit)",
    ]
    skipped_rows(table, skips)
    skipped_rows(phases, skips)
    return [table, phases]


def loader_table(rates: dict[str, dict[str, list[float]]], costs: dict[str, dict[str, float]],
                 skips: dict[str, str], plan: FolderPlan) -> Table:
    table = Table("6c. image folder: the train loader alone (no model), samples/s",
                  ["decoder", "trainer's train loader", "hand loop's DataLoader", "vs pil (trainer's)",
                   "decode us/image", "trainer's transforms us/image", "hand's v2.Compose us/image",
                   "largest v2 ops, us/image"])
    pil = median(rates["pil"][TRAINER]) if "pil" in rates else None
    for decoder, sides in rates.items():
        speedup = f"{median(sides[TRAINER]) / pil:.2f}x" if pil else "-"
        table.rows.append([decoder, spread(sides[TRAINER]), spread(sides[HAND]), speedup,
                           *(f"{costs[decoder][key]:.0f}" for key in ("decode_us", "transform_us",
                                                                       "hand_transform_us")),
                           largest_ops(costs[decoder]["hand_ops_us"])])
    table.notes = [
        f"medians (min-max) of {plan.loader_rounds} whole epoch(s) per loader after a {plan.loader_warmup}-batch "
        "warm-up, the loaders taking turns; batches made by 2 workers (augment=basic) and thrown away",
        "trainer's: run.train_loader as trainer/training/train.py builds it (persistent workers, started in the "
        "warm-up); hand loop's: a plain DataLoader, whose workers start with every epoch (timed)",
        f"us/image: what one loader worker spends per training image (the first {plan.cost_images}, in this "
        "process on one torch thread, as a worker runs): the trainer's ImageFolder loader (data.decoder) and train "
        f"transform ({next(iter(costs.values()), {}).get('transform', '-')}); the hand loop's v2.Compose on the "
        "same decoded images, op by op",
    ]
    skipped_rows(table, skips)
    return table


def largest_ops(ops_us: dict[str, float], count: int = 3) -> str:
    """The `count` costliest transform ops, e.g. `Resize 120, RandomCrop 80, Normalize 40`."""
    ranked = sorted(ops_us.items(), key=lambda item: -item[1])[:count]
    return ", ".join(f"{name.split(':', 1)[1]} {us:.0f}" for name, us in ranked)


def validation_table(seconds: dict[str, dict[str, list[float]]], skips: dict[str, str], rounds: int) -> Table:
    table = Table("6d. image folder: one validation pass over the trainer's val loader (2 workers, eval batch 256)",
                  ["decoder", "trainer's pass, s", "hand inference_mode loop, s", "trainer's speed / hand's"])
    for decoder, sides in seconds.items():
        table.rows.append([decoder, spread(sides[TRAINER], 2), spread(sides[HAND], 2),
                           f"{validation_speed(sides):.3f}"])
    table.notes = [
        f"medians (min-max) of {rounds} pass(es) per side after one untimed pass each, taking turns, over the same "
        "run.val_loader (persistent workers, data.eval_batch_size) and the same untrained model",
        "trainer's: trainer/training/scoring.py's validate_epoch, collecting the report's predictions as a run without "
        "a test split does; hand: scripts/bench_imagefolder_hand.py's validate (torch.inference_mode, "
        "cross-entropy and accuracy read on the host every batch)",
    ]
    skipped_rows(table, skips)
    return table


def validation_speed(sides: dict[str, list[float]]) -> float:
    """The hand loop's median seconds over the trainer's: above 1, the trainer's pass is the faster."""
    return median(sides[HAND]) / median(sides[TRAINER])


def section_checks(results: dict, rates: dict, skips: dict[str, str],
                   validations: dict | None = None) -> list[Check]:
    checks = []
    for decoder in DECODERS:
        name = f"image folder end to end, decoder={decoder} (trainer / hand)"
        ratio = hand_over_trainer(results[decoder]) if decoder in results else None
        checks.append(check(name, ratio, TARGET_END_TO_END, at_least=True, missing="skipped"))
    for decoder in DECODERS:
        report = median(job["phase_s"]["report"] for job in results[decoder][TRAINER]) if decoder in results else None
        checks.append(check(f"phase_s.report, decoder={decoder}", report, TARGET_REPORT_S, at_least=False,
                            unit=" s", missing="skipped"))
    for decoder in DECODERS:
        speed = validation_speed(validations[decoder]) if validations and decoder in validations else None
        checks.append(check(f"validation pass, decoder={decoder} (trainer's speed / hand loop's)", speed,
                            TARGET_VALIDATION, at_least=True, missing="skipped"))
    speedup = (median(rates["torchvision"][TRAINER]) / median(rates["pil"][TRAINER])
               if {"pil", "torchvision"} <= set(rates) else None)
    checks.append(check("torchvision / pil decoder (loader alone)", speedup, TARGET_DECODER, at_least=True,
                        unit="x", missing="skipped"))
    return checks


def skipped_section(table: Table, reason: str) -> Section:
    table.rows.append(["-", f"skipped: {reason}", *["-"] * (len(table.columns) - 2)])
    return Section("imagefolder", [table], section_checks({}, {}, {}), {"skipped": reason})


def bench_imagefolder(plan: Any, say: Say) -> Section:
    """The section: `plan.imagefolder` (a FolderPlan) says how much runs."""
    folder_plan: FolderPlan = plan.imagefolder
    if not (CIFAR_DIR / "batches.meta").is_file():
        return skipped_section(Table("6. image folder: trainer vs hand loop", ["decoder", "result"]),
                               f"no CIFAR-10 batches in {CIFAR_DIR}")
    per_class = {"train": folder_plan.train_per_class, "test": folder_plan.test_per_class}
    folder, manifest = jpeg_folder(CIFAR_DIR, per_class, say)
    jobs, skips = {}, {}
    for decoder in DECODERS:
        args = decoder_overrides(decoder)
        if isinstance(args, str):
            skips[decoder] = args
            say(f"imagefolder: decoder={decoder} skipped: {args}")
        else:
            jobs[decoder] = trainer_overrides(folder, args)
    results = end_to_end(jobs, folder_plan.runs, say)
    rates = loader_epochs(jobs, folder_plan, say)
    costs = {decoder: per_image_costs(jobs[decoder], decoder, folder_plan.cost_images) for decoder in jobs}
    validations = validation_passes(jobs, folder_plan.loader_rounds, say)
    tables = [*end_to_end_tables(results, skips, manifest, folder_plan.runs),
              loader_table(rates, costs, skips, folder_plan),
              validation_table(validations, skips, folder_plan.loader_rounds)]
    raw = {"folder": str(folder), "images": manifest["images"], "plan": asdict(folder_plan), "skipped": skips,
           "end_to_end": results, "loader_samples_per_s": rates, "per_image_us": costs,
           "validation_s": validations}
    return Section("imagefolder", tables, section_checks(results, rates, skips, validations), raw)
