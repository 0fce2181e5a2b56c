"""The plain files every run leaves: metrics.csv (one row per epoch) and summary.json."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from trainer.training.checkpoint import atomic_write


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """Rewrite the whole file from the history, so a resumed run never duplicates or loses a row."""
    if not history:
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(path, lambda handle: handle.write(text.getvalue().encode()))


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda handle: handle.write((json.dumps(data, indent=2) + "\n").encode()))
