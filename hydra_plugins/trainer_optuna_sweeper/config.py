"""The `hydra/sweeper=optuna` config and its `hydra/sweeper/sampler` options (tpe, random), in Hydra's ConfigStore.

Every key, with the values hparams_search=optuna sets (configs/hparams_search/optuna.yaml):

    hydra.sweeper.direction: auto        # auto: maximize or minimize as trainer.monitor improves | minimize | maximize
    hydra.sweeper.study_name: trainer    # the study's name in its storage
    hydra.sweeper.storage: null          # null: in memory; sqlite:///outputs/optuna.db keeps (and resumes) it
    hydra.sweeper.n_trials: 20           # trials in this sweep
    hydra.sweeper.n_jobs: 1              # trials asked for and launched per batch
    hydra.sweeper.pruner: none           # none | median | hyperband: stop unpromising trials after an epoch
    hydra.sweeper.sampler.seed: ...      # hydra/sweeper/sampler=tpe (default) | random
    hydra.sweeper.params: {...}          # the search space: key: interval(...) | tag(log, interval(...)) | choice(...)
"""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

PROVIDER = "trainer_optuna_sweeper"


class Direction(Enum):
    """Whether the objective (the run's best trainer.monitor value) is to be maximised or minimised."""

    auto = 0  # as trainer.monitor improves: minimize a loss, maximize anything else (trainer.monitor_mode wins)
    minimize = 1
    maximize = 2


class SamplerName(Enum):
    tpe = 1  # Optuna's TPESampler: random for n_startup_trials, then a model of what scored well
    random = 2  # Optuna's RandomSampler


class PrunerName(Enum):
    """What stops a trial after an epoch whose monitored value is unpromising (the run ends like early stopping)."""

    none = 0  # every trial runs all its epochs
    median = 1  # MedianPruner: worse than the median of earlier trials at the same epoch (after 5 trials)
    hyperband = 2  # HyperbandPruner: successive halving over brackets of epochs


@dataclass
class SamplerConf:
    """`hydra/sweeper/sampler=tpe|random`: how each trial's parameters are chosen."""

    name: SamplerName = SamplerName.tpe
    seed: int | None = None  # the sampler's seed: the same seed and search space ask for the same first trials
    n_startup_trials: int = 10  # tpe: random trials before TPE starts modelling (random: unused)


@dataclass
class OptunaSweeperConf:
    """`hydra/sweeper=optuna`: one Optuna study, `n_trials` trials launched `n_jobs` at a time."""

    _target_: str = "hydra_plugins.trainer_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: SamplerConf = MISSING
    direction: Direction = Direction.auto
    study_name: str | None = None  # null: a name Optuna makes up
    storage: str | None = None  # null: in memory; an RDB URL (sqlite:///outputs/optuna.db) keeps the study
    n_trials: int = 20
    n_jobs: int = 1
    pruner: PrunerName = PrunerName.none
    params: dict[str, str] | None = None  # key: a sweep override's right-hand side (`interval(0.0001, 0.03)`)


def register() -> None:
    """Put the sweeper and its samplers in Hydra's ConfigStore (idempotent)."""
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider=PROVIDER)
    for sampler in SamplerName:
        store.store(group="hydra/sweeper/sampler", name=sampler.name, node=SamplerConf(name=sampler),
                    provider=PROVIDER)


register()
