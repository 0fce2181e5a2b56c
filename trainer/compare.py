"""`python -m trainer.compare RUN_DIR [RUN_DIR ...]`: runs side by side, and their val-accuracy curves overlaid.

Reads only what runs leave on disk (.hydra/overrides.yaml, summary.json, metrics.csv), so runs from any
machine or sweep can be compared; the table shows only the overrides that differ between them, and each run is
labelled by its values of those (`optim=sgd seed=1`), in the table and in the plot's legend. A sweep dir stands
for its runs, and files among the arguments (a glob over a sweep dir also matches its sweep_summary.csv and
multirun.yaml) are passed over.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trainer.errors import EXIT_OK, EXIT_USER_ERROR
from trainer.reporting.console import format_value

SUMMARY_COLUMNS = ("best_val_acc", "test_acc", "final_val_acc", "epochs", "wall_s", "train_samples_per_s")


def read_overrides(run_dir: Path) -> dict[str, str]:
    """`key=value` overrides from Hydra's .hydra/overrides.yaml (a YAML list of strings), as a dict."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    items = OmegaConf.to_container(OmegaConf.load(path)) or []
    pairs = (str(item).split("=", 1) for item in items)
    return {key: value for key, value in (p if len(p) == 2 else (p[0], "") for p in pairs)
            if not key.startswith("hydra.")}


def read_summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def read_val_acc(run_dir: Path) -> tuple[list[int], list[float]]:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return [], []
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return [int(r["epoch"]) for r in rows], [float(r["val_acc"]) for r in rows]


def differing_overrides(overrides: list[dict[str, str]]) -> list[str]:
    """The override keys whose value is not the same in every run (absent counts as a value)."""
    keys = sorted({key for run in overrides for key in run})
    return [key for key in keys if len({run.get(key) for run in overrides}) > 1]


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Each run by the overrides that tell it apart (`optim=sgd seed=1`); its dir name when none do, or when two
    runs would get the same label."""
    overrides = [read_overrides(d) for d in run_dirs]
    keys = differing_overrides(overrides)
    labels = [" ".join(f"{key}={run.get(key, '-')}" for key in keys) for run in overrides]
    if not keys or len(set(labels)) < len(labels):
        return [f"{label} ({d.name})".strip() if keys else d.name for label, d in zip(labels, run_dirs, strict=True)]
    return labels


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """The run dirs `paths` name: files are passed over, and a sweep dir (no run files of its own, run dirs
    inside) stands for its runs, in name order."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            continue
        children = sorted(p for p in path.iterdir() if p.is_dir() and is_run_dir(p))
        found += [path] if is_run_dir(path) or not children else children
    return found


def is_run_dir(path: Path) -> bool:
    return (path / "summary.json").is_file() or (path / "metrics.csv").is_file()


def compare_table(run_dirs: list[Path]) -> Table:
    table = Table(title=f"{len(run_dirs)} runs", title_justify="left")
    table.add_column("run", style="bold cyan")
    table.add_column("dir")
    for column in SUMMARY_COLUMNS:
        table.add_column(column, justify="right")
    for run_dir, label in zip(run_dirs, run_labels(run_dirs), strict=True):
        summary = read_summary(run_dir)
        table.add_row(label, run_dir.name, *(format_value(summary.get(column)) for column in SUMMARY_COLUMNS))
    return table


def plot_val_acc(run_dirs: list[Path], out: Path) -> Path:
    from trainer.reporting.plots import new_figure, save_figure

    figure, axes = new_figure(8, 5)
    ax = axes[0][0]
    for run_dir, label in zip(run_dirs, run_labels(run_dirs), strict=True):
        epochs, acc = read_val_acc(run_dir)
        if epochs:
            ax.plot(epochs, acc, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy")
    ax.set_title("validation accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(figure, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.compare", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--out", type=Path, default=Path("compare.png"), help="the plot (default ./compare.png)")
    args = parser.parse_args(argv)
    absent = [str(path) for path in args.run_dirs if not path.exists()]
    if absent:
        print(f"error: no such run dir: {', '.join(absent)}", file=sys.stderr)
        return EXIT_USER_ERROR
    run_dirs = expand_run_dirs(args.run_dirs)
    missing = [str(d) for d in run_dirs if not is_run_dir(d)]
    if missing or not run_dirs:
        named = ", ".join(missing or map(str, args.run_dirs))
        print(f"error: not a run dir (no summary.json or metrics.csv): {named}", file=sys.stderr)
        return EXIT_USER_ERROR
    console = Console(highlight=False)
    console.print(compare_table(run_dirs))
    console.print(f"val accuracy curves: {plot_val_acc(run_dirs, args.out)}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
