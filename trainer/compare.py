"""`python -m trainer.compare RUN_DIR [RUN_DIR ...]`: runs side by side, and their val-accuracy curves overlaid.

Reads only what runs leave on disk (.hydra/overrides.yaml, summary.json, metrics.csv), so runs from any
machine or sweep can be compared; the table shows only the overrides that differ between them.
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


def compare_table(run_dirs: list[Path]) -> Table:
    overrides = [read_overrides(d) for d in run_dirs]
    keys = differing_overrides(overrides)
    table = Table(title=f"{len(run_dirs)} runs", title_justify="left")
    table.add_column("run", style="bold cyan")
    for key in keys:
        table.add_column(key)
    for column in SUMMARY_COLUMNS:
        table.add_column(column, justify="right")
    for run_dir, run_overrides in zip(run_dirs, overrides, strict=True):
        summary = read_summary(run_dir)
        table.add_row(str(run_dir), *(run_overrides.get(key, "-") for key in keys),
                      *(format_value(summary.get(column)) for column in SUMMARY_COLUMNS))
    return table


def plot_val_acc(run_dirs: list[Path], out: Path) -> Path:
    from trainer.reporting.plots import new_figure, save_figure

    figure, axes = new_figure(8, 5)
    ax = axes[0][0]
    for run_dir in run_dirs:
        epochs, acc = read_val_acc(run_dir)
        if epochs:
            ax.plot(epochs, acc, marker="o", label=str(run_dir))
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
    missing = [str(d) for d in args.run_dirs
               if not (d / "summary.json").is_file() and not (d / "metrics.csv").is_file()]
    if missing:
        print(f"error: not a run dir (no summary.json or metrics.csv): {', '.join(missing)}", file=sys.stderr)
        return EXIT_USER_ERROR
    console = Console(highlight=False)
    console.print(compare_table(args.run_dirs))
    console.print(f"val accuracy curves: {plot_val_acc(args.run_dirs, args.out)}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
