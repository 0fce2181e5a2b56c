"""Checkpoints: atomic writes, weights-only loading, and one-line errors for every bad file."""

from __future__ import annotations

import copy
import functools
import os
import pickle
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from tests.conftest import compose, cos_anneal
from trainer.errors import CheckpointError, OutputError, TrainerError
from trainer.reporting.run_files import atomic_write
from trainer.training.checkpoint import Checkpointer, TrainState, load_checkpoint, load_scaler_state, save_checkpoint
from trainer.training.distributed import Distributed
from trainer.training.hooks import EpochEvent
from trainer.training.metrics import EpochStats
from trainer.training.optim import create_optimizer, create_scheduler
from trainer.training.resume_config import check_model_config, check_resume_config, config_mismatch, extends_schedule
from trainer.training.runtime import Precision, capture_rng_state, restore_rng_state
from trainer.training.selection import Monitor


def payload() -> dict:
    return {"model": {"w": torch.ones(3)}, "config": {"model": {"depth": 18}}, "epoch": 1,
            "rng": capture_rng_state()}


def test_round_trip_with_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint(payload(), path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.ones(3))
    assert loaded["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(payload(), path)
    before = path.read_bytes()

    def dies_halfway(handle) -> None:
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device; its previous version is intact"):
        atomic_write(path, dies_halfway)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_link_that_cannot_replace_its_name_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    from trainer.reporting.run_files import atomic_link

    source, taken = tmp_path / "best.pt", tmp_path / "last.pt"
    save_checkpoint(payload(), source)
    taken.mkdir()  # a folder where the link should go: the rename fails
    with pytest.raises(OutputError, match=r"could not write .*last.pt: .*; last.pt was not written"):
        atomic_link(source, taken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"] and taken.is_dir()


class _Payload:
    """Unpickling this would create a file: the loader must refuse before that happens."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_checkpoint_that_needs_unpickling_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "epoch": 0, "x": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="arbitrary unpickling"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_a_dict", "missing"])
def test_bad_files_give_one_line_errors(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(payload(), path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(pickle.dumps("hello") + b"\x00" * 10)
    elif damage == "not_a_dict":
        torch.save([1, 2, 3], path)
    else:
        path.unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_model_mismatch_names_the_keys() -> None:
    with pytest.raises(CheckpointError, match=r"model\.depth: checkpoint 50 vs requested 18"):
        check_model_config({"depth": 50, "width": 64}, {"depth": 18, "width": 64}, "x.pt")
    check_model_config({"depth": 18}, {"depth": 18}, "x.pt")


def test_rng_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.manual_seed(1)
    path = tmp_path / "rng.pt"
    save_checkpoint(payload(), path)
    expected = (random.random(), float(np.random.rand()), torch.rand(1).item())
    restore_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == expected


# ---- what a resume may change

@functools.cache
def _resolved(overrides: tuple[str, ...]) -> dict:
    return OmegaConf.to_container(compose("trainer.max_epochs=2", *overrides), resolve=True)


def resolved(*overrides: str) -> dict:
    """The resolved config of `overrides` (2 epochs unless they say otherwise), as a checkpoint stores it."""
    return copy.deepcopy(_resolved(overrides))


def saved_run(*overrides: str, epoch: int = 2, batch: int = 0, world_size: int = 1, lr: float = 0.0) -> dict:
    """A checkpoint's entries that the resume check reads: after `epoch` epochs (and `batch` more batches)."""
    return {"config": resolved(*overrides), "epoch": epoch, "world_size": world_size,
            "state": {"epoch": epoch, "batch_in_epoch": batch}, "optimizer": {"param_groups": [{"lr": lr}]}}


@pytest.mark.parametrize(("override", "key"), [
    ("data.batch_size=16", "data.batch_size"), ("data.val_fraction=0.3", "data.val_fraction"),
    ("data.image_size=16", "data.image_size"), ("seed=1", "seed"),
    ("trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches"),
    ("trainer.limit_train_batches=3", "trainer.limit_train_batches"),
    ("trainer.overfit_batches=2", "trainer.overfit_batches"), ("scheduler.eta_min=0.001", "scheduler.eta_min"),
    ("scheduler=step", "scheduler._target_"), ("optim.lr=0.1", "optim.lr"),
])
@pytest.mark.parametrize("batch", [0, 5])  # at an epoch boundary and mid-epoch alike
def test_a_resume_that_changes_the_batches_or_the_schedule_is_refused(override: str, key: str, batch: int) -> None:
    with pytest.raises(CheckpointError, match=rf"settings for the run's batches or lr schedule \(.*{key}: checkpoint"):
        check_resume_config(saved_run(batch=batch), resolved(override), "last.pt", world_size=1)


@pytest.mark.parametrize("override", ["data.num_workers=2", "data.in_memory=true", "data.root=/elsewhere",
                                      "data.download=true", "trainer.limit_val_batches=2", "trainer.precision=bf16",
                                      "augment=basic", "trainer.progress=none", "trainer.checkpoint_every_n_steps=3"])
def test_a_resume_may_change_what_only_affects_speed_or_reporting(override: str) -> None:
    check_resume_config(saved_run("data=mnist", batch=5), resolved("data=mnist", override), "last.pt", world_size=1)


def test_a_resume_on_another_number_of_processes_is_refused_at_an_epoch_boundary_too() -> None:
    with pytest.raises(CheckpointError, match="world_size: checkpoint 2 vs requested 1"):
        check_resume_config(saved_run(world_size=2), resolved(), "last.pt", world_size=1)


def test_the_model_check_comes_first_with_its_own_message() -> None:
    with pytest.raises(CheckpointError, match=r"made for another model \(model\._target_: checkpoint"):
        check_resume_config(saved_run(), resolved("model=mlp", "data.batch_size=16"), "last.pt", world_size=1)


@pytest.mark.parametrize("epochs", [1, 4])
def test_max_epochs_may_change_when_the_schedule_does_not_depend_on_it(epochs: int) -> None:
    for scheduler in ("step", "none", "plateau"):
        check_resume_config(saved_run(f"scheduler={scheduler}"), resolved(f"scheduler={scheduler}",
                                                                            f"trainer.max_epochs={epochs}"),
                            "last.pt", world_size=1)


def test_a_lower_max_epochs_on_a_schedule_that_follows_it_is_refused() -> None:
    with pytest.raises(CheckpointError, match=r"scheduler\.T_max: checkpoint 4 vs requested 3, trainer\.max_epochs"):
        check_resume_config(saved_run("trainer.max_epochs=4"), resolved("trainer.max_epochs=3"), "last.pt", 1)


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle", "warmup_cosine"])
def test_a_finished_schedule_is_extended_only_when_asked(scheduler: str) -> None:
    saved = saved_run(f"scheduler={scheduler}", lr=1.2e-7)
    longer = resolved(f"scheduler={scheduler}", "trainer.max_epochs=4")
    with pytest.raises(CheckpointError, match=r"finished its 2-epoch lr schedule, at lr 1\.2e-07: epochs 3\.\.4 "
                                              r"would start at lr 1\.2e-07 .*trainer\.extend_schedule=true"):
        check_resume_config(saved, longer, "last.pt", world_size=1)
    assert not extends_schedule(saved, longer)
    extended = resolved(f"scheduler={scheduler}", "trainer.max_epochs=4", "trainer.extend_schedule=true")
    check_resume_config(saved, extended, "last.pt", world_size=1)
    assert extends_schedule(saved, extended)


def test_extend_schedule_does_not_excuse_other_changes_or_a_mid_epoch_checkpoint() -> None:
    extended = ("trainer.max_epochs=4", "trainer.extend_schedule=true")
    with pytest.raises(CheckpointError, match=r"\(data\.batch_size: checkpoint 64 vs requested 16\)"):
        check_resume_config(saved_run(), resolved(*extended, "data.batch_size=16"), "last.pt", world_size=1)
    with pytest.raises(CheckpointError, match="extend_schedule needs an epoch-boundary checkpoint"):
        check_resume_config(saved_run(epoch=1, batch=3), resolved(*extended), "last.pt", world_size=1)


def test_an_unfinished_schedule_raised_without_extend_schedule_is_refused_with_the_way_out() -> None:
    with pytest.raises(CheckpointError, match="trainer.extend_schedule=true rebuilds the schedule"):
        check_resume_config(saved_run(epoch=1), resolved("trainer.max_epochs=4"), "last.pt", world_size=1)


def test_an_extended_cosine_restarts_from_optim_lr_over_the_added_epochs() -> None:
    """Epochs 3 and 4 of a 2-epoch cosine extended to 4: T_max 2 from optim.lr (the optimizer ended at 0)."""
    cfg = compose("trainer.max_epochs=4", "optim.lr=0.1")
    optimizer = create_optimizer(cfg.optim, nn.Linear(2, 2))
    create_scheduler(cfg.scheduler, optimizer, steps_per_epoch=3, max_epochs=2)  # sets initial_lr, as build_run
    optimizer.param_groups[0]["lr"] = 0.0  # where the finished schedule left it
    schedule = create_scheduler(cfg.scheduler, optimizer, steps_per_epoch=3, max_epochs=4, start_epoch=2)
    lrs = []
    for _ in range(2):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step_epoch()
    assert lrs == pytest.approx([0.1, cos_anneal(0.1, 0.0, 1 / 2)])


# ---- what an epoch may leave behind

def epoch_event(train_loss: float = 1.0, val_loss: float = 1.0, samples: int = 8, skipped: int = 0) -> EpochEvent:
    train = EpochStats(train_loss, 0.5, None, samples, 1.0, steps=2, skipped=skipped)
    return EpochEvent(1, train, EpochStats(val_loss, 0.5, None, 8, 1.0), None, 0.1, True)


def checkpointer_of(model: nn.Module) -> Checkpointer:
    checkpointer = Checkpointer.__new__(Checkpointer)
    checkpointer.run = type("Run", (), {"model": model, "ctx": Distributed(), "device": torch.device("cpu")})()
    return checkpointer


@pytest.mark.parametrize(("event", "message"), [
    (epoch_event(samples=0, skipped=4), r"every batch of epoch 1 \(4\) had a non-finite loss and was skipped"),
    (epoch_event(val_loss=float("nan")), "the validation loss after epoch 1 is nan"),
])
def test_an_epoch_that_trained_on_nothing_or_validates_to_nan_stops_the_run(event: EpochEvent, message: str) -> None:
    with pytest.raises(TrainerError, match=message + ".*last good checkpoint is kept"):
        checkpointer_of(nn.Linear(2, 2)).check_epoch(event)


def test_non_finite_weights_stop_the_run_before_any_checkpoint() -> None:
    model = nn.Linear(2, 2)
    checkpointer_of(model).check_epoch(epoch_event(skipped=3))  # some batches skipped: fine
    with torch.no_grad():
        model.bias[0] = float("inf")
    with pytest.raises(TrainerError, match="the weights after epoch 1 are not finite"):
        checkpointer_of(model).check_epoch(epoch_event())


def test_a_non_finite_validation_is_never_the_best() -> None:
    state = TrainState()
    nan = EpochStats(float("nan"), 0.3, None, 8, 1.0)
    assert not state.end_epoch(EpochStats(1.0, 0.5, None, 8, 1.0), nan, None, 0.1, Monitor("val/acc", "max"))
    assert state.best_val_acc == -1.0


# ---- load_checkpoint: files that are not checkpoints, malformed entries, weights that do not fit (issue 14)

def _scripted(path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(nn.Linear(2, 2)).save(str(path))


NOT_CHECKPOINTS = {
    "text": (lambda path: path.write_text("hi\n"), "is not a checkpoint (not a file torch.save wrote)"),
    "random bytes": (lambda path: path.write_bytes(bytes(range(7, 256)) * 9), "is not a checkpoint"),
    "empty": (lambda path: path.write_bytes(b""), "is empty (0 bytes)"),
    "torchscript": (_scripted, "is a TorchScript export (what mode=export writes), not a training checkpoint"),
    "non-dict config": (lambda path: torch.save({"model": {}, "config": "x", "epoch": 1}, path),
                        "its config has no model section (found a str)"),
    "model not a state_dict": (lambda path: torch.save({"model": [1], "config": {"model": {}}, "epoch": 1}, path),
                               "its model entry is not a state_dict of tensors (a list)"),
    "epoch not a number": (lambda path: torch.save({"model": {}, "config": {"model": {}}, "epoch": "1"}, path),
                           "its epoch is '1', not a count of epochs"),
}


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_a_file_that_is_not_a_checkpoint_says_what_it_is(tmp_path: Path, kind: str, recwarn) -> None:
    make, message = NOT_CHECKPOINTS[kind]
    path = tmp_path / "x.pt"
    make(path)
    recwarn.clear()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "unpickling" not in str(err.value) and "weights_only" not in str(err.value)
    assert not [w for w in recwarn.list if "torch" in w.filename or "pickle" in str(w.message)]


def test_torch_warnings_while_loading_garbage_are_silenced(tmp_path: Path, recwarn) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(b"\x80\x04" + bytes(range(256)) * 4)  # torch would warn "Detected pickle protocol 4"
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_checkpoint(path)
    assert not recwarn.list


@pytest.mark.parametrize("has_last", [True, False])
def test_a_directory_given_as_a_checkpoint_names_its_last_pt(tmp_path: Path, has_last: bool) -> None:
    if has_last:
        save_checkpoint(payload(), tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file") as err:
        load_checkpoint(tmp_path)
    assert (f"did you mean {tmp_path / 'checkpoints' / 'last.pt'}?" in str(err.value)) == has_last


def test_weights_of_another_shape_name_the_keys_that_do_not_fit() -> None:
    from trainer.training.checkpoint_checks import load_model_weights

    weights = nn.Sequential(nn.Linear(3, 4)).state_dict() | {"extra": torch.zeros(1)}
    with pytest.raises(CheckpointError) as err:
        load_model_weights(nn.Sequential(nn.Linear(2, 4)), weights, "w.pt")
    assert "unexpected: extra" in str(err.value)
    assert "0.weight (4, 3) vs (4, 2)" in str(err.value)


def test_a_full_disk_under_torch_save_says_no_space_and_claims_no_previous_version(tmp_path: Path) -> None:
    import errno

    class FullDisk:
        def __init__(self, handle) -> None:
            self.handle = handle

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str):
            return getattr(self.handle, name)

    path = tmp_path / "last.pt"
    with pytest.raises(OutputError) as err:
        atomic_write(path, lambda handle: torch.save(payload(), FullDisk(handle)))
    assert "No space left on device" in str(err.value)
    assert "inline_container" not in str(err.value) and "previous version" not in str(err.value)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_a_target_saved_under_a_moved_module_matches_its_new_path() -> None:
    saved = {"scheduler": {"_target_": "trainer.optim.warmup_cosine", "warmup_epochs": 1}}
    wanted = {"scheduler": {"_target_": "trainer.training.optim.warmup_cosine", "warmup_epochs": 1}}
    assert config_mismatch(saved, wanted) == []
    assert config_mismatch(saved, {"scheduler": {**wanted["scheduler"], "warmup_epochs": 2}}) == [
        "scheduler.warmup_epochs"]


@pytest.mark.parametrize(("saved_precision", "precision"), [("32", "16"), ("16", "32"), ("16", "16")])
def test_a_resume_may_switch_precision_without_the_scalers_state(saved_precision: str, precision: str) -> None:
    cpu = torch.device("cpu")
    saved = Precision(saved_precision, cpu).grad_scaler()
    if saved.is_enabled():
        saved.scale(torch.ones(()))  # the scale exists from the first scaled loss on
        saved.update(new_scale=1024.0)
    scaler = Precision(precision, cpu).grad_scaler()
    load_scaler_state(scaler, saved.state_dict())
    if saved.is_enabled() and scaler.is_enabled():
        assert scaler.get_scale() == 1024.0  # carried over
    elif scaler.is_enabled():
        assert scaler.get_scale() == Precision("16", cpu).grad_scaler().get_scale()  # starts afresh
