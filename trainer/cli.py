"""The `python -m trainer` entrypoint: compose the Hydra config, validate it, run the chosen mode.

Nothing heavy is imported here, so `--help` and `--cfg job` answer without loading torch.
"""

from __future__ import annotations

import atexit
import functools
import gc
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hydra
from omegaconf import DictConfig

from trainer.environment import full_error_requested, launched_by_torchrun, torchrun_rank
from trainer.errors import (
    EXIT_COMPOSE_ERROR,
    EXIT_USER_ERROR,
    Preempted,
    TrainerError,
    composition_error_line,
    described,
    first_line,
)
from trainer.hydra_callbacks import FailedJob, PrunedJob
from trainer.hydra_compat import Step, guarded_hydra_steps
from trainer.run_dirs import release_claims
from trainer.schema import register_configs, validate

log = logging.getLogger("trainer")

T = TypeVar("T")

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


def run(cfg: DictConfig, run_dir: Path, launcher: DictConfig | None = None) -> float | PrunedJob | None:
    """Validate `cfg`, then dispatch on `cfg.mode`; returns the objective (the best trainer.monitor value) for
    sweepers, or a PrunedJob for a run that an Optuna search pruned (passed on as it is)."""
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
    if cfg.mode == "lr_find":
        from trainer.modes.lr_find import lr_find

        lr_find(cfg, run_dir)
        return None
    from trainer.training.train import train

    return train(cfg, run_dir)


@dataclass
class MainCall:
    """What one `main()` call knows while Hydra runs it (Hydra hands the task nothing but its config)."""

    task_started: bool = False  # a composed config reached the task in this process: later errors are the run's

    def composition_errors_in_one_line(self, step: Step) -> Step:
        """`step` (one of `@hydra.main`'s), reporting a config that fails to compose as one `error:` line.

        Hydra's and OmegaConf's composition errors raised before a task began in this process exit with code 1
        after one line (a sweep whose every job failed does so through its summary). Other errors (from a run,
        from a launcher or sweeper plugin, such as a search space Optuna cannot read) are re-raised for Hydra's
        report, which shows the frames that raised them; HYDRA_FULL_ERROR=1 re-raises every error.
        """
        from hydra.errors import ConfigCompositionException, OverrideParseException, SearchPathException
        from omegaconf.errors import OmegaConfBaseException

        composition_errors = (ConfigCompositionException, OverrideParseException, SearchPathException,
                              OmegaConfBaseException)

        def in_one_line() -> Any:
            try:
                return step()
            except Exception as err:
                if full_error_requested():
                    raise
                if not isinstance(err, composition_errors) or self.task_started:
                    raise
                print(f"error: {composition_error_line(err)}", file=sys.stderr)
                sys.exit(EXIT_COMPOSE_ERROR)

        return in_one_line


_main_call = MainCall()  # the `main()` call in progress; each call starts a fresh one


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_task(cfg: DictConfig) -> float | FailedJob | PrunedJob | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    _main_call.task_started = True
    hydra_cfg = HydraConfig.get()
    label_parallel_job(hydra_cfg.launcher, hydra_cfg.job.get("num") if hydra_cfg.mode == RunMode.MULTIRUN else None)
    return report_task_errors(lambda: run(cfg, Path(hydra_cfg.runtime.output_dir), hydra_cfg.launcher),
                              in_sweep=hydra_cfg.mode == RunMode.MULTIRUN)


def report_task_errors(task: Callable[[], T], in_sweep: bool) -> T | FailedJob:
    """`task()`, with a TrainerError reported as one `error:` line on stderr and its exit code.

    In a sweep every error fails only this job: it is logged and returned as a FailedJob, which the sweep records
    before carrying on with the others; a stop signal (Preempted) still stops the whole sweep (exit code 3).
    Outside a sweep, other errors propagate to Hydra's report. HYDRA_FULL_ERROR=1 re-raises every error.
    """
    try:
        return task()
    except Exception as err:
        if in_sweep and not full_error_requested() and not isinstance(err, Preempted):
            log.exception("job failed")
            return FailedJob(one_line(err) if isinstance(err, TrainerError) else described(err))
        if not isinstance(err, TrainerError):
            raise
        log.error("%s", err)
        if full_error_requested():
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(err.exit_code)


@functools.cache
def torch_default_threads() -> int:
    """torch's own thread count, read once: before `limit_threads` first changes it."""
    import torch

    return torch.get_num_threads()


def label_parallel_job(launcher: DictConfig | None, job_num: int | None) -> None:
    """Prefix a joblib-launched job's console lines with its job number (its jobs' lines interleave)."""
    from trainer.reporting import console

    parallel = launcher is not None and "joblib" in str(launcher.get("_target_", "")).lower()
    console.line_prefix = f"[job {job_num}] " if parallel and job_num is not None else ""


def limit_threads(num_threads: int | None, launcher: DictConfig | None) -> None:
    """`trainer.num_threads`, or under the joblib launcher each job's fair share of the CPU cores.

    Otherwise torch's default: a sweep running its jobs in one process does not carry one job's setting over.
    """
    if num_threads is None and launcher is not None and "joblib" in str(launcher.get("_target_", "")).lower():
        jobs = int(launcher.get("n_jobs") or 1)
        cores = os.cpu_count() or 1
        num_threads = max(1, cores // (cores if jobs < 1 else min(jobs, cores)))
    if num_threads is None and "torch" not in sys.modules:
        return  # torch still has its own count: leave it unimported for modes that do not need it
    import torch

    default = torch_default_threads()  # read before the first change
    torch.set_num_threads(num_threads or default)


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


def console_main() -> None:
    """The `trainer` command and `python -m trainer`: `main` as a process of its own, which ends as soon as main is
    done. `end_process` runs the exit functions, flushes stdout and stderr and leaves without the interpreter's
    teardown, which would free the run's ~400,000 objects of torch, Hydra and the model one by one (0.1-0.3 s of
    every run on a small CPU). An uncaught exception, or a SystemExit with a message, exits the ordinary way, with
    the objects frozen so that the final garbage-collector passes skip them."""
    atexit.register(gc.freeze)
    try:
        main()
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            end_process(stop.code or 0)
        raise
    end_process(0)


def end_process(status: int) -> None:
    """Exit with `status` now: every atexit function runs first, in its usual order (trackers finish, logging
    flushes and closes its files, loader workers are joined), then stdout and stderr are flushed. While a
    non-daemon thread still runs, this returns instead, and the interpreter waits for it as usual."""
    run_exit_functions = getattr(atexit, "_run_exitfuncs", None)
    main_thread = threading.main_thread()
    if run_exit_functions is None or any(thread is not main_thread and not thread.daemon and thread.is_alive()
                                         for thread in threading.enumerate()):
        return
    run_exit_functions()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(status)


def main() -> None:
    """`python -m trainer`: `--help`, the torchrun check, then Hydra composes the config and runs the task."""
    global _main_call
    args = sys.argv[1:]
    if ("--help" in args or "-h" in args) and "--hydra-help" not in args:
        print_help([a for a in args if "=" in a or a.startswith("~")])  # the overrides, not Hydra's flags
        return
    if launched_by_torchrun() and ("-m" in args or "--multirun" in args):
        print("error: a sweep (-m) cannot run under torchrun; start one torchrun job per configuration",
              file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    sys.argv = quiet_secondary_ranks(sys.argv)
    _main_call = MainCall()
    failed = True
    try:
        with guarded_hydra_steps(_main_call.composition_errors_in_one_line):
            _hydra_task()
        failed = False
    except SystemExit as stop:
        failed = stop.code not in (None, 0)
        raise
    finally:  # unlock the run dir; a failed call leaves no run dir it created that holds nothing yet
        release_claims(failed)
