"""Sweeps through Hydra's multirun: the sweep summary, a failing job, Optuna, the joblib/submitit launchers, and a
refused re-run into an old sweep dir."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONFIGS, read_csv, read_json, run_cli, run_cli_in_process

QUICK = ("trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.progress=none")


def summary_rows(sweep: Path) -> list[dict]:
    return read_csv(sweep / "sweep_summary.csv")


def test_a_failing_job_is_summarised_and_the_others_still_run(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli_in_process("-m", "optim.lr=0.003,-1,0.0003", f"hydra.sweep.dir={sweep}", *QUICK)
    assert result.returncode == 1
    assert "1 of 3 sweep job(s) failed" in result.stderr
    rows = summary_rows(sweep)
    done = [row for row in rows if row["status"] == "completed"]
    failed = [row for row in rows if row["status"] == "failed"]
    assert len(done) == 2 and len(failed) == 1
    assert failed[0]["job"] == "1" and "optim.lr" in failed[0]["error"] and failed[0]["rank"] == ""
    accuracies = [float(row["best_val_acc"]) for row in done]
    assert accuracies == sorted(accuracies, reverse=True) and [row["rank"] for row in done] == ["1", "2"]
    for row in done:  # each job in its own dir, with its own override
        lr = next(o for o in row["overrides"].split() if o.startswith("optim.lr=")).split("=")[1]
        assert f"lr: {lr}" in (sweep / row["job"] / ".hydra" / "config.yaml").read_text()
        assert read_json(sweep / row["job"] / "summary.json")["best_val_acc"] == float(row["best_val_acc"])
    assert "best_val_acc" in result.stdout and "failed" in result.stdout  # the printed table


def test_the_optuna_sweeper_is_an_option_of_hydras_sweeper_group() -> None:
    """The trainer's sweeper is found as a Hydra plugin: Hydra lists it and its samplers as options (the lists
    --hydra-help prints for these groups), and the CLI composes it."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from trainer.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        assert loader.get_group_options("hydra/sweeper") == ["basic", "optuna"]
        assert loader.get_group_options("hydra/sweeper/sampler") == ["random", "tpe"]
    result = run_cli_in_process("--cfg", "hydra", "--package", "hydra.sweeper", "hydra/sweeper=optuna",
                                "hydra/sweeper/sampler=random")
    assert result.returncode == 0, result.stderr
    sweeper = yaml.safe_load(result.stdout)
    assert sweeper["_target_"] == "hydra_plugins.trainer_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert sweeper["sampler"]["name"] == "random"


@pytest.mark.slow  # Hydra's help lists every config group (~10 s); the test above checks the same two groups
def test_the_optuna_sweeper_is_found_as_a_hydra_plugin() -> None:
    result = run_cli_in_process("--hydra-help", report=True)  # report: no trainer.report override
    assert result.returncode == 0, result.stderr
    assert "hydra/sweeper: basic, optuna" in result.stdout and "hydra/sweeper/sampler: random, tpe" in result.stdout


@pytest.mark.slow  # a 3-trial search
def test_optuna_search_writes_its_results(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli("hparams_search=optuna", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}", *QUICK)
    assert result.returncode == 0, result.stderr
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    option = yaml.safe_load((CONFIGS / "hparams_search" / "optuna.yaml").read_text())
    search_space = option["hydra"]["sweeper"]["params"]  # e.g. optim.lr: tag(log, interval(0.0001, 0.03))
    assert set(results["best_params"]) == set(search_space)  # every searched key, and only those
    for key, spec in search_space.items():  # each best value inside its interval, or one of its choices
        numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?", spec.rsplit("(", 1)[-1])]
        value = results["best_params"][key]
        assert value in numbers if spec.startswith("choice(") else numbers[0] <= value <= numbers[1], (key, value)
    rows = summary_rows(sweep)
    assert len(rows) == 3 and all(row["status"] == "completed" for row in rows)
    assert results["best_value"] == pytest.approx(max(float(row["best_val_acc"]) for row in rows))
    assert (results["direction"], results["trials"]) == ("maximize", {"complete": 3, "pruned": 0, "fail": 0})
    assert "Best parameters" in result.stdout + result.stderr


def test_an_optuna_search_whose_every_trial_fails_ends_with_one_line(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli("hparams_search=optuna", "hydra.sweeper.n_trials=2", "trainer.max_epochs=0",
                     f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: 2 of 2 sweep job(s) failed (see {sweep / 'sweep_summary.csv'})"]
    jobs = [read_json(path) for path in sorted(sweep.glob("*/job.json"))]
    assert len(jobs) == 2 and all("trainer.max_epochs must be >= 1" in job["error"] for job in jobs)
    assert [row["status"] for row in read_csv(sweep / "sweep_summary.csv")] == ["failed", "failed"]
    assert "best_trial: null" in (sweep / "optimization_results.yaml").read_text()


@pytest.mark.slow  # two jobs through the joblib plugin
def test_joblib_launcher_runs_jobs_in_parallel_with_a_share_of_the_threads(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optim=sgd,adamw",
                     f"hydra.sweep.dir={sweep}", *QUICK)
    assert result.returncode == 0, result.stderr
    assert [row["status"] for row in summary_rows(sweep)] == ["completed", "completed"]
    share = max(1, (os.cpu_count() or 1) // min(2, os.cpu_count() or 1))
    assert {read_json(sweep / job / "summary.json")["torch_threads"] for job in ("0", "1")} == {share}


@pytest.mark.slow  # a job through the submitit plugin
@pytest.mark.skipif(importlib.util.find_spec("submitit") is None, reason="hydra-submitit-launcher not installed")
def test_submitit_local_launcher_runs_a_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}", *QUICK)
    assert result.returncode == 0, result.stderr
    assert [row["status"] for row in summary_rows(sweep)] == ["completed"]
    assert (sweep / "0" / "checkpoints" / "last.pt").is_file()


def test_a_sweep_rerun_into_its_old_sweep_dir_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    first = run_cli_in_process("-m", "seed=1", f"hydra.sweep.dir={sweep}", "logger=none", *QUICK)
    assert first.returncode == 0, first.stderr
    before = {str(p.relative_to(sweep)): p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()}
    assert {"0/job.json", "sweep_summary.csv", "0/.hydra/overrides.yaml"} <= before.keys()
    again = run_cli_in_process("-m", "seed=1,2", f"hydra.sweep.dir={sweep}", "logger=none", *QUICK)
    assert again.returncode == 2
    assert [line for line in again.stderr.splitlines() if line.strip()] == [
        line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert "already holds a sweep" in again.stderr and "hydra.sweep.dir" in again.stderr
    assert {str(p.relative_to(sweep)): p.read_bytes() for p in sorted(sweep.rglob("*")) if p.is_file()} == before
