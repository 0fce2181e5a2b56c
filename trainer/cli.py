"""The `python -m trainer` entrypoint: compose the Hydra config, validate it, run the chosen mode.

Nothing heavy is imported here, so `--help` and `--cfg job` answer without loading torch.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from trainer.environment import launched_by_torchrun, torchrun_rank
from trainer.errors import (
    EXIT_COMPOSE_ERROR,
    EXIT_USER_ERROR,
    TrainerError,
    composition_error_line,
    described,
    first_line,
)
from trainer.hydra_callbacks import FailedJob
from trainer.schema import register_configs, validate
from trainer.training.preemption import Preempted

log = logging.getLogger("trainer")

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")

register_configs()


def one_line(err: TrainerError) -> str:
    """The error's own message, also when a DataLoader worker wrapped it in its traceback."""
    text = str(err).strip()
    if "Original Traceback" in text:
        return text.splitlines()[-1].split(": ", 1)[-1] or type(err).__name__
    return first_line(err)


def compose_config(overrides: Sequence[str], with_hydra: bool = False) -> DictConfig:
    """The config `python -m trainer OVERRIDES` runs with, composed in-process (Hydra's own node only when asked)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="train"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=with_hydra)


def run(cfg: DictConfig, run_dir: Path, launcher: DictConfig | None = None) -> float | None:
    """Validate `cfg`, then dispatch on `cfg.mode`; returns the objective (val accuracy) for sweepers."""
    validate(cfg)
    limit_threads(cfg.trainer.num_threads, launcher)
    if cfg.mode == "eval":
        from trainer.modes.evaluate import evaluate

        return evaluate(cfg, run_dir)
    if cfg.mode == "summary":
        from trainer.modes.model_summary import summarize

        summarize(cfg, run_dir)
        return None
    if cfg.mode == "predict":
        from trainer.modes.predict import predict

        predict(cfg, run_dir)
        return None
    if cfg.mode == "export":
        from trainer.modes.export import export

        export(cfg, run_dir)
        return None
    from trainer.training.train import train

    return train(cfg, run_dir)


_TASK_STARTED: list[bool] = []  # set once a composed config reaches the task: later errors are the run's


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_task(cfg: DictConfig) -> float | FailedJob | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    _TASK_STARTED.append(True)
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN and os.environ.get("HYDRA_FULL_ERROR") != "1":
        try:
            return run(cfg, Path(hydra_cfg.runtime.output_dir), hydra_cfg.launcher)
        except Preempted as err:  # a stop signal stops the whole sweep (exit code 3), not just this job
            log.error("%s", err)
            print(f"error: {one_line(err)}", file=sys.stderr)
            sys.exit(err.exit_code)
        except Exception as err:  # the sweep records this job as failed and carries on with the others
            log.exception("job failed")
            return FailedJob(one_line(err) if isinstance(err, TrainerError) else described(err))
    try:
        return run(cfg, Path(hydra_cfg.runtime.output_dir), hydra_cfg.launcher)
    except TrainerError as err:
        log.error("%s", err)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(err.exit_code)


_DEFAULT_THREADS: list[int] = []  # torch's own thread count, kept before the first change


def limit_threads(num_threads: int | None, launcher: DictConfig | None) -> None:
    """`trainer.num_threads`, or under the joblib launcher each job's fair share of the CPU cores.

    Otherwise torch's default: a sweep running its jobs in one process does not carry one job's setting over.
    """
    if num_threads is None and launcher is not None and "joblib" in str(launcher.get("_target_", "")).lower():
        jobs = int(launcher.get("n_jobs") or 1)
        cores = os.cpu_count() or 1
        num_threads = max(1, cores // (cores if jobs < 1 else min(jobs, cores)))
    if num_threads is None and not _DEFAULT_THREADS:
        return  # nothing was ever changed: leave torch unimported for modes that do not need it
    import torch

    if not _DEFAULT_THREADS:
        _DEFAULT_THREADS.append(torch.get_num_threads())
    torch.set_num_threads(num_threads or _DEFAULT_THREADS[0])


def quiet_secondary_ranks(argv: list[str]) -> list[str]:
    """Under torchrun only rank 0 writes the run dir and logs; the other ranks learn its path at start-up."""
    if launched_by_torchrun() and torchrun_rank() != 0:
        return [*argv, "hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled",
                "hydra.run.dir=."]
    return argv


HELP_HIDDEN_GROUPS = ("hydra", "local")


def print_help(overrides: list[str]) -> None:
    """The `--help` page: header, config groups and options, the composed config, footer.

    Hydra builds the same page but copies its whole config repository once per group listed (seconds,
    with a schema per option); reading the group folders of configs/ directly answers at once.
    """
    from omegaconf import OmegaConf, open_dict

    try:
        cfg = compose_config(overrides, with_hydra=True)
    except Exception as err:  # an unknown option or key among the overrides
        print(f"error: {composition_error_line(err)}", file=sys.stderr)
        sys.exit(EXIT_COMPOSE_ERROR)
    help_cfg = cfg.hydra.help
    with open_dict(cfg):
        del cfg["hydra"]
    groups = sorted(d for d in Path(CONFIG_DIR).iterdir() if d.is_dir() and d.name not in HELP_HIDDEN_GROUPS)
    lines = [f"{d.name}: {', '.join(sorted(f.stem for f in d.glob('*.yaml')))}" for d in groups]
    print(f"{help_cfg.header}\n== Configuration groups ==\nCompose your configuration from those groups "
          f"(group=option)\n\n" + "\n".join(lines) + "\n\n== Config ==\nOverride anything in the config "
          f"(foo.bar=value)\n\n{OmegaConf.to_yaml(cfg)}\n{help_cfg.footer}")


@contextmanager
def one_line_composition_errors() -> Iterator[None]:
    """A config that fails to compose (unknown option or key, wrong type, bad override syntax) is reported as
    one `error:` line with exit code 1, instead of Hydra's multi-line report.

    Hydra prints its report from `hydra._internal.utils.run_and_report`, which wraps both composition and the
    task; this swaps it, for the duration of `main`, for one that shortens Hydra's and OmegaConf's composition
    errors raised before a task began in this process. Other errors (from a run, from a launcher or sweeper
    plugin, such as a search space Optuna cannot read) keep Hydra's report; HYDRA_FULL_ERROR=1 still shows
    the whole traceback.
    """
    from hydra._internal import utils as hydra_utils
    from hydra.errors import ConfigCompositionException, OverrideParseException, SearchPathException
    from omegaconf.errors import OmegaConfBaseException

    composition_errors = (ConfigCompositionException, OverrideParseException, SearchPathException,
                          OmegaConfBaseException)
    hydra_report = hydra_utils.run_and_report
    _TASK_STARTED.clear()

    def report(func: Callable[[], Any]) -> Any:
        def composition_in_one_line() -> Any:
            try:
                return func()
            except Exception as err:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                line = sweep_error_line(err)
                if line is None and isinstance(err, composition_errors) and not _TASK_STARTED:
                    line = composition_error_line(err)
                if line is None:
                    raise  # an error from a run or a launcher: Hydra's report, with the frames that raised it
                print(f"error: {line}", file=sys.stderr)
                sys.exit(EXIT_COMPOSE_ERROR)

        return hydra_report(composition_in_one_line)

    hydra_utils.run_and_report = report
    try:
        yield
    finally:
        hydra_utils.run_and_report = hydra_report


def sweep_error_line(err: Exception) -> str | None:
    """The one line for a sweep that ended without a result, or None for any other error.

    The Optuna sweeper asks for the best trial after its last one; when every trial failed, Optuna raises
    this ValueError (each job's own error is logged above it and kept in its job.json).
    """
    if isinstance(err, ValueError) and str(err) == "No trials are completed yet.":
        return "every Optuna trial failed, so there is no best one (each job's error is logged above)"
    return None


def main() -> None:
    args = sys.argv[1:]
    if ("--help" in args or "-h" in args) and "--hydra-help" not in args:
        print_help([a for a in args if "=" in a or a.startswith("~")])  # the overrides, not Hydra's flags
        return
    if launched_by_torchrun() and ("-m" in args or "--multirun" in args):
        print("error: a sweep (-m) cannot run under torchrun; start one torchrun job per configuration",
              file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.argv = quiet_secondary_ranks(sys.argv)
    with one_line_composition_errors():
        _hydra_task()
