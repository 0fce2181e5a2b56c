"""The Optuna sweeper (hydra_plugins/trainer_optuna_sweeper) in-process: its search space, its direction, short
searches kept in SQLite under tmp_path, and a run that its trial prunes."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.trainer_optuna_sweeper._search import objective_direction, search_space
from tests.conftest import compose, read_csv, read_json, run_cli_in_process
from trainer.environment import OptunaTrialRef, optuna_trial
from trainer.hydra_callbacks import PrunedJob
from trainer.search import find_trial, trial_overrides

# 3 short trials on digits: 2 epochs of 2 batches each.
SEARCH = ("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", "trainer.max_epochs=2",
          "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=1", "logger=none",
          "trainer.progress=none", "trainer.device=cpu")


def test_the_search_space_reads_hydras_sweep_grammar() -> None:
    space, fixed = search_space(["optim.lr=tag(log, interval(0.0001, 0.03))", "data.batch_size=choice(32, 64)",
                                 "regularization.label_smoothing=interval(0.0, 0.2)",
                                 "trainer.max_epochs=range(1, 7, 2)", "optim=sgd,adamw", "seed=3", "~logger"])
    assert space == {"optim.lr": FloatDistribution(0.0001, 0.03, log=True),
                     "data.batch_size": CategoricalDistribution([32, 64]),
                     "regularization.label_smoothing": FloatDistribution(0.0, 0.2),
                     "trainer.max_epochs": IntDistribution(1, 5, step=2),  # range's stop is exclusive, as in Hydra
                     "optim": CategoricalDistribution(["sgd", "adamw"])}
    assert fixed == ["seed=3", "~logger"]  # every trial's job gets them as written


@pytest.mark.parametrize(("overrides", "direction", "expected"), [
    ((), "auto", "maximize"),  # val/acc
    (("trainer.monitor=val/loss",), "auto", "minimize"),
    (("trainer.monitor=val/loss", "trainer.monitor_mode=max"), "auto", "maximize"),  # the monitor's own mode wins
    (("trainer.monitor=val/loss",), "maximize", "maximize"),  # an explicit hydra.sweeper.direction wins
])
def test_the_direction_follows_the_monitor(overrides: tuple[str, ...], direction: str, expected: str) -> None:
    assert objective_direction(direction, compose(*overrides))[0] == expected


def test_a_job_learns_its_trial_from_its_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    ref = OptunaTrialRef("my study", 4, "sqlite:///outputs/optuna.db", "median")
    overrides = trial_overrides(ref)
    assert "++hydra.job.env_set.TRAINER_OPTUNA_STORAGE='sqlite:///outputs/optuna.db'" in overrides
    for override in overrides:  # what Hydra's env_set puts in os.environ for the job
        name, value = override.removeprefix("++hydra.job.env_set.").split("=", 1)
        monkeypatch.setenv(name, value.strip("'"))
    assert optuna_trial() == ref


def test_a_run_in_another_process_finds_its_trial_in_the_storage(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    asked = [study.ask() for _ in range(2)]
    trial = find_trial(OptunaTrialRef("s", 1, storage, "median"))  # not launched in this process: loaded
    assert trial is not None and trial.number == 1 and isinstance(trial.study.pruner, optuna.pruners.MedianPruner)
    trial.report(0.5, step=1)
    study.tell(asked[1], state=TrialState.PRUNED)
    assert study.trials[1].intermediate_values == {1: 0.5} and study.trials[1].state == TrialState.PRUNED
    assert find_trial(OptunaTrialRef("s", 1, None, "none")) is None  # another process's in-memory study


def test_a_search_minimising_the_val_loss_keeps_its_trials_in_sqlite(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_cli_in_process(*SEARCH, "trainer.monitor=val/loss", f"hydra.sweeper.storage={storage}",
                                f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="trainer", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE  # as trainer.monitor=val/loss improves
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    assert all(sorted(t.intermediate_values) == [1, 2] for t in study.trials)  # each epoch reported
    for trial in study.trials:  # the objective is the run's best val loss
        summary = read_json(tmp_path / "sweep" / str(trial.number) / "summary.json")
        assert trial.value == pytest.approx(summary["best_score"]) and summary["pruned"] is False
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(min(t.value for t in study.trials))
    assert results["direction"] == "minimize" and set(results["best_params"]) == set(study.best_params)


@pytest.mark.slow  # a 4-trial search; the fake-trial test covers the pruning hook itself
def test_a_search_with_a_pruner_ends_each_trial_completed_or_pruned(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = run_cli_in_process(*SEARCH, "hydra.sweeper.pruner=hyperband",
                                f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert result.returncode == 0, result.stderr  # a pruned trial is no failed job
    trials = optuna.load_study(study_name="trainer", storage=storage).trials
    assert len(trials) == 3 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    rows = read_csv(tmp_path / "sweep" / "sweep_summary.csv")
    assert sorted(row["status"] for row in rows) == sorted(
        "pruned" if t.state == TrialState.PRUNED else "completed" for t in trials)


class PruneAfterFirstEpoch:
    """A stand-in for an Optuna trial whose pruner prunes it at its first report."""

    number = 7

    def __init__(self) -> None:
        self.reports: list[tuple[float, int]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return len(self.reports) >= 1


def test_a_pruned_trial_stops_its_run_after_the_epoch_and_says_so(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.cli
    import trainer.search

    trial, returned = PruneAfterFirstEpoch(), []
    monkeypatch.setattr(trainer.search, "find_trial", lambda ref: trial)
    monkeypatch.setenv("TRAINER_OPTUNA_TRIAL", "7")
    monkeypatch.setenv("TRAINER_OPTUNA_PRUNER", "median")
    real_run = trainer.cli.run
    monkeypatch.setattr(trainer.cli, "run", lambda *args: returned.append(real_run(*args)) or returned[-1])
    result = run_cli_in_process("trainer.max_epochs=3", "trainer.limit_train_batches=2", "logger=none",
                                "trainer.progress=none", "trainer.device=cpu", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    summary = read_json(tmp_path / "summary.json")
    assert (summary["pruned"], summary["stopped_early"], summary["epochs"]) == (True, True, 1)
    assert trial.reports == [(pytest.approx(summary["best_val_acc"]), 1)]  # val/acc, reported at epoch 1
    assert len(read_csv(tmp_path / "metrics.csv")) == 1 and (tmp_path / "checkpoints" / "last.pt").is_file()
    assert returned == [PrunedJob(1, pytest.approx(summary["best_score"]))]  # what the sweeper tells as pruned
    assert "Optuna trial 7 pruned after epoch 1: val/acc" in (tmp_path / "train.log").read_text()
