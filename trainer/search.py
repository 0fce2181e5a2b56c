"""How a run of an Optuna search (`hparams_search=optuna`) reaches its trial, to report each epoch's monitored
value and to be pruned.

The sweeper (hydra_plugins/trainer_optuna_sweeper) names each job's trial in the job's own overrides
(`hydra.job.env_set.TRAINER_OPTUNA_*`, read by trainer/environment.py `optuna_trial`). A job that runs in the
sweeper's process (Hydra's basic launcher) finds the live trial here; one in another process (joblib, submitit)
loads the study from its RDB storage (`hydra.sweeper.storage=sqlite:///...`) and takes the trial by its number.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from trainer.environment import OptunaTrialRef
from trainer.hydra_callbacks import override_value

if TYPE_CHECKING:
    import optuna

PRUNERS = ("none", "median", "hyperband")

_live: dict[tuple[str, int], optuna.Trial] = {}  # (study name, trial number): trials launched in this process


def trial_overrides(ref: OptunaTrialRef) -> list[str]:
    """The overrides that tell a job which trial it runs as (Hydra sets them in os.environ for the job)."""
    values = {"TRAINER_OPTUNA_STUDY": ref.study, "TRAINER_OPTUNA_TRIAL": str(ref.number),
              "TRAINER_OPTUNA_PRUNER": ref.pruner} | ({"TRAINER_OPTUNA_STORAGE": ref.storage} if ref.storage else {})
    return [f"++hydra.job.env_set.{name}={override_value(value)}" for name, value in values.items()]


@contextmanager
def live_trials(study_name: str, trials: Sequence[optuna.Trial]) -> Iterator[None]:
    """While a batch of jobs runs: its trials, for the jobs that run in this process."""
    keys = [(study_name, trial.number) for trial in trials]
    _live.update(zip(keys, trials, strict=True))
    try:
        yield
    finally:
        for key in keys:
            _live.pop(key, None)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """`hydra.sweeper.pruner`: none | median | hyperband, with Optuna's default settings."""
    import optuna

    if name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}; expected one of {', '.join(PRUNERS)}")
    return {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
            "hyperband": optuna.pruners.HyperbandPruner}[name]()


def find_trial(ref: OptunaTrialRef) -> optuna.Trial | None:
    """The live trial `ref` names: launched in this process, or loaded from its storage; None when the study is
    in another process's memory (then the run cannot report: keep the study in RDB storage)."""
    trial = _live.get((ref.study, ref.number))
    if trial is not None or ref.storage is None:
        return trial
    import optuna

    study = optuna.load_study(study_name=ref.study, storage=ref.storage, pruner=make_pruner(ref.pruner))
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, ref.number)
    return optuna.trial.Trial(study, trial_id)
