"""The CIFAR-10 speed recipe side by side with the record code it follows (airbench94, the `airbench` package from
PyPI), on the same data and GPU: each side's time and test accuracy, and ours / theirs (target: within 1.3x).

    python3 scripts/bench_airbench.py --data DIR [--json PATH] [--wheels DIR]

- ours: `python -m trainer +experiment=cifar10_speed_cuda data.root=DIR data.val_fraction=0 trainer.report=false`
  in a fresh run dir, as a subprocess; its summary.json (test accuracy with the recipe's flip + translate
  test-time augmentation, phase seconds) and train.log (each epoch's samples/s). data.val_fraction=0 trains on every
  training image, as airbench does (best.pt is then picked on the test split's plain accuracy; with the recipe's
  decaying learning rate that is the last epoch or close to it); trainer.report=false: no figures, which airbench
  does not draw either.
- theirs: `airbench.warmup94()` then `airbench.train94()` in a child process (this script, --airbench-child), on
  DIR's CIFAR-10 batches written as the `cifar10/train.pt` and `cifar10/test.pt` that airbench's CifarLoader reads
  (without them it downloads CIFAR-10 through torchvision); its accuracy by `airbench.evaluate(tta_level=2)`.

The ratio that meets the target compares the same work: ours is the train phase with torch.compile's first-epoch
compile taken out (epoch 1 at the other epochs' median samples/s, from train.log) plus the TTA test pass; theirs is
airbench's own total_time_seconds (whitening set-up, training, TTA evaluation; its warm-up excluded). The process
walls (start-up, data, compile, warm-up, everything) are compared as well. With the full CIFAR-10 (50,000 training
images) in DIR, each side's time also counts as its time to 94% when its accuracy reaches 0.94.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_measure beside this script

from bench_measure import REPO, Table, check

RECIPE = "cifar10_speed_cuda"
RECIPE_FILE = REPO / "configs" / "experiment" / f"{RECIPE}.yaml"
TARGET_RATIO = 1.3  # our time / airbench's, at most
FULL_TRAIN = 50_000
EPOCH_LINE = re.compile(r"epoch\s+(\d+)/\d+\s.*?([\d,.]+) samples/s")
AIRBENCH_COLUMNS = ("run", "epoch", "train_loss", "train_acc", "val_acc", "tta_val_acc", "total_time_seconds")


# ---- the data: the CIFAR-10 python batches, as airbench's CifarLoader stores them


def read_cifar(folder: Path) -> dict[str, Any]:
    """`folder`'s (cifar-10-batches-py) train and test images as N x 32 x 32 x 3 uint8 arrays, labels, class names."""
    import numpy as np

    def load(name: str) -> dict:
        with (folder / name).open("rb") as handle:
            return pickle.load(handle, encoding="latin1")

    def images(batches: list[dict]) -> np.ndarray:
        rows = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # channel-major rows -> HWC

    train = [load(f"data_batch_{i}") for i in range(1, 6)]
    test = [load("test_batch")]
    return {"train_images": images(train), "train_labels": np.concatenate([b["labels"] for b in train]),
            "test_images": images(test), "test_labels": np.asarray(test[0]["labels"]),
            "classes": list(load("batches.meta")["label_names"])}


def write_airbench_data(cifar: Path, target: Path) -> int:
    """`target`/train.pt and test.pt in CifarLoader's format ({'images': N x 32 x 32 x 3 uint8, 'labels',
    'classes'}); returns the number of training images."""
    import torch

    data = read_cifar(cifar)
    target.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        torch.save({"images": torch.from_numpy(data[f"{split}_images"]),
                    "labels": torch.from_numpy(data[f"{split}_labels"].astype("int64")),
                    "classes": data["classes"]}, target / f"{split}.pt")
    return len(data["train_images"])


# ---- theirs: airbench94 in a child process


def parse_airbench_table(text: str) -> dict[str, float]:
    """The final (`eval`) row of the table airbench's train prints: tta_val_acc and total_time_seconds."""
    for line in reversed(text.splitlines()):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == len(AIRBENCH_COLUMNS) and cells[1] == "eval":
            row = dict(zip(AIRBENCH_COLUMNS, cells, strict=True))
            return {"tta_val_acc": float(row["tta_val_acc"]), "total_time_seconds": float(row["total_time_seconds"])}
    return {}


def airbench_child(cifar: Path, workdir: Path, out: Path) -> None:
    """Write the data, warm up, train airbench94 once, score it with its TTA; the figures go to `out` as JSON."""
    import torch

    start = time.perf_counter()
    train_images = write_airbench_data(cifar, workdir / "cifar10")
    os.chdir(workdir)  # airbench's train reads its test set from ./cifar10
    import airbench

    prepared = time.perf_counter()
    airbench.warmup94()
    warmed = time.perf_counter()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        net = airbench.train94()
    torch.cuda.synchronize()
    trained = time.perf_counter()
    print(printed.getvalue(), end="")
    acc = airbench.evaluate(net, airbench.CifarLoader("cifar10", train=False, batch_size=2000), tta_level=2)
    own = parse_airbench_table(printed.getvalue())
    out.write_text(json.dumps({
        "version": getattr(airbench, "__version__", None) or package_version("airbench"),
        "train_images": train_images, "test_acc": acc, "tta": "mirror + translate (tta_level=2)",
        "own_time_s": own.get("total_time_seconds"), "own_tta_val_acc": own.get("tta_val_acc"),
        "prepare_s": prepared - start, "warmup_s": warmed - prepared, "train94_wall_s": trained - warmed,
        "device": torch.cuda.get_device_name()}))


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def run_theirs(cifar: Path, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-airbench-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--airbench-child", str(Path(tmp) / "work"),
                   "--cifar", str(cifar), "--json", str(out)]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - start
        print(proc.stdout, end="")
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            return {"error": f"airbench child exited with {proc.returncode}: {tail}"}
        return {**json.loads(out.read_text()), "wall_s": wall}


# ---- ours: the speed recipe through the CLI


def epoch_rates(log: str) -> list[float]:
    """Each epoch's training samples/s, in epoch order, from a run's train.log."""
    return [float(m.group(2).replace(",", "")) for m in EPOCH_LINE.finditer(log)]


def steady_train_s(train_s: float, rates: list[float]) -> float | None:
    """The train phase as if epoch 1 (where torch.compile compiles) ran at the other epochs' median rate: each
    epoch trains the same images, so its share of the phase is 1 / its rate."""
    if len(rates) < 2 or min(rates) <= 0:
        return None
    steady = median(rates[1:])
    return train_s * (1 / steady + sum(1 / r for r in rates[1:])) / sum(1 / r for r in rates)


def run_ours(data: Path, timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-speed-recipe-") as tmp:
        run_dir = Path(tmp) / "run"
        command = [sys.executable, "-m", "trainer", f"+experiment={RECIPE}", f"data.root={data}",
                   "data.val_fraction=0", "trainer.report=false", f"hydra.run.dir={run_dir}"]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not (run_dir / "summary.json").is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            return {"error": f"python -m trainer +experiment={RECIPE} exited with {proc.returncode}: {tail}"}
        summary = json.loads((run_dir / "summary.json").read_text())
        log = run_dir / "train.log"
        rates = epoch_rates(log.read_text()) if log.is_file() else []
    phases = summary.get("phase_s", {})
    steady = steady_train_s(phases.get("train", 0.0), rates)
    return {"command": " ".join(command[1:-1]), "wall_s": wall, "run_wall_s": summary.get("wall_s"),
            "phase_s": phases, "epoch_samples_per_s": rates, "train_steady_s": steady,
            "test_acc": summary.get("test_acc"), "tta": summary.get("tta"), "best_epoch": summary.get("best_epoch"),
            "epochs": summary.get("epochs"), "train_samples_per_s": summary.get("train_samples_per_s")}


# ---- the comparison


def figures(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
    """Ours / theirs: the like-for-like time (the target's), the same with our compile left in, the process walls."""
    phases = ours.get("phase_s", {})
    own = theirs.get("own_time_s")

    def ratio(mine: float | None, other: float | None) -> float | None:
        return mine / other if mine is not None and other else None

    like = None if ours.get("train_steady_s") is None else ours["train_steady_s"] + phases.get("test", 0.0)
    with_compile = phases["train"] + phases.get("test", 0.0) if "train" in phases else None
    return {"ours_s": like, "ours_with_compile_s": with_compile, "theirs_s": own, "time_ratio": ratio(like, own),
            "time_ratio_with_compile": ratio(with_compile, own),
            "wall_ratio": ratio(ours.get("wall_s"), theirs.get("wall_s"))}


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def comparison_table(ours: dict, theirs: dict, ratios: dict, train_images: int) -> Table:
    full = train_images >= FULL_TRAIN
    table = Table(f"CIFAR-10 speed recipe vs airbench94 ({train_images:,} training images)",
                  ["side", "test acc (TTA)", "train + TTA test s", "with compile s", "process wall s",
                   "time to 94% s" if full else "note"])
    for name, side, mine, compiled in (("ours", ours, ratios["ours_s"], ratios["ours_with_compile_s"]),
                                       ("airbench94", theirs, ratios["theirs_s"], ratios["theirs_s"])):
        if "skipped" in side or "error" in side:
            table.rows.append([name, side.get("skipped") or side["error"].splitlines()[0], "-", "-", "-", "-"])
            continue
        acc = side.get("test_acc")
        last = (seconds(mine) if acc is not None and acc >= 0.94 else "not reached") if full else \
            f"{side.get('epochs', 9.9)} epochs"
        table.rows.append([name, "-" if acc is None else f"{acc:.4f}", seconds(mine), seconds(compiled),
                           seconds(side.get("wall_s")), last])
    table.rows.append(["ours / airbench94", "-", ratio_text(ratios["time_ratio"]),
                       ratio_text(ratios["time_ratio_with_compile"]), ratio_text(ratios["wall_ratio"]), "-"])
    table.notes = [
        "train + TTA test: ours = train phase with epoch 1 (torch.compile's compile) at the other epochs' median "
        "samples/s, plus the TTA test pass; airbench94 = its own total_time_seconds (whitening, training, TTA "
        "evaluation; after airbench.warmup94())",
        "with compile: our train phase as measured; process wall: each side's whole process (start-up, data, "
        "compile or warm-up, per-epoch validation)",
    ]
    return table


def ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def skip_reasons(data: Path, wheels: str) -> tuple[str | None, str | None, str | None]:
    """Why nothing, our side, or airbench's side cannot run here (None: it can)."""
    if not (data / "cifar-10-batches-py").is_dir():
        return f"no cifar-10-batches-py in {data}", None, None
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device", None, None
    ours = None
    if importlib.util.find_spec("hydra") is None:
        ours = "hydra is not importable (install the wheels)"
    elif not RECIPE_FILE.is_file():
        ours = f"no {RECIPE_FILE.relative_to(REPO)}"
    theirs = None if importlib.util.find_spec("airbench") else f"no airbench wheel in {wheels}"
    return None, ours, theirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The CIFAR-10 speed recipe against airbench94 on the same data")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the folder holding cifar-10-batches-py/ (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--wheels", default=os.environ.get("WHEELS_DIR") or "WHEELS",
                        help="the wheels folder airbench was installed from (named in the skip line)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds each side may run (default: %(default)s)")
    parser.add_argument("--airbench-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cifar", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.airbench_child:
        airbench_child(args.cifar, args.airbench_child, args.json)
        return 0
    data = args.data.resolve()
    result: dict[str, Any] = {"data": str(data)}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))

    everything, ours_skip, theirs_skip = skip_reasons(data, args.wheels)
    if everything:
        print(f"skipped: speed recipe and airbench reference ({everything})")
        result["skipped"] = everything
        save()
        return 0
    result["train_images"] = len(read_cifar(data / "cifar-10-batches-py")["train_labels"])
    for side, reason, label, run in (("ours", ours_skip, "speed recipe", run_ours),
                                     ("theirs", theirs_skip, "airbench reference", run_theirs)):
        if reason:
            print(f"skipped: {label} ({reason})")
            result[side] = {"skipped": reason}
        else:
            print(f"running: {label}", flush=True)
            try:
                result[side] = run(data if side == "ours" else data / "cifar-10-batches-py", args.timeout)
            except subprocess.TimeoutExpired:
                result[side] = {"error": f"{label} ran past {args.timeout:.0f} s"}
        save()
    result["ratios"] = figures(result["ours"], result["theirs"])
    table = comparison_table(result["ours"], result["theirs"], result["ratios"], result["train_images"])
    verdict = check("speed recipe / airbench94 time", result["ratios"]["time_ratio"], TARGET_RATIO, at_least=False,
                    unit="x")
    result["check"] = verdict._asdict()
    save()
    show(table)
    print(f"{verdict.name}: {verdict.value} (target {verdict.target}): {verdict.status}")
    return 1 if any("error" in result[side] for side in ("ours", "theirs")) else 0


def show(table: Table) -> None:
    """`table` as aligned plain text (no dependency beyond the standard library)."""
    rows = [table.columns, *table.rows]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(table.columns))]
    print(table.title)
    for row in rows:
        print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    for note in table.notes:
        print(f"  - {note}")


if __name__ == "__main__":
    sys.exit(main())
