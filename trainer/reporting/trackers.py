"""The CSV, MLflow and W&B loggers (`logger=csv`, `logger=mlflow`, `logger=wandb`); none needs a network.

MLflow and W&B are imported when their logger is built, so runs without them never pay for the import.
"""

from __future__ import annotations

import atexit
import csv
import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import OutputError
from trainer.reporting.run_files import write_csv, write_json

if TYPE_CHECKING:
    import torch
    from torch import nn

    from trainer.reporting.loggers import Params

MLFLOW_PARAM_CHARS = 6000  # MLflow refuses longer param values
MLFLOW_BATCH = 100  # params (and metrics) per log_batch call: the store's limit


class CSVLogger:
    """`<run dir>/<log_dir>/metrics_steps.csv`: one row per logged step (train/loss_step, lr), and params.json.

    The epoch rows are metrics.csv's (every run writes it), so they are not repeated here. The file is rewritten
    whole at each epoch's end and at the close (atomically); a resumed run drops the rows from its resume step on.
    """

    def __init__(self, run_dir: str, log_dir: str = "csv", params: Params | None = None, name: str = "") -> None:
        self.folder = Path(run_dir) / log_dir
        self.path = self.folder / "metrics_steps.csv"
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():  # a resumed run: keep what the interrupted run logged
            with self.path.open() as handle:
                self.rows = list(csv.DictReader(handle))
        write_json(self.folder / "params.json", dict(params or {}))

    def log_scalars(self, scalars: dict[str, float], step: int, every_step: bool = False) -> None:
        if every_step:
            self.rows = [row for row in self.rows if int(row["step"]) < step] + [{"step": step, **scalars}]
        else:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            fields = list(dict.fromkeys(key for row in self.rows for key in row))
            write_csv(self.path, self.rows, fields)

    def log_images(self, tag: str, images: torch.Tensor, step: int = 0) -> None:
        pass

    def log_artifact(self, path: Path) -> None:
        pass

    def log_hparams(self, hparams: Params, metrics: dict[str, float], step: int = 0) -> None:
        pass

    def log_graph(self, model: nn.Module, sample: torch.Tensor) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        self.flush()


@contextmanager
def sqlite_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive lock on `<database>.lock` beside a `sqlite:///` store (nothing for other stores)."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sweep_job() -> tuple[str, int] | None:
    """(the sweep dir, the job number) when this run is a job of a Hydra multirun, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    return str(Path(hydra.sweep.dir).resolve()), int(hydra.job.num)


class MLflowLogger:
    """One MLflow run per training run: params, metrics with their global step, the report's PNGs as artifacts,
    the final metrics; ended FINISHED by close(), or FAILED when the process exits without a close (a run that
    raised). A Hydra multirun's jobs are child runs of one parent run per sweep (tag trainer.sweep: the sweep dir).
    """

    def __init__(self, run_dir: str, tracking_uri: str, experiment: str = "trainer", run_name: str | None = None,
                 tags: list[str] | None = None, artifact_location: str | None = None,
                 params: Params | None = None, name: str = "") -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # mlflow's import would report usage online
        from mlflow import MlflowClient

        for noisy in ("mlflow", "alembic"):  # the SQLite store's first use logs its table creation at INFO
            logging.getLogger(noisy).setLevel(logging.WARNING)

        run_tags = dict(tag_pair(tag) for tag in tags or []) | {"trainer.run_dir": str(Path(run_dir).resolve())}
        sweep = sweep_job()
        label = run_name or name or Path(run_dir).name
        # Parallel sweep jobs on one machine take turns creating the SQLite store, the experiment and the parent
        # run, so that each is made once (the store's schema creation does not survive two at a time).
        with sqlite_lock(tracking_uri):
            self.client, self.step = MlflowClient(tracking_uri), 0
            self.experiment_id = self.experiment(experiment, artifact_location or default_artifacts(tracking_uri,
                                                                                                 experiment))
            if sweep is not None:
                run_tags |= {"trainer.sweep": sweep[0], "mlflow.parentRunId": self.parent_run(sweep[0], experiment)}
            self.run_id = self.resumed_run(run_tags["trainer.run_dir"])
            if self.run_id is None:
                self.run_id = self.client.create_run(self.experiment_id, tags=run_tags,
                                                     run_name=f"{label} #{sweep[1]}" if sweep else label).info.run_id
        if not self.resumed:
            self.log_params(params or {})
        atexit.register(self.close_at_exit)

    def resumed_run(self, run_dir: str) -> str | None:
        """The run this run dir already has (a resume continues it, RUNNING again, its params as they were)."""
        found = self.client.search_runs([self.experiment_id], f"tags.`trainer.run_dir` = '{run_dir}'", max_results=1)
        self.resumed = bool(found)
        if not found:
            return None
        self.client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id

    def experiment(self, name: str, artifact_location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=artifact_location)

    def parent_run(self, sweep_dir: str, experiment: str) -> str:
        """The sweep's parent run (created by its first job), FINISHED again as each job ends."""
        found = self.client.search_runs([self.experiment_id], f"tags.`trainer.sweep` = '{sweep_dir}' and "
                                        "tags.`trainer.role` = 'sweep'", max_results=1)
        if found:
            return found[0].info.run_id
        return self.client.create_run(self.experiment_id, run_name=f"sweep {Path(sweep_dir).name}",
                                      tags={"trainer.sweep": sweep_dir, "trainer.role": "sweep"}).info.run_id

    def log_params(self, params: Params) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)[:MLFLOW_PARAM_CHARS]) for key, value in params.items()]
        for start in range(0, len(items), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MLFLOW_BATCH])

    def log_scalars(self, scalars: dict[str, float], step: int, every_step: bool = False) -> None:
        import time

        from mlflow.entities import Metric

        self.step = max(self.step, step)
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in scalars.items()]
        for start in range(0, len(metrics), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start:start + MLFLOW_BATCH])

    def log_images(self, tag: str, images: torch.Tensor, step: int = 0) -> None:
        pass  # the report's PNGs come as artifacts (log_artifact)

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="report")

    def log_hparams(self, hparams: Params, metrics: dict[str, float], step: int = 0) -> None:
        """The final metrics (hparam/best_val_acc, ...); the params went in when the run began."""
        self.log_scalars(metrics, max(step, self.step))

    def log_graph(self, model: nn.Module, sample: torch.Tensor) -> None:
        pass

    def close_at_exit(self) -> None:
        """A run still open when the process exits raised: mark it FAILED (quietly: the error is already out)."""
        try:
            self.close("FAILED")
        except Exception:  # noqa: BLE001 - the store may be gone (a deleted folder); nothing more to do at exit
            pass

    def close(self, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        atexit.unregister(self.close_at_exit)
        self.client.set_terminated(self.run_id, status)
        parent = self.client.get_run(self.run_id).data.tags.get("mlflow.parentRunId")
        if parent:
            self.client.set_terminated(parent, "FINISHED")
        self.run_id = None


def tag_pair(tag: str) -> tuple[str, str]:
    """A tag from logger.mlflow.tags: `key=value`, or a bare `name` (set to "true")."""
    key, sep, value = str(tag).partition("=")
    return (key, value) if sep else (key, "true")


def default_artifacts(tracking_uri: str, experiment: str) -> str | None:
    """`mlruns/<experiment>/` beside a SQLite store (MLflow's own default is ./mlruns in the launch folder)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    folder = Path(tracking_uri[len(prefix):]).resolve().parent / "mlruns" / experiment.replace("/", "_")
    return folder.as_uri()


class WandbLogger:
    """A W&B run written offline under `<dir>/wandb/offline-run-*/` (config: the run's params; scalars at their
    global step; the report's figures as images; the final metrics in the summary). `wandb sync` uploads it."""

    def __init__(self, run_dir: str, project: str = "trainer", mode: str = "offline", dir: str | None = None,
                 run_name: str | None = None, tags: list[str] | None = None, params: Params | None = None,
                 name: str = "") -> None:
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.wandb, self.step = wandb, 0
        folder = Path(dir or run_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot write W&B's offline run in {folder}: {err.strerror}") from None
        settings = wandb.Settings(silent=True, console="off", disable_git=True, save_code=False,
                                  x_disable_stats=True, reinit="create_new")
        self.run = wandb.init(mode=mode, project=project, dir=str(folder), config=dict(params or {}),
                              name=run_name or name or Path(run_dir).name, tags=list(tags or []),
                              settings=settings)

    def log_scalars(self, scalars: dict[str, float], step: int, every_step: bool = False) -> None:
        self.step = max(self.step, step)  # W&B drops a point at an earlier step than its last
        self.run.log(dict(scalars), step=self.step)

    def log_images(self, tag: str, images: torch.Tensor, step: int = 0) -> None:
        if images.dim() == 4:
            from torchvision.utils import make_grid

            images = make_grid(images, nrow=min(8, len(images)))
        pixels = images.permute(1, 2, 0).cpu().numpy()
        self.run.log({tag: self.wandb.Image(pixels)}, step=self.step)

    def log_artifact(self, path: Path) -> None:
        pass  # the figures come as images (log_images)

    def log_hparams(self, hparams: Params, metrics: dict[str, float], step: int = 0) -> None:
        self.run.summary.update(dict(metrics))

    def log_graph(self, model: nn.Module, sample: torch.Tensor) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "FINISHED" else 1)
            self.run = None
