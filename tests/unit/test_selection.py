"""Model selection: the monitor that picks best.pt, top-k checkpoints, early stopping, EMA-selected weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.conftest import compose, read_csv, read_json, run_cli_in_process
from trainer.errors import ConfigError
from trainer.schema import validate
from trainer.training.selection import Monitor, update_top_k

# A short digits run on the CPU: 4 batches of 64 per epoch, no figures, no logger.
QUICK = ("trainer.limit_train_batches=4", "trainer.progress=none", "logger=none", "trainer.device=cpu")
# A vanishing lr and an MLP (no BatchNorm statistics to drift): every epoch validates alike, a plateau.
PLATEAU = ("model=mlp", "optim=sgd", "optim.lr=1e-12", "scheduler=none", "trainer.early_stopping.min_delta=0.001",
           *QUICK)


def test_the_monitor_reads_its_column_and_infers_its_direction() -> None:
    assert Monitor.from_config(compose().trainer) == Monitor("val/acc", "max")
    loss = Monitor.from_config(compose("trainer.monitor=val/loss").trainer)
    assert (loss.mode, loss.key, loss.weights) == ("min", "val_loss", "model")
    assert Monitor.from_config(compose("trainer.monitor=val/loss", "trainer.monitor_mode=max").trainer).mode == "max"
    ema = Monitor("val_ema/acc", "max")
    assert (ema.key, ema.uses_ema, ema.weights) == ("val_ema_acc", True, "ema")
    assert loss.value({"val_loss": 0.25}) == 0.25
    assert loss.value({"val_loss": math.nan}) is None and loss.value({}) is None


def test_improvement_respects_the_direction_and_min_delta() -> None:
    up, down = Monitor("val/acc", "max"), Monitor("val/loss", "min")
    assert up.improves(0.5, None) and not up.improves(None, 0.5)
    assert up.improves(0.6, 0.5) and not up.improves(0.5, 0.5) and not up.improves(0.55, 0.5, min_delta=0.1)
    assert down.improves(0.4, 0.5) and not down.improves(0.6, 0.5) and not down.improves(0.45, 0.5, min_delta=0.1)


def test_top_k_keeps_exactly_the_k_best_best_first() -> None:
    monitor, entries = Monitor("val/loss", "min"), []
    kept_flags = []
    for epoch, loss in enumerate([0.9, 0.5, 0.7, 0.6, 0.8, 0.4], start=1):
        entries, kept = update_top_k(entries, epoch, loss, 3, monitor)
        kept_flags.append(kept)
    assert [e["epoch"] for e in entries] == [6, 2, 4]
    assert [e["file"] for e in entries][0] == "epoch=6-val_loss=0.4000.pt"
    assert kept_flags == [True, True, True, True, False, True]
    assert update_top_k(entries, 7, 0.1, 0, monitor) == ([], False)  # k = 0 keeps none
    assert update_top_k(entries, 7, None, 3, monitor) == (entries, False)  # a non-finite epoch is never kept


@pytest.mark.parametrize(("overrides", "message"), [
    (("trainer.monitor=val_ema/acc",), "val_ema/\\* scores the EMA weights"),
    (("trainer.monitor=val/top5", "data=fake", "data.num_classes=4"), "more than 5 classes"),
    (("trainer.monitor=val/f1",), "trainer.monitor must be one of val/acc, val/loss"),
    (("trainer.save_top_k=-1",), "save_top_k must be >= 0"),
    (("trainer.early_stopping.patience=0",), "patience must be >= 1 or null"),
])
def test_monitors_a_run_cannot_measure_are_refused(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose(*overrides))


def test_save_top_k_keeps_k_files_plus_best_and_last(tmp_path: Path) -> None:
    run = run_cli_in_process(*QUICK, "trainer.max_epochs=4", "trainer.save_top_k=2", "trainer.monitor=val/loss",
                             "trainer.save_every_n_epochs=3", f"hydra.run.dir={tmp_path}")
    assert run.returncode == 0, run.stderr
    rows = read_csv(tmp_path / "metrics.csv")
    ranked = sorted(rows, key=lambda r: float(r["val_loss"]))[:2]
    expected = {f"epoch={r['epoch']}-val_loss={float(r['val_loss']):.4f}.pt" for r in ranked}
    files = {p.name for p in (tmp_path / "checkpoints").glob("*.pt")}
    assert files == expected | {"best.pt", "last.pt", "epoch=3.pt"}
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == int(ranked[0]["epoch"]) and best["selected"]["monitor"] == "val/loss"
    summary = read_json(tmp_path / "summary.json")
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best_score"] == pytest.approx(float(ranked[0]["val_loss"]))
    assert summary["selected_on"] == "val" and summary["test_acc"] is None  # digits has no test split


def test_early_stopping_stops_a_plateau_and_resumes_exactly(tmp_path: Path) -> None:
    stop = ("trainer.early_stopping.patience=2", "trainer.monitor=val/loss")
    whole = run_cli_in_process(*PLATEAU, *stop, "trainer.max_epochs=10", f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr
    assert "early stopping after epoch 3: val/loss has not improved" in (tmp_path / "whole" / "train.log").read_text()
    summary = read_json(tmp_path / "whole" / "summary.json")
    assert (summary["stopped_early"], summary["stopped_epoch"], summary["epochs"]) == (True, 3, 3)

    # The same run cut after epoch 2 (one epoch without improvement counted), then resumed: it must stop at 3.
    cut = tmp_path / "cut"
    first = run_cli_in_process(*PLATEAU, *stop, "trainer.max_epochs=2", f"hydra.run.dir={cut}")
    assert first.returncode == 0 and not read_json(cut / "summary.json")["stopped_early"]
    resumed = run_cli_in_process(*PLATEAU, *stop, "trainer.max_epochs=10", "trainer.resume=auto",
                                 f"hydra.run.dir={cut}")
    assert resumed.returncode == 0, resumed.stderr
    assert read_json(cut / "summary.json")["stopped_epoch"] == 3
    assert (cut / "metrics.csv").read_bytes() == (tmp_path / "whole" / "metrics.csv").read_bytes()
    again = run_cli_in_process(*PLATEAU, *stop, "trainer.max_epochs=10", "trainer.resume=auto",
                               f"hydra.run.dir={cut}")
    assert again.returncode == 0 and len(read_csv(cut / "metrics.csv")) == 3  # a stopped run stays stopped


def test_an_ema_monitored_best_pt_holds_the_ema_weights(tmp_path: Path) -> None:
    run = run_cli_in_process(*QUICK, "trainer.max_epochs=1", "regularization.ema_decay=0.5",
                             "trainer.monitor=val_ema/acc", f"hydra.run.dir={tmp_path}")
    assert run.returncode == 0, run.stderr
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert best["weights"] == "ema" and last["weights"] == "model"
    assert best["model"].keys() == ema.keys() and all(torch.equal(best["model"][k], ema[k]) for k in ema)
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in ema)  # not the raw weights
    summary = read_json(tmp_path / "summary.json")
    assert summary["best_val_acc"] == pytest.approx(float(read_csv(tmp_path / "metrics.csv")[0]["val_ema_acc"]))
    assert "EMA weights" in summary["tested"]

    best_pt = tmp_path / "checkpoints" / "best.pt"
    resumed = run_cli_in_process(*QUICK, "trainer.max_epochs=1", "regularization.ema_decay=0.5",
                                 "trainer.monitor=val_ema/acc", f"trainer.resume={best_pt}",
                                 f"hydra.run.dir={tmp_path / 'again'}")
    assert resumed.returncode != 0 and "holds the EMA weights as its model" in resumed.stderr
