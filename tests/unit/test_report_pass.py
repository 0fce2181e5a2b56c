"""The end-of-run report draws the predictions that the pass scoring the selected weights collected: the same
report as a separate pass over best.pt makes, without reading the data again; a pass of its own only where no
pass of the run scored them exactly (a resumed run whose best epoch came before the resume; eval.tta or torchrun
on data without a test split)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import read_csv, read_json, run_cli_in_process
from trainer.reporting import report
from trainer.training.metrics import Predictions, merge_shards

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: one thread is the fastest
QUICK = ("trainer.progress=none", "logger=none")


@pytest.fixture
def drawn(monkeypatch) -> list[dict]:
    """Each report's confusion matrix and samples, recorded instead of drawn (test_report.py tests the drawing)."""
    reports: list[dict] = []

    def confusion(matrix, classes, title=""):
        reports.append({"matrix": matrix.clone()})

    def samples(images, predicted, true, title=""):
        reports[-1] |= {"samples": images.clone(), "labels": (predicted, true)}

    monkeypatch.setattr(report, "curves_figure", lambda history, title="": None)
    monkeypatch.setattr(report, "confusion_figure", confusion)
    monkeypatch.setattr(report, "samples_figure", samples)
    monkeypatch.setattr(report, "render", lambda figure: np.zeros((2, 2, 4), dtype=np.uint8))
    return reports


@pytest.fixture
def own_passes(monkeypatch) -> list[Path]:
    """The run dirs of the report's own passes over best.pt (`report.predict_best`), as they are made."""
    calls, original = [], report.predict_best

    def counted(run_dir, *args, **kwargs):
        calls.append(Path(run_dir))
        return original(run_dir, *args, **kwargs)

    monkeypatch.setattr(report, "predict_best", counted)
    return calls


def separate_report(run_dir: Path, folder: Path) -> None:
    """The report of the run's best.pt, written into `folder` by the report hook with no predictions from a pass
    of the run (as after a resume whose best epoch came before it): it loads best.pt and reads the val split."""
    from types import SimpleNamespace

    from trainer.build import build_data, build_model
    from trainer.reporting.hooks import RunReport
    from trainer.reporting.loggers import Loggers
    from trainer.training.checkpoint import TrainState
    from trainer.training.runtime import Precision
    from trainer.training.timing import PhaseTimes

    cfg, cpu = OmegaConf.load(run_dir / ".hydra" / "config.yaml"), torch.device("cpu")
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(run_dir / "checkpoints" / "best.pt", folder / "checkpoints" / "best.pt")
    run = SimpleNamespace(cfg=cfg, datamodule=build_data(cfg, with_augment=False), device=cpu,
                          model=build_model(cfg.model), precision=Precision("32", cpu))
    RunReport(run, folder, Loggers(), PhaseTimes()).at_end(TrainState())


def test_the_report_of_a_run_is_that_of_a_separate_pass_over_best_pt(tmp_path: Path, drawn, own_passes) -> None:
    run_dir, separate_dir = tmp_path / "run", tmp_path / "separate"
    # val/acc minimised: best.pt holds epoch 1 of 2, whose validation is not the last one
    result = run_cli_in_process(f"hydra.run.dir={run_dir}", *QUICK, "trainer.max_epochs=2",
                                "trainer.limit_train_batches=3", "trainer.monitor_mode=min", report=True)
    assert result.returncode == 0, result.stderr
    summary, rows = read_json(run_dir / "summary.json"), read_csv(run_dir / "metrics.csv")
    assert (summary["best_epoch"], summary["epochs"]) == (1, 2) and rows[0]["val_acc"] != rows[1]["val_acc"]
    assert own_passes == []  # the run's report read no data: it drew the best epoch's validation
    assert "predictions" not in torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["state"]

    separate_report(run_dir, separate_dir)
    assert own_passes == [separate_dir]
    ran, separate = drawn
    assert torch.equal(ran["matrix"], separate["matrix"]) and torch.equal(ran["samples"], separate["samples"])
    assert ran["labels"] == separate["labels"] and len(ran["samples"]) == report.REPORT_SAMPLES
    assert (run_dir / "per_class.csv").read_text() == (separate_dir / "per_class.csv").read_text()
    assert float(ran["matrix"].trace() / ran["matrix"].sum()) == pytest.approx(float(rows[0]["val_acc"]))
    assert int(ran["matrix"].sum()) == 359  # digits' whole val split


def test_the_test_split_report_is_the_test_pass(tmp_path: Path, drawn, own_passes) -> None:
    run_dir = tmp_path / "run"
    data = ("data=fake", "data.image_size=8", "data.train_size=32", "data.val_size=16", "data.test_size=24",
            "model=mlp", "trainer.max_epochs=1")
    result = run_cli_in_process(f"hydra.run.dir={run_dir}", *QUICK, *data, report=True)
    assert result.returncode == 0, result.stderr
    summary, (ran,) = read_json(run_dir / "summary.json"), drawn
    assert own_passes == []
    assert int(ran["matrix"].sum()) == summary["test_samples"] == 24
    assert float(ran["matrix"].trace()) / 24 == pytest.approx(summary["test_acc"])


@pytest.mark.parametrize(("test_size", "tta", "report_on", "world_size", "collected"), [
    (8, "flip", True, 2, "test"), (0, "none", True, 1, "val"), (0, "none", False, 1, None),
    (0, "flip", True, 1, None),  # validation scores without TTA
    (0, "none", True, 2, None),  # each rank's BatchNorm statistics are its own; best.pt holds rank 0's
])
def test_the_pass_that_collects_the_report(test_size: int, tta: str, report_on: bool, world_size: int,
                                           collected: str | None) -> None:
    from types import SimpleNamespace

    from trainer.training.distributed import Distributed
    from trainer.training.scoring import collected_split

    cfg = OmegaConf.create({"trainer": {"report": report_on, "save_checkpoints": True}, "eval": {"tta": tta}})
    run = SimpleNamespace(cfg=cfg, datamodule=SimpleNamespace(test_set=[0] * test_size or None),
                          ctx=Distributed(world_size=world_size))
    assert collected_split(run) == collected  # None with a report: it makes its own pass (separate_report's)


def test_shards_merge_into_the_split_in_its_order() -> None:
    labels = torch.arange(11)
    whole = Predictions(labels % 3, labels, torch.arange(11.0).view(11, 1, 1, 1))
    shards = [Predictions(whole.predicted[r::3], whole.targets[r::3], whole.samples[r::3][:2]) for r in range(3)]
    merged = merge_shards(shards, keep=5)
    assert torch.equal(merged.predicted, whole.predicted) and torch.equal(merged.targets, whole.targets)
    assert torch.equal(merged.samples, whole.samples[:5])
