"""Checkpoints: atomic writes, weights-only loading, and one-line errors for every bad file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from trainer.errors import CheckpointError, OutputError
from trainer.reporting.run_files import atomic_write
from trainer.training.checkpoint import check_model_config, load_checkpoint, save_checkpoint
from trainer.training.runtime import capture_rng_state, restore_rng_state


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
