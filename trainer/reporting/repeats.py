"""Repeats in a sweep: runs whose overrides differ only in `seed` (or `data.fold`) are one configuration run
several times, and the sweep summary reports each metric's mean and standard deviation over them.

    python -m trainer -m seed=0,1,2            # one group of three: best_val_acc 0.9861 ± 0.0021, ...
    python -m trainer -m optim=sgd,adamw seed=0,1,2   # two groups of three
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from trainer.reporting.run_files import write_csv

REPEAT_KEYS = ("seed", "data.fold")  # overrides that repeat a configuration rather than change it
METRICS = ("best_val_acc", "test_acc", "final_val_acc")
FIELDS = ("configuration", "over", "runs", *(f"{m}_{stat}" for m in METRICS for stat in ("mean", "std")))


def override_key(override: str) -> str:
    """`+seed=3` -> `seed`."""
    return override.split("=", 1)[0].lstrip("+~")


def repeat_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed jobs grouped by their overrides other than REPEAT_KEYS; for each group of two or more: what
    varies, how many runs, and mean and std (sample standard deviation) of every metric they all report."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("status") != "completed":
            continue
        rest = " ".join(o for o in str(row.get("overrides", "")).split() if override_key(o) not in REPEAT_KEYS)
        groups.setdefault(rest, []).append(row)
    found = []
    for rest, members in groups.items():
        varied = sorted({override_key(o) for m in members for o in m["overrides"].split()
                         if override_key(o) in REPEAT_KEYS})
        if len(members) < 2 or not varied:
            continue
        entry: dict[str, Any] = {"configuration": rest or "(the defaults)", "over": ",".join(varied),
                                 "runs": len(members)}
        for metric in METRICS:
            values = [float(m[metric]) for m in members if m.get(metric) is not None]
            if len(values) == len(members):
                entry |= {f"{metric}_mean": statistics.fmean(values), f"{metric}_std": statistics.stdev(values)}
        found.append(entry)
    return found


def describe_group(group: dict[str, Any]) -> str:
    """One line: `optim=sgd over seed (3 runs): best_val_acc 0.9861 ± 0.0021, test_acc ...`."""
    scores = ", ".join(f"{m} {group[f'{m}_mean']:.4f} ± {group[f'{m}_std']:.4f}" for m in METRICS
                       if f"{m}_mean" in group)
    return f"{group['configuration']} over {group['over']} ({group['runs']} runs): {scores or 'no scores'}"


def write_repeats(sweep_dir: Path, groups: list[dict[str, Any]]) -> Path:
    return write_csv(sweep_dir / "sweep_repeats.csv", groups, FIELDS)
