"""Schemas of the `logger` group: one dataclass per logger. `cfg.logger` is a dict of named loggers
(`logger=tensorboard` gives `{tensorboard: ...}`, `logger=many` three of them, `logger=none` none), so a key is
changed as `logger.<name>.<key>=value`, e.g. `logger=mlflow logger.mlflow.experiment=cifar`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.schema.checks import require

WANDB_MODES = ("offline", "disabled")


@dataclass
class TensorBoardLoggerConfig:
    """`logger=tensorboard`: event files in <run dir>/<log_dir> (`tensorboard --logdir outputs`)."""

    _target_: str = "trainer.reporting.loggers.TensorBoardLogger"
    log_dir: str = "tb"
    graph: bool = False  # true: add the model graph (TensorBoard's Graphs tab), traced on one val batch at the end


@dataclass
class CSVLoggerConfig:
    """`logger=csv`: <run dir>/<log_dir>/metrics_steps.csv (the step-level curves; metrics.csv has the epochs)
    and params.json (the run's params)."""

    _target_: str = "trainer.reporting.trackers.CSVLogger"
    log_dir: str = "csv"


@dataclass
class MLflowLoggerConfig:
    """`logger=mlflow`: one MLflow run per training run in a local SQLite store, no server needed
    (`mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db`). A sweep's jobs are child runs of one parent."""

    _target_: str = "trainer.reporting.trackers.MLflowLogger"
    tracking_uri: str = "sqlite:///${paths.output_root}/mlflow.db"  # or a server's http://host:port
    experiment: str = "trainer"  # created when missing
    run_name: str | None = None  # null: the options chosen, e.g. "resnet18 adamw cosine"
    tags: list[str] = field(default_factory=list)  # `name` (set to "true") or `key=value`: tags=[a,"k=v"]
    artifact_location: str | None = None  # a new experiment's artifacts; null: mlruns/ beside the SQLite file

    def __post_init__(self) -> None:
        require(bool(self.tracking_uri), "tracking_uri", "a tracking URI (sqlite:///PATH or http://...)",
                self.tracking_uri)
        require(bool(self.experiment), "experiment", "an experiment name", self.experiment)


@dataclass
class WandbLoggerConfig:
    """`logger=wandb`: a W&B run written offline under <dir>/wandb/offline-run-*/; `wandb sync <that dir>`
    uploads it later. Nothing is sent while training."""

    _target_: str = "trainer.reporting.trackers.WandbLogger"
    project: str = "trainer"
    mode: str = "offline"  # offline | disabled (the run is never sent while training)
    dir: str | None = None  # null: the run dir
    run_name: str | None = None  # null: the options chosen, e.g. "resnet18 adamw cosine"
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require(self.mode in WANDB_MODES, "mode", "one of " + ", ".join(WANDB_MODES), self.mode)
        require(bool(self.project), "project", "a project name", self.project)


SCHEMAS = {
    "tensorboard": TensorBoardLoggerConfig,
    "csv": CSVLoggerConfig,
    "mlflow": MLflowLoggerConfig,
    "wandb": WandbLoggerConfig,
}
