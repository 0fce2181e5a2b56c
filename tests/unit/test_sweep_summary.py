"""The sweep summary in-process: jobs ranked by accuracy, failures listed last, a table that survives odd records."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from trainer.hydra_callbacks import FailedJob, print_sweep_table, sweep_rows, write_sweep_summary


def test_sweep_rows_rank_by_accuracy_and_list_failures_last(tmp_path: Path) -> None:
    records = [{"job": 0, "status": "completed", "best_val_acc": 0.5, "overrides": "a=1", "error": ""},
               {"job": 1, "status": "failed", "overrides": "a=2", "error": "boom"},
               {"job": 2, "status": "completed", "best_val_acc": 0.9, "overrides": "a=3", "error": ""}]
    for record in records:
        (tmp_path / str(record["job"])).mkdir()
        (tmp_path / str(record["job"]) / "job.json").write_text(json.dumps(record))
    rows = sweep_rows(tmp_path)
    assert [(row["rank"], row["job"]) for row in rows] == [(1, 2), (2, 0), ("", 1)]
    path = write_sweep_summary(tmp_path, rows)
    assert path.read_text().splitlines()[0].startswith("rank,job,status,monitor,best_score,best_val_acc")
    os.utime(tmp_path / "0" / "job.json", (0, 0))  # left by an earlier sweep in the same dir
    assert [row["job"] for row in sweep_rows(tmp_path, since=time.time() - 60)] == [2, 1]


def test_jobs_rank_by_their_monitored_objective_in_its_direction(tmp_path: Path) -> None:
    records = [{"job": j, "status": "completed", "monitor": "val/loss", "monitor_mode": "min", "best_score": score,
                "best_val_acc": acc, "overrides": f"a={j}", "error": ""}
               for j, score, acc in ((0, 0.30, 0.95), (1, 0.10, 0.90), (2, 0.20, 0.99))]
    for record in records:
        (tmp_path / str(record["job"])).mkdir()
        (tmp_path / str(record["job"]) / "job.json").write_text(json.dumps(record))
    assert [row["job"] for row in sweep_rows(tmp_path)] == [1, 2, 0]  # lowest val loss first, not highest accuracy


def test_the_table_survives_markup_like_errors_and_a_broken_record(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line per row
    for job, text in (("0", json.dumps({"job": 0, "status": "failed", "overrides": "optim=[sgd]",
                                        "error": "bad value [/oops]"})), ("1", "{truncated")):
        (tmp_path / job).mkdir()
        (tmp_path / job / "job.json").write_text(text)
    rows = sweep_rows(tmp_path)
    assert [(row["job"], row["status"]) for row in rows] == [(0, "failed"), (1, "failed")]
    print_sweep_table(rows, write_sweep_summary(tmp_path, rows))
    shown = capsys.readouterr().out
    assert "[/oops]" in shown and "unreadable job.json" in shown


def test_a_failed_job_is_not_an_objective() -> None:
    with pytest.raises(TypeError):
        float(FailedJob("diverged"))  # Optuna's sweeper records such a trial as failed


def test_runs_that_differ_only_in_seed_are_summarised_as_mean_and_std() -> None:
    from trainer.reporting.repeats import describe_group, repeat_groups

    rows = [{"job": i, "status": "completed", "overrides": f"optim=sgd seed={i}", "best_val_acc": acc,
             "test_acc": acc - 0.01, "final_val_acc": acc} for i, acc in enumerate([0.90, 0.92, 0.94])]
    rows += [{"job": 3, "status": "completed", "overrides": "optim=adamw seed=0", "best_val_acc": 0.5},
             {"job": 4, "status": "failed", "overrides": "optim=adamw seed=1", "error": "boom"}]
    groups = repeat_groups(rows)
    assert len(groups) == 1  # adamw has one completed run: nothing to average
    group = groups[0]
    assert (group["configuration"], group["over"], group["runs"]) == ("optim=sgd", "seed", 3)
    assert group["best_val_acc_mean"] == pytest.approx(0.92) and group["best_val_acc_std"] == pytest.approx(0.02)
    assert group["test_acc_mean"] == pytest.approx(0.91)
    assert describe_group(group).startswith("optim=sgd over seed (3 runs): best_val_acc 0.9200 ± 0.0200")


def test_a_pruned_optuna_trial_is_listed_after_the_completed_jobs_and_fails_no_sweep(tmp_path: Path,
                                                                                       capsys) -> None:
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from trainer.hydra_callbacks import PrunedJob, SweepSummary, job_record

    outcomes = {0: 0.9, 1: PrunedJob(epoch=1, best_score=0.2), 2: 0.5}
    for job, value in outcomes.items():
        run_dir = tmp_path / str(job)
        run_dir.mkdir()
        (run_dir / "summary.json").write_text(json.dumps({"best_val_acc": getattr(value, "best_score", value),
                                                          "epochs": 1}))
        config = OmegaConf.create({"hydra": {"job": {"num": job}, "runtime": {"output_dir": str(run_dir)}}})
        job_return = SimpleNamespace(overrides=[f"optim.lr={job}"], status=None, return_value=value)
        (run_dir / "job.json").write_text(json.dumps(job_record(config, job_return)))
    rows = sweep_rows(tmp_path)
    assert [(row["rank"], row["job"], row["status"]) for row in rows] == [(1, 0, "completed"), (2, 2, "completed"),
                                                                           ("", 1, "pruned")]
    assert rows[2]["best_val_acc"] == 0.2  # its figures are kept
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))  # no exit 1
    assert "pruned" in capsys.readouterr().out
