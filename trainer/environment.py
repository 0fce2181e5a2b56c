"""The process environment the trainer reads: torchrun's variables, HYDRA_FULL_ERROR and an Optuna search's trial,
without importing torch.

Every read of `os.environ` in the trainer goes through this module.
"""

from __future__ import annotations

import os
from typing import NamedTuple


def world_size() -> int:
    """Processes in the torchrun job (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_by_torchrun() -> bool:
    """True in a process that torchrun started with more than one process in the job."""
    return world_size() > 1


def torchrun_rank() -> int:
    """This process's global rank (0 when not under torchrun)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its own machine (its GPU index under torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """Processes torchrun started on this machine (its --nproc_per_node)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))


def full_error_requested() -> bool:
    """HYDRA_FULL_ERROR=1: show every error's whole traceback instead of its one line."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


class OptunaTrialRef(NamedTuple):
    """The Optuna trial a sweep job runs as: hparams_search=optuna's sweeper sets it through hydra.job.env_set."""

    study: str  # TRAINER_OPTUNA_STUDY: the study's name
    number: int  # TRAINER_OPTUNA_TRIAL: the trial's number in its study
    storage: str | None  # TRAINER_OPTUNA_STORAGE: the study's RDB URL; unset for a study in memory
    pruner: str  # TRAINER_OPTUNA_PRUNER: none | median | hyperband (hydra.sweeper.pruner)


def optuna_trial() -> OptunaTrialRef | None:
    """The Optuna trial this run is (trainer/search.py), or None outside an Optuna search."""
    number = os.environ.get("TRAINER_OPTUNA_TRIAL")
    if number is None:
        return None
    return OptunaTrialRef(os.environ.get("TRAINER_OPTUNA_STUDY", ""), int(number),
                          os.environ.get("TRAINER_OPTUNA_STORAGE") or None,
                          os.environ.get("TRAINER_OPTUNA_PRUNER", "none"))
