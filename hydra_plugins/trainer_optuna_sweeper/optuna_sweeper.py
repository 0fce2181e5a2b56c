"""The `hydra/sweeper=optuna` Sweeper: Hydra instantiates it from OptunaSweeperConf (config.py) and calls `sweep`."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.errors import ConfigCompositionException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


def _name(value: Any) -> str:
    """An Enum config value's name (OmegaConf hands the member; a plain string passes as it is)."""
    return str(getattr(value, "name", value))


class OptunaSweeper(Sweeper):
    """Asks Optuna's study for `n_jobs` trials at a time, launches them as jobs and tells it their results."""

    def __init__(self, sampler: DictConfig, direction: Any, study_name: str | None, storage: str | None,
                 n_trials: int, n_jobs: int, pruner: Any, params: DictConfig | None) -> None:
        self.sampler = {"name": _name(sampler.name), "seed": sampler.seed,
                        "n_startup_trials": sampler.n_startup_trials}
        self.direction, self.pruner = _name(direction), _name(pruner)
        self.study_name, self.storage = study_name, storage
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.params = {str(key): str(value) for key, value in (params or {}).items()}
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        for key, value in (("n_trials", self.n_trials), ("n_jobs", self.n_jobs)):
            if value < 1:
                raise ConfigCompositionException(f"hydra.sweeper.{key} must be >= 1, got {value}")
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        """Run the search over `hydra.sweeper.params` and the command line's own sweeps (`arguments`)."""
        from hydra_plugins.trainer_optuna_sweeper._search import Search

        plain_optuna_log()
        Search(self).run([f"{key}={value}" for key, value in self.params.items()] + list(arguments))


def plain_optuna_log() -> None:
    """Optuna's own log handler colours every line; without a terminal (a pipe, a SLURM log) its lines go through
    Hydra's plain logging instead."""
    import sys

    import optuna

    if not sys.stderr.isatty():
        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
