"""Hydra callbacks: claim a new or free run dir before Hydra writes into it, and a summary table after a sweep."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from trainer import run_dirs
from trainer.environment import launched_by_torchrun, torchrun_rank
from trainer.errors import EXIT_SWEEP_JOB_FAILED, TrainerError, described
from trainer.reporting.run_files import write_csv, write_json

SUMMARY_FIELDS = ("rank", "job", "status", "monitor", "best_score", "best_val_acc", "test_acc", "final_val_acc",
                  "epochs", "wall_s", "overrides", "error")


@dataclass(frozen=True)
class FailedJob:
    """What a sweep job returns instead of its objective when it failed (sweepers record the trial as failed)."""

    error: str


@dataclass(frozen=True)
class PrunedJob:
    """What a job of an Optuna search returns when its trial was pruned: it stopped early, by design (not a
    failure: the sweep summary lists it as `pruned`; the sweeper tells the study so)."""

    epoch: int  # the last epoch it trained
    best_score: float | None  # its best trainer.monitor value by then


def _stop(err: TrainerError) -> NoReturn:
    """One `error:` line on stderr and the error's exit code (a callback's exceptions would be mere warnings)."""
    print(f"error: {err}", file=sys.stderr)
    sys.exit(err.exit_code)


def _claim(folder: Path, explicit: bool, kind: str, refuse: Callable[[], None]) -> Path:
    """Claim the run or sweep dir (`kind`): a dir the user named is first checked for a live holder and then by
    `refuse` (it holds results); a default one is a new, unique dir. A refusal is one line and its exit code."""
    try:
        if explicit:
            who = run_dirs.holder(folder)
            if who is not None:
                raise run_dirs.RunDirInUse(run_dirs.in_use_line(folder, who, kind))
            refuse()
        return run_dirs.claim(folder, fresh=not explicit, kind=kind)
    except TrainerError as err:
        _stop(err)


def _user_set(config: DictConfig, key: str) -> bool:
    """Whether `hydra.<key>` comes from the user (an override, or a value without `${now:...}`), not the default."""
    overrides = OmegaConf.to_container(config.hydra.overrides.hydra)
    if any(re.match(rf"^[+~]*hydra\.{re.escape(key)}=", str(o)) for o in overrides):
        return True
    group, name = key.split(".")
    raw = OmegaConf.to_container(config.hydra[group], resolve=False)[name]
    return "${now:" not in str(raw)


def override_value(value: str) -> str:
    """`value` as the right-hand side of a Hydra override: as it is when Hydra's grammar reads it unquoted (word
    characters, `.`, `/`, `+`, `-`), else single-quoted. Inside quotes Hydra reads a backslash as an escape only
    before a quote (or the closing quote), so only the quotes and the backslashes just before them are escaped."""
    if re.fullmatch(r"[\w./+-]+", value):
        return value
    escaped = re.sub(r"(\\*)('|$)", lambda match: match[1] * 2 + ("\\'" if match[2] else ""), value)
    return f"'{escaped}'"


class ClaimRunDir(Callback):
    """Before Hydra writes anything: refuse a dir that holds a run or is in use, then create and lock the dir.

    A default (timestamped) dir is always a new one (`-1`, `-2`... when the name is taken); a refused run exits with
    code 2 after one line and leaves the dir as it was. Under torchrun only rank 0 owns (and locks) the run dir.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if launched_by_torchrun() and torchrun_rank() != 0:
            return
        explicit = _user_set(config, "run.dir")
        run_dir = Path(str(config.hydra.run.dir))
        claimed = _claim(run_dir, explicit, "run",
                         lambda: run_dirs.refuse_to_overwrite(run_dir, str(config.mode), config.trainer.resume))
        if claimed != run_dir:
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.run.dir = str(claimed)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        explicit = _user_set(config, "sweep.dir")
        sweep_dir = Path(str(config.hydra.sweep.dir))
        claimed = _claim(sweep_dir, explicit, "sweep",
                         lambda: run_dirs.refuse_sweep_dir(sweep_dir, config.trainer.resume))
        if claimed != sweep_dir:  # every job's config is composed again from these overrides
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.sweep.dir = str(claimed)
                config.hydra.overrides.hydra.append(f"hydra.sweep.dir={override_value(str(claimed))}")


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
    elif isinstance(job_return.return_value, PrunedJob):
        record["status"] = "pruned"
    summary_path = run_dir / "summary.json"
    if record["status"] != "failed" and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        record |= {key: summary.get(key) for key in ("monitor", "monitor_mode", "best_score", "best_val_acc",
                                                     "test_acc", "final_val_acc", "epochs", "wall_s")}
    return record


def objective_rank(record: dict[str, Any]) -> float:
    """Sorts a completed job by its objective, best first: the best trainer.monitor value in the monitor's direction
    (best_val_acc, higher first, for records written before monitors)."""
    score = record.get("best_score", record.get("best_val_acc"))
    if score is None:
        return float("inf")
    return float(score) if record.get("monitor_mode") == "min" else -float(score)


def sweep_rows(sweep_dir: Path, since: float | None = None) -> list[dict[str, Any]]:
    """Every job's record under `sweep_dir`: completed ones ranked, best first (by the monitored objective), then
    pruned Optuna trials (unranked: they stopped early), failed jobs last.

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
    done = sorted((r for r in records if r["status"] == "completed"), key=lambda r: (objective_rank(r), r["job"]))
    rest = sorted((r for r in records if r["status"] != "completed"), key=lambda r: (r["status"] != "pruned", r["job"]))
    return [{"rank": i if r["status"] == "completed" else "", **r} for i, r in enumerate(done + rest, start=1)]


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
        status = {"completed": "ok", "pruned": "pruned"}.get(row["status"],
                                                             "[red]failed[/red]: " + escape(row["error"]))
        table.add_row(str(row["rank"]), str(row["job"]), escape(row["overrides"]) or "(none)",
                      "" if acc is None else f"{acc:.4f}", str(row.get("epochs") or ""),
                      "" if row.get("wall_s") is None else f"{row['wall_s']:.1f}", status)
    Console(highlight=False).print(table)


class SweepSummary(Callback):
    """After every sweep job, `job.json` in its dir; when the sweep ends, `sweep_summary.csv` and a table.

    Jobs may run in other processes (joblib, submitit), so each job records itself and the end reads them all.
    A sweep in which any job failed exits with code 1 once every job has run and the table is printed (a pruned
    Optuna trial is no failure).
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
        failed = [row for row in rows if row["status"] not in ("completed", "pruned")]
        try:
            print_sweep_table(rows, path)
            print_repeats(sweep_dir, rows)
        finally:  # Hydra turns a callback's exceptions into warnings: the exit code must not depend on the table
            if failed:
                print(f"error: {len(failed)} of {len(rows)} sweep job(s) failed (see {path})", file=sys.stderr)
                sys.exit(EXIT_SWEEP_JOB_FAILED)


def print_repeats(sweep_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Mean ± std over the runs that differ only in seed or data.fold (trainer/reporting/repeats.py)."""
    from trainer.reporting.repeats import describe_group, repeat_groups, write_repeats

    groups = repeat_groups(rows)
    if groups:
        path = write_repeats(sweep_dir, groups)
        for group in groups:
            print(describe_group(group))
        print(f"(mean ± sample std over repeats: {path})")


def _short(override: str) -> str:
    """`optim.lr=0.0008468008575248334` as `optim.lr=0.000847` for the table (the CSV keeps every digit)."""
    key, sep, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    short = f"{number:.3g}"
    return f"{key}{sep}{short}" if sep and len(short) < len(value) else override
