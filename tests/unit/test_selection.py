"""Model selection: the monitor that picks best.pt, top-k checkpoints, early stopping, EMA-selected weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose, read_csv, read_json, run_cli_in_process, write_checkpoint
from trainer.errors import CheckpointError, ConfigError
from trainer.schema import validate
from trainer.training.checkpoint import TrainState
from trainer.training.kept_checkpoints import KeptCheckpoints
from trainer.training.resume_config import check_resume_config
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
    run = run_cli_in_process(*QUICK, "trainer.max_epochs=1", "regularization.ema_decay=0.5", "data=fake",
                             "data.test_size=16", "trainer.monitor=val_ema/acc", f"hydra.run.dir={tmp_path}")
    assert run.returncode == 0, run.stderr
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    assert best["weights"] == "ema" and last["weights"] == "model"
    assert best["model"].keys() == ema.keys() and all(torch.equal(best["model"][k], ema[k]) for k in ema)
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in ema)  # not the raw weights
    summary = read_json(tmp_path / "summary.json")
    assert summary["best_val_acc"] == pytest.approx(float(read_csv(tmp_path / "metrics.csv")[0]["val_ema_acc"]))
    assert "EMA weights" in summary["tested"] and summary["test_samples"] == 16

    best_pt = tmp_path / "checkpoints" / "best.pt"
    resumed = run_cli_in_process(*QUICK, "trainer.max_epochs=1", "regularization.ema_decay=0.5", "data=fake",
                                 "data.test_size=16", "trainer.monitor=val_ema/acc", f"trainer.resume={best_pt}",
                                 f"hydra.run.dir={tmp_path / 'again'}")
    assert resumed.returncode != 0 and "holds the EMA weights as its model" in resumed.stderr


def kept_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_kill_between_the_two_phases_is_finished_or_undone_on_resume(tmp_path: Path) -> None:
    monitor = Monitor("val/loss", "min")
    kept = KeptCheckpoints(tmp_path, monitor, top_k=2, every_n_epochs=None)
    state = TrainState(epoch=3, best_epoch=3, history=[{"epoch": 3, "val_loss": 0.5}])
    selected, periodic, evicted = kept.plan(state, is_best=True)
    assert (selected, periodic, evicted) == (["best.pt", "epoch=3-val_loss=0.5000.pt"], [], [])
    for name in [*selected, "epoch=1-val_loss=0.9000.pt"]:  # a stray: an evicted file a kill left behind
        (kept.pending(name, 3) if name in selected else tmp_path / name).write_bytes(b"x")
    (tmp_path / "best.pt.pending-4").write_bytes(b"x")  # written for epoch 4, which last.pt never recorded
    for cut_short in (".last.pt.k2j4x.tmp", ".last.pt.5f0c.link"):  # a write and a link killed before their rename
        (tmp_path / cut_short).write_bytes(b"x")
    kept.reconcile(state)  # last.pt (epoch 3) was written: its pending files go in place, the rest goes
    assert kept_files(tmp_path) == {"best.pt", "epoch=3-val_loss=0.5000.pt"}

    state.history.append({"epoch": 4, "val_loss": 0.4})
    state.epoch = 4
    selected, _, evicted = kept.plan(state, is_best=True)
    assert selected == ["best.pt", "epoch=4-val_loss=0.4000.pt"] and evicted == []
    state.history.append({"epoch": 5, "val_loss": 0.3})
    state.epoch = 5
    assert kept.plan(state, is_best=True)[2] == ["epoch=3-val_loss=0.5000.pt"]  # the k = 2 best: epochs 5 and 4


def test_a_resume_into_a_new_run_dir_brings_best_pt_along(tmp_path: Path) -> None:
    source, target = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    source.mkdir(parents=True)
    write_checkpoint(source / "best.pt", epoch=2)
    (source / "epoch=2-val_acc=0.9000.pt").write_bytes(b"weights")
    state = TrainState(epoch=3, best_epoch=2, top_k=[{"epoch": 2, "score": 0.9, "file": "epoch=2-val_acc=0.9000.pt"}])
    kept = KeptCheckpoints(target, Monitor("val/acc", "max"), top_k=2, every_n_epochs=None)
    assert sorted(kept.adopt(source, state)) == ["best.pt", "epoch=2-val_acc=0.9000.pt"]
    assert (target / "best.pt").read_bytes() == (source / "best.pt").read_bytes()
    state.best_epoch = 1  # a source best.pt of another epoch (made after the resumed checkpoint) stays behind
    (target / "best.pt").unlink()
    assert kept.adopt(source, state) == []


def test_old_checkpoints_resume_with_the_data_keys_they_had(tmp_path: Path) -> None:
    old = OmegaConf.to_container(compose("data=mnist", "trainer.max_epochs=3"), resolve=True)
    for key in ("sampler", "val_fraction", "split_seed"):  # what a checkpoint from before these keys lacks
        del old["data"][key]
    checkpoint = {"config": old, "epoch": 3, "state": {"epoch": 3}}
    wanted = OmegaConf.to_container(compose("data=mnist", "trainer.max_epochs=3", "data.val_fraction=0"),
                                    resolve=True)
    check_resume_config(checkpoint, wanted, "old.pt", 1)  # it validated on the test split: val_fraction 0
    wanted["data"]["val_fraction"] = 0.1
    with pytest.raises(CheckpointError, match="data.val_fraction: checkpoint 0.0 vs requested 0.1"):
        check_resume_config(checkpoint, wanted, "old.pt", 1)
    digits = OmegaConf.to_container(compose(), resolve=True)
    del digits["data"]["sampler"]
    with pytest.raises(CheckpointError, match="before data=digits's val split was class-stratified"):
        check_resume_config({"config": digits, "epoch": 1}, OmegaConf.to_container(compose(), resolve=True),
                            "old.pt", 1)
    wanted = OmegaConf.to_container(compose("trainer.save_top_k=3"), resolve=True)
    current = {"config": OmegaConf.to_container(compose(), resolve=True), "epoch": 1}
    with pytest.raises(CheckpointError, match="resume with trainer.save_top_k=1"):
        check_resume_config(current, wanted, "last.pt", 1)


def test_without_checkpoints_the_best_epoch_is_tested_from_memory(tmp_path: Path) -> None:
    run = run_cli_in_process("data=fake", "data.test_size=32", "trainer.save_checkpoints=false",
                             "trainer.max_epochs=2", *QUICK, f"hydra.run.dir={tmp_path}")
    assert run.returncode == 0, run.stderr
    summary = read_json(tmp_path / "summary.json")
    assert "kept in memory" in summary["tested"] and summary["test_samples"] == 32
    assert 0.0 <= summary["test_acc"] <= 1.0 and summary["selected_on"] == "val"
    assert not (tmp_path / "checkpoints").exists()


def checkpoint_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the checkpoint files the run loads from now on, in order."""
    from trainer.training import checkpoint

    read, load = [], checkpoint.load_checkpoint

    def counted(path: str | Path, **options: object) -> dict:
        read.append(Path(path).name)
        return load(path, **options)

    monkeypatch.setattr(checkpoint, "load_checkpoint", counted)
    return read


@pytest.mark.parametrize("monitor", ["val/acc", "val_ema/acc"])
def test_when_the_last_epoch_wrote_best_pt_the_test_pass_takes_its_weights_from_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, monitor: str) -> None:
    """The weights that best.pt was just written from are still the model's (or the EMA's): the test pass scores
    them without reading the file back, and scores what mode=eval of the file scores."""
    from trainer.modes.evaluate import evaluate

    read = checkpoint_reads(monkeypatch)
    data = ("data=fake", "data.test_size=32", "regularization.ema_decay=0.5")
    run = run_cli_in_process(*QUICK, *data, "trainer.max_epochs=1", f"trainer.monitor={monitor}",
                             f"hydra.run.dir={tmp_path / 'run'}")
    assert run.returncode == 0, run.stderr
    summary = read_json(tmp_path / "run" / "summary.json")
    kind = " (EMA weights)" if monitor.startswith("val_ema") else ""
    assert summary["tested"] == f"checkpoints/best.pt, epoch 1{kind}" and "best.pt" not in read
    cfg = compose("mode=eval", f"ckpt={tmp_path / 'run' / 'checkpoints' / 'best.pt'}", *data, "trainer.progress=none")
    validate(cfg)
    evaluate(cfg, tmp_path / "eval")
    scored = read_json(tmp_path / "eval" / "eval.json")
    assert (scored["samples"], scored["test_acc"]) == (32, summary["test_acc"])
    assert scored["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-6)


def test_a_best_last_epoch_after_earlier_ones_is_tested_from_memory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    read = checkpoint_reads(monkeypatch)
    run = run_cli_in_process(*QUICK, "trainer.monitor=val/loss", "trainer.max_epochs=3",
                             f"hydra.run.dir={tmp_path}")  # digits: its val loss falls every epoch
    assert run.returncode == 0, run.stderr
    summary = read_json(tmp_path / "summary.json")
    assert summary["best_epoch"] == 3 and "best.pt" not in read  # digits has no test split: nothing to report as tested


def test_a_best_epoch_before_the_last_is_read_back_from_best_pt(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    read = checkpoint_reads(monkeypatch)
    run = run_cli_in_process(*PLATEAU, "data=fake", "data.test_size=32", "trainer.monitor=val/loss",
                             "trainer.max_epochs=2", f"hydra.run.dir={tmp_path}")
    assert run.returncode == 0, run.stderr
    summary = read_json(tmp_path / "summary.json")
    assert summary["best_epoch"] == 1 and summary["tested"] == "checkpoints/best.pt, epoch 1" and "best.pt" in read


def test_an_epoch_that_becomes_best_writes_one_file_under_every_name(tmp_path: Path) -> None:
    """best.pt, its top-k file and last.pt of the same epoch are hard links to one file; a later epoch that is not
    best replaces last.pt alone, and an EMA-selected best.pt is a file of its own."""
    run = run_cli_in_process(*PLATEAU, "trainer.monitor=val/loss", "trainer.save_top_k=2", "trainer.max_epochs=1",
                             f"hydra.run.dir={tmp_path / 'run'}")
    assert run.returncode == 0, run.stderr
    folder = tmp_path / "run" / "checkpoints"
    top = next(folder.glob("epoch=1-*.pt"))
    assert (folder / "best.pt").samefile(folder / "last.pt") and top.samefile(folder / "best.pt")
    last = torch.load(folder / "last.pt", weights_only=True)
    assert (last["weights"], last["epoch"], last["selected"]["epoch"]) == ("model", 1, 1)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary names left
    resumed = run_cli_in_process(*PLATEAU, "trainer.monitor=val/loss", "trainer.save_top_k=2", "trainer.max_epochs=2",
                                 "trainer.resume=auto", f"hydra.run.dir={tmp_path / 'run'}")
    assert resumed.returncode == 0, resumed.stderr  # the plateau: epoch 2 is not better
    assert not (folder / "best.pt").samefile(folder / "last.pt")
    assert torch.load(folder / "best.pt", weights_only=True)["epoch"] == 1
    assert torch.load(folder / "last.pt", weights_only=True)["epoch"] == 2

    ema = run_cli_in_process(*QUICK, "trainer.max_epochs=1", "regularization.ema_decay=0.5",
                             "trainer.monitor=val_ema/acc", f"hydra.run.dir={tmp_path / 'ema'}")
    assert ema.returncode == 0, ema.stderr
    assert not (tmp_path / "ema" / "checkpoints" / "best.pt").samefile(tmp_path / "ema" / "checkpoints" / "last.pt")


def test_without_hard_links_each_name_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    def no_links(source: object, target: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    run = run_cli_in_process(*QUICK, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}")
    assert run.returncode == 0, run.stderr
    folder = tmp_path / "checkpoints"
    assert not (folder / "best.pt").samefile(folder / "last.pt")
    best, last = (torch.load(folder / name, weights_only=True) for name in ("best.pt", "last.pt"))
    assert best["selected"]["epoch"] == 1 and "selected" not in last
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])
