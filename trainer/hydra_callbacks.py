"""Hydra callbacks: a writable run dir before Hydra writes into it, and a summary table at the end of a sweep."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from trainer.errors import EXIT_SWEEP_JOB_FAILED, EXIT_USER_ERROR, described
from trainer.reporting.run_files import write_csv, write_json

SUMMARY_FIELDS = ("rank", "job", "status", "best_val_acc", "final_val_acc", "epochs", "wall_s", "overrides",
                  "error")


@dataclass(frozen=True)
class FailedJob:
    """What a sweep job returns instead of its objective when it failed (sweepers record the trial as failed)."""

    error: str


def _require_writable(folder: str) -> None:
    """Create `folder` and write a probe file in it; otherwise one line on stderr and exit code 2."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        print(f"error: cannot write the run dir {folder}: {err.strerror or err}; "
              "choose another with hydra.run.dir=... (or paths.output_root=...)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


class RequireWritableOutput(Callback):
    """Fail with a clear line, not Hydra's traceback, when the run or sweep dir cannot be written."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_writable(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_writable(config.hydra.sweep.dir)


def job_record(config: DictConfig, job_return: Any) -> dict[str, Any]:
    """One sweep job's outcome: its overrides, status and error line, and the key figures of its summary.json."""
    from hydra.core.utils import JobStatus

    run_dir = Path(config.hydra.runtime.output_dir)
    record: dict[str, Any] = {"job": int(config.hydra.job.num), "overrides": " ".join(job_return.overrides or []),
                              "status": "completed", "error": ""}
    if job_return.status == JobStatus.FAILED:
        record |= {"status": "failed", "error": described(job_return._return_value)}
    elif isinstance(job_return.return_value, FailedJob):
        record |= {"status": "failed", "error": job_return.return_value.error}
    summary_path = run_dir / "summary.json"
    if record["status"] == "completed" and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        record |= {key: summary.get(key) for key in ("best_val_acc", "final_val_acc", "epochs", "wall_s")}
    return record


def sweep_rows(sweep_dir: Path, since: float | None = None) -> list[dict[str, Any]]:
    """Every job's record under `sweep_dir`, best first (by best_val_acc), failed jobs last, ranked.

    `since` (a time.time()) leaves out records an earlier sweep left in a reused sweep dir.
    """
    records = []
    for path in sweep_dir.glob("*/job.json"):
        if since is not None and path.stat().st_mtime < since - 1:
            continue
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # a job killed while writing it
            job = int(path.parent.name) if path.parent.name.isdigit() else -1
            records.append({"job": job, "status": "failed", "overrides": "", "error": f"unreadable {path.name}"})
    done = sorted((r for r in records if r["status"] == "completed"),
                  key=lambda r: (-(r.get("best_val_acc") if r.get("best_val_acc") is not None else -1.0), r["job"]))
    failed = sorted((r for r in records if r["status"] != "completed"), key=lambda r: r["job"])
    return [{"rank": i if r["status"] == "completed" else "", **r} for i, r in enumerate(done + failed, start=1)]


def write_sweep_summary(sweep_dir: Path, rows: list[dict[str, Any]]) -> Path:
    return write_csv(sweep_dir / "sweep_summary.csv", rows, SUMMARY_FIELDS)


def print_sweep_table(rows: list[dict[str, Any]], path: Path) -> None:
    """Best first; the overrides every job shares go in the caption, each row shows what sets it apart."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    per_job = [row["overrides"].split() for row in rows]
    shared = set.intersection(*(set(o) for o in per_job)) if len(rows) > 1 else set()
    table = Table(title=f"sweep: {len(rows)} job(s), best first  ({path})", title_justify="left",
                  caption=("every job: " + " ".join(o for o in per_job[0] if o in shared)) if shared else None,
                  caption_justify="left")
    for name in ("#", "job", "overrides", "best_val_acc", "epochs", "wall_s", "status"):
        table.add_column(name, overflow="fold")
    for row, overrides in zip(rows, per_job, strict=True):
        row = {**row, "overrides": " ".join(_short(o) for o in overrides if o not in shared)}
        acc = row.get("best_val_acc")
        status = "[red]failed[/red]: " + escape(row["error"]) if row["status"] != "completed" else "ok"
        table.add_row(str(row["rank"]), str(row["job"]), escape(row["overrides"]) or "(none)",
                      "" if acc is None else f"{acc:.4f}", str(row.get("epochs") or ""),
                      "" if row.get("wall_s") is None else f"{row['wall_s']:.1f}", status)
    Console(highlight=False).print(table)


class SweepSummary(Callback):
    """After every sweep job, `job.json` in its dir; when the sweep ends, `sweep_summary.csv` and a table.

    Jobs may run in other processes (joblib, submitit), so each job records itself and the end reads them all.
    A sweep in which any job failed exits with code 1 once every job has run and the table is printed.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if str(config.hydra.mode) != "RunMode.MULTIRUN":
            return
        write_json(Path(config.hydra.runtime.output_dir) / "job.json", job_record(config, job_return))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = sweep_rows(sweep_dir, since=getattr(self, "started", None))
        if not rows:
            return
        path = write_sweep_summary(sweep_dir, rows)
        failed = [row for row in rows if row["status"] != "completed"]
        try:
            print_sweep_table(rows, path)
        finally:  # Hydra turns a callback's exceptions into warnings: the exit code must not depend on the table
            if failed:
                print(f"error: {len(failed)} of {len(rows)} sweep job(s) failed (see {path})", file=sys.stderr)
                sys.exit(EXIT_SWEEP_JOB_FAILED)


def _short(override: str) -> str:
    """`optim.lr=0.0008468008575248334` as `optim.lr=0.000847` for the table (the CSV keeps every digit)."""
    key, sep, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    short = f"{number:.3g}"
    return f"{key}{sep}{short}" if sep and len(short) < len(value) else override
