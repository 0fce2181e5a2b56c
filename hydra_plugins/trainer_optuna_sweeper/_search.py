"""The search itself, imported when a sweep starts (Optuna takes a moment to import; Hydra's plugin scan skips
modules whose name starts with `_`): the search space, the study, batches of trials, the results."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from trainer.environment import OptunaTrialRef
from trainer.hydra_callbacks import FailedJob, PrunedJob
from trainer.reporting.run_files import atomic_write
from trainer.schema.run import monitor_mode
from trainer.search import live_trials, make_pruner, trial_overrides

if TYPE_CHECKING:
    from hydra_plugins.trainer_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


def _choices(override: Override) -> list[Any]:
    """A choice (or shuffled range) sweep's values, each as the override would write it."""
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    # a shuffled range's order is random: sorted, a continued study sees the same distribution
    return sorted(values, key=str) if override.is_range_sweep() and override.value().shuffle else values


def distribution(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of a sweep override; None for a plain override (every trial gets it as it is).

    `choice(a, b)` and `a,b` are categorical, `range(start, stop, step)` an int (or float) grid,
    `interval(low, high)` a float range (int when both ends are ints), `tag(log, interval(...))` on a log scale.
    """
    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(_choices(override))
    if override.is_range_sweep():  # Hydra's range: stop is exclusive
        values = _choices(override)
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            return FloatDistribution(float(min(values)), float(max(values)), step=abs(float(value.step)))
        return IntDistribution(int(min(values)), int(max(values)), step=abs(int(value.step)))
    if override.is_interval_sweep():
        kind = IntDistribution if isinstance(value.start, int) and isinstance(value.end, int) else FloatDistribution
        return kind(value.start, value.end, log="log" in value.tags)
    raise ConfigCompositionException(f"{override.input_line}: this sweep is not a search space Optuna can sample "
                                     "(use choice, range, interval or tag(log, interval))")


def search_space(arguments: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The sweeps among `arguments` (hydra.sweeper.params, then the command line) as distributions by key, and
    the other overrides, which every trial's job gets as they are."""
    space: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    for override in OverridesParser.create().parse_overrides(arguments):
        found = None if override.is_delete() else distribution(override)
        if found is None:
            fixed.append(str(override.input_line))
        else:
            space[override.get_key_element()] = found
    return space, fixed


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    """The trial's value of parameter `name`, through Optuna's public suggest API."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def make_sampler(spec: dict[str, Any]) -> optuna.samplers.BaseSampler:
    """`hydra/sweeper/sampler=tpe|random` with its seed (and TPE's start-up trials)."""
    if spec["name"] == "random":
        return optuna.samplers.RandomSampler(seed=spec["seed"])
    return optuna.samplers.TPESampler(seed=spec["seed"], n_startup_trials=spec["n_startup_trials"])


def objective_direction(direction: str, job_cfg: DictConfig) -> tuple[str, str]:
    """`hydra.sweeper.direction`, with `auto` following the run's trainer.monitor; and why, for the log line."""
    if direction != "auto":
        return direction, "set by hydra.sweeper.direction"
    monitor = str(job_cfg.trainer.monitor)
    mode = monitor_mode(monitor, job_cfg.trainer.monitor_mode)
    return ("maximize" if mode == "max" else "minimize"), f"as trainer.monitor={monitor} improves ({mode})"


def outcome(ret: JobReturn) -> tuple[TrialState, float | None]:
    """What to tell the study about a finished job: its state, and its value when it completed."""
    if ret.status == JobStatus.FAILED:  # an exception that escaped the task (HYDRA_FULL_ERROR=1)
        return TrialState.FAIL, None
    value = ret.return_value
    if isinstance(value, PrunedJob):
        return TrialState.PRUNED, None
    if isinstance(value, FailedJob) or not isinstance(value, int | float) or not math.isfinite(value):
        return TrialState.FAIL, None
    return TrialState.COMPLETE, float(value)


def failure(ret: JobReturn) -> str:
    """Why a failed trial's job failed, for the log line."""
    if ret.status == JobStatus.FAILED:
        return f"{type(ret._return_value).__name__}: {ret._return_value}"
    value = ret.return_value
    return value.error if isinstance(value, FailedJob) else f"its job returned {value!r}, not a finite number"


class Search:
    """One sweep of an OptunaSweeper: `n_trials` trials of its study, `n_jobs` at a time."""

    def __init__(self, sweeper: OptunaSweeper) -> None:
        self.sweeper = sweeper
        self.config, self.launcher = sweeper.config, sweeper.launcher
        self.job_idx = 0

    def run(self, arguments: list[str]) -> None:
        """Every batch of trials, then the best trial on the console and in optimization_results.yaml."""
        space, fixed = search_space(arguments)
        job_cfg = self.sweeper.hydra_context.config_loader.load_sweep_config(self.config, fixed)
        direction, why = objective_direction(self.sweeper.direction, job_cfg)
        study = self.create_study(direction)
        log.info("Optuna study %s (storage: %s): sampler %s, pruner %s, %s %s", study.study_name,
                 self.sweeper.storage or "in memory", self.sweeper.sampler["name"], self.sweeper.pruner, direction, why)
        left = self.sweeper.n_trials
        while left > 0:
            batch = [study.ask() for _ in range(min(self.sweeper.n_jobs, left))]
            self.run_batch(study, batch, space, fixed)
            left -= len(batch)
        self.write_results(study, direction)

    def create_study(self, direction: str) -> optuna.Study:
        """The study `hydra.sweeper.study_name` in `hydra.sweeper.storage`: new, or the one stored there."""
        study = optuna.create_study(study_name=self.sweeper.study_name, storage=self.sweeper.storage,
                                    sampler=make_sampler(self.sweeper.sampler), pruner=make_pruner(self.sweeper.pruner),
                                    direction=direction, load_if_exists=True)
        done = len(study.get_trials(deepcopy=False))
        if done:  # a stored study continued: seed the sampler past its trials, or it would draw them again
            seed = self.sweeper.sampler["seed"]
            study.sampler = make_sampler({**self.sweeper.sampler, "seed": None if seed is None else seed + done})
        return study

    def job_overrides(self, study: optuna.Study, trial: optuna.Trial, space: dict[str, BaseDistribution],
                      fixed: list[str]) -> list[str]:
        """One trial's job: its sampled parameters, the fixed overrides, and which trial it is."""
        params = [f"{name}={suggest(trial, name, dist)}" for name, dist in space.items()]
        ref = OptunaTrialRef(study.study_name, trial.number, self.sweeper.storage, self.sweeper.pruner)
        return params + fixed + trial_overrides(ref)

    def run_batch(self, study: optuna.Study, trials: list[optuna.Trial], space: dict[str, BaseDistribution],
                  fixed: list[str]) -> None:
        """Launch the trials' jobs and tell the study how each ended (failed and pruned jobs included)."""
        overrides = [self.job_overrides(study, trial, space, fixed) for trial in trials]
        try:
            with live_trials(study.study_name, trials):
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        except BaseException:  # a stop signal ends the sweep: the stored study keeps no trial running
            for trial in trials:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        self.job_idx += len(returns)
        for trial, ret in zip(trials, returns, strict=True):
            state, value = outcome(ret)
            study.tell(trial, value, state=state, skip_if_finished=True)
            if state == TrialState.FAIL:
                log.warning("Optuna trial %d failed: %s", trial.number, failure(ret))
        for ret in returns:
            if ret.status == JobStatus.FAILED:
                ret.return_value  # noqa: B018 -- raises the job's own exception, with its traceback

    def write_results(self, study: optuna.Study, direction: str) -> None:
        """The best trial on the console and in `<sweep dir>/optimization_results.yaml` (best_trial null when
        none completed: the sweep summary then lists each job's outcome, and failed jobs make the sweep exit 1)."""
        counts = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,)))
                  for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        best = study.best_trial if counts["complete"] else None
        results = {"name": "optuna", "study_name": study.study_name, "storage": self.sweeper.storage,
                   "direction": direction, "best_trial": best.number if best else None,
                   "best_params": best.params if best else None, "best_value": best.value if best else None,
                   "trials": counts}
        path = Path(str(self.config.hydra.sweep.dir)) / RESULTS_FILE
        text = OmegaConf.to_yaml(OmegaConf.create(results)).encode()
        atomic_write(path, lambda handle: handle.write(text))
        if best is None:
            log.warning("No Optuna trial completed (trials: %s), so there is no best one (%s)", counts, path)
            return
        log.info("Best trial: %d of study %s (trials: %s)", best.number, study.study_name, counts)
        log.info("Best parameters: %s", best.params)
        log.info("Best value: %s (%s; written to %s)", best.value, direction, path)
