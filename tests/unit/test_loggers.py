"""The `logger` group as a list of loggers: TensorBoard, CSV, MLflow (a local SQLite store) and W&B (offline),
read back with each tool's own reader after one tiny in-process training run."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.conftest import compose, read_csv, read_json, run_cli_in_process
from trainer.errors import UnknownKeyError
from trainer.reporting.loggers import Loggers, run_params
from trainer.schema import validate

QUICK = ("trainer.limit_train_batches=4", "trainer.progress=none", "trainer.device=cpu")
EVERY = 2  # trainer.log_every_n_steps of the shared run: 2 epochs of 4 steps give 4 step-level points


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, mlflow_store) -> Path:
    """A 2-epoch digits run with every logger at once (logger=[many,wandb]) and the report (its PNGs); MLflow's
    store is a copy of an empty one (test_a_resumed_run_continues_its_mlflow_run starts from no store at all)."""
    root = tmp_path_factory.mktemp("loggers")
    mlflow_store(root)
    result = run_cli_in_process(f"hydra.run.dir={root / 'run'}", f"paths.output_root={root}", "logger=[many,wandb]",
                                "trainer.max_epochs=2", f"trainer.log_every_n_steps={EVERY}", *QUICK, report=True)
    assert result.returncode == 0, result.stderr
    return root / "run"


def epoch_steps(run_dir: Path) -> list[int]:
    return [int(row["step"]) for row in read_csv(run_dir / "metrics.csv")]


def test_logger_options_compose_as_named_loggers() -> None:
    assert list(compose("logger=many").logger) == ["tensorboard", "csv", "mlflow"]
    assert list(compose("logger=none").logger) == []
    assert list(compose().logger) == ["tensorboard"]
    cfg = compose("logger=mlflow", "logger.mlflow.experiment=foo", "logger.mlflow.tags=[a,b]", "paths.output_root=/x")
    validate(cfg)
    assert cfg.logger.mlflow.experiment == "foo" and list(cfg.logger.mlflow.tags) == ["a", "b"]
    assert cfg.logger.mlflow.tracking_uri == "sqlite:////x/mlflow.db"  # follows paths.output_root


def test_an_unknown_logger_key_is_refused() -> None:
    with pytest.raises(UnknownKeyError, match="logger.tensorboard.grph: TensorBoardLoggerConfig .* logger"
                                              r"\.tensorboard\.graph"):
        validate(compose("+logger.tensorboard.grph=1"))


def test_run_params_describe_the_run_not_where_it_writes() -> None:
    params = run_params(compose("optim=sgd"))
    assert params["optim"] == "SGD" and params["model"] and params["data"]  # outside Hydra: the target's name
    assert params["optim.lr"] == compose("optim=sgd").optim.lr and params["eval.tta"] == "none"
    assert not [key for key in params if key.endswith("_target_") or key.split(".")[0] in ("paths", "logger")]
    assert not {"mode", "ckpt", "eval.split", "trainer.resume", "trainer.progress"} & params.keys()
    assert all(isinstance(value, str | int | float | bool) for value in params.values())


def test_the_fan_out_gives_the_graph_only_to_loggers_that_want_it() -> None:
    class Recorder:
        def __init__(self, graph: bool) -> None:
            self.graph, self.calls = graph, []

        def log_graph(self, model, sample) -> None:
            self.calls.append("graph")

        def close(self, status: str = "FINISHED") -> None:
            self.calls.append(status)

    wants, not_ = Recorder(True), Recorder(False)
    loggers = Loggers({"a": wants, "b": not_})
    assert loggers.graph and not Loggers({"b": not_}).graph and not Loggers().graph
    loggers.log_graph(None, None)
    loggers.close("FAILED")
    assert wants.calls == ["graph", "FAILED"] and not_.calls == ["FAILED"]


def test_mlflow_holds_params_step_and_epoch_metrics_and_the_report(logged_run: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{logged_run.parent / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("trainer").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "simple_cnn adamw cosine"
    params = run.data.params
    assert params["model"] == "simple_cnn" and params["optim"] == "adamw" and params["data.batch_size"] == "64"
    assert not [key for key in params if "_target_" in key or key.startswith("paths.")]
    history = client.get_metric_history(run.info.run_id, "train/loss_step")
    assert [m.step for m in history] == list(range(EVERY, 9, EVERY))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")] == epoch_steps(logged_run)
    assert "hparam/best_val_acc" in run.data.metrics
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "report")]
    assert "report/curves.png" in artifacts
    assert (logged_run.parent / "mlruns" / "trainer").is_dir()  # beside the store, not in the launch folder


def test_tensorboard_has_step_curves_and_epoch_points_at_global_steps(logged_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logged_run / "tb"))
    events.Reload()
    step_points = events.Scalars("train/loss_step")
    assert len(step_points) == 4 > len(epoch_steps(logged_run))
    assert [e.step for e in events.Scalars("val/acc")] == epoch_steps(logged_run)
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_csv_logger_writes_step_rows_and_params(logged_run: Path) -> None:
    rows = read_csv(logged_run / "csv" / "metrics_steps.csv")
    assert [int(r["step"]) for r in rows] == list(range(EVERY, 9, EVERY))
    assert set(rows[0]) == {"step", "train/loss_step", "lr"}  # the epoch rows stay in metrics.csv alone
    params = read_json(logged_run / "csv" / "params.json")
    assert params["model"] == "simple_cnn" and "paths.output_root" not in params


def wandb_records(path: Path) -> list:
    """The records of a .wandb file: W&B's LevelDB-style log (a 7-byte header, 32 KiB blocks of chunks, each
    chunk: crc32, length, type 1 full / 2 first / 3 middle / 4 last) of protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        chunks, pos = chunks + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def test_wandb_writes_an_offline_run_with_config_and_history(logged_run: Path) -> None:
    [run_file] = (logged_run / "wandb").glob("offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "simple_cnn adamw cosine" and run.project == "trainer"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["model"] == "simple_cnn" and "paths.output_root" not in config
    history = [{item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [h["_step"] for h in history if "train/loss_step" in h] == list(range(EVERY, 9, EVERY))
    val_steps = [h["_step"] for h in history if "val/acc" in h]
    assert val_steps == epoch_steps(logged_run)
    assert any(h.get("report/curves._type") == "image-file" for h in history)  # the report's figures as images
    assert any(r.WhichOneof("record_type") == "exit" for r in records)  # finished


def test_logger_none_writes_no_logger_files(tmp_path: Path) -> None:
    result = run_cli_in_process(f"hydra.run.dir={tmp_path / 'run'}", f"paths.output_root={tmp_path}", "logger=none",
                                "trainer.max_epochs=1", *QUICK)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "metrics.csv").is_file()
    assert not {"tb", "csv", "wandb"} & {p.name for p in (tmp_path / "run").iterdir()}
    assert not (tmp_path / "mlflow.db").exists()


def test_a_sweeps_mlflow_runs_are_children_of_one_parent(tmp_path: Path, monkeypatch, mlflow_store) -> None:
    from mlflow.tracking import MlflowClient

    from trainer.reporting import trackers

    uri = mlflow_store(tmp_path)
    jobs = []
    for num in (0, 1):
        monkeypatch.setattr(trackers, "sweep_job", lambda num=num: (str(tmp_path / "sweep"), num))
        jobs.append(trackers.MLflowLogger(str(tmp_path / str(num)), uri, params={"seed": num}, name="m"))
    jobs[0].close()
    run_ids = [job.run_id for job in jobs[1:]]
    jobs[1].close("FAILED")
    client = MlflowClient(uri)
    parents = {client.get_run(rid).data.tags["mlflow.parentRunId"] for rid in run_ids}
    [runs] = [client.search_runs([jobs[0].experiment_id], "tags.`trainer.role` = 'sweep'")]
    assert parents == {runs[0].info.run_id} and len(runs) == 1
    assert client.get_run(run_ids[0]).info.status == "FAILED" and client.get_run(run_ids[0]).info.run_name == "m #1"


def test_csv_logger_on_resume_replaces_the_rows_from_the_resume_step(tmp_path: Path) -> None:
    from trainer.reporting.trackers import CSVLogger

    first = CSVLogger(str(tmp_path))
    for step in (2, 4, 6):
        first.log_scalars({"train/loss_step": step}, step, every_step=True)
    first.close()
    again = CSVLogger(str(tmp_path))
    again.log_scalars({"train/loss_step": -4}, 4, every_step=True)
    again.close()
    rows = read_csv(tmp_path / "csv" / "metrics_steps.csv")
    assert [(r["step"], r["train/loss_step"]) for r in rows] == [("2", "2"), ("4", "-4")]


def test_a_run_that_raises_ends_its_tracker_runs_failed_or_killed() -> None:
    from trainer.errors import Preempted
    from trainer.reporting.loggers import ended_on_error

    class Recorder:
        statuses: list[str] = []

        def close(self, status: str = "FINISHED") -> None:
            self.statuses.append(status)

    logger = Recorder()
    for error, status in ((ValueError("boom"), "FAILED"), (Preempted("stopped by SIGTERM"), "KILLED")):
        with pytest.raises(type(error)), ended_on_error(logger):
            raise error
        assert logger.statuses[-1] == status
    with ended_on_error(logger):
        pass
    assert len(logger.statuses) == 2  # a block that ends normally closes nothing: the run's at_end does


@pytest.mark.slow  # a fresh MLflow store costs seconds; test_mlflow_holds_params... covers the logger itself
def test_a_resumed_run_continues_its_mlflow_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from trainer.reporting.trackers import MLflowLogger

    uri, run_dir = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "run")
    first = MLflowLogger(run_dir, uri, params={"optim.lr": 0.1})
    first.log_scalars({"train/loss_step": 1.0}, 10)
    first.close("KILLED")  # stopped by a signal; the same command resumes it
    again = MLflowLogger(run_dir, uri, params={"optim.lr": 0.1})
    again.log_scalars({"train/loss_step": 0.5}, 20)
    again.close()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("trainer").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss_step")] == [10, 20]
