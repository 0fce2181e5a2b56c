"""mode=export's deployable output: export.json (preprocessing, layout, classes, the eager check), torch.export's
program, and exports that fail leaving nothing behind (tests/unit/test_predict.py: torchscript and onnx)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import compose, read_json, tree_digest, write_checkpoint
from trainer.modes.export import ExportError, export
from trainer.modes.inference import load_for_inference
from trainer.schema import validate


def export_cfg(ckpt: Path, fmt: str):
    cfg = compose("mode=export", f"ckpt={ckpt}", f"export.format={fmt}", "trainer.progress=none")
    validate(cfg)
    return cfg


@pytest.fixture(scope="module")
def rgb_ckpt(tmp_path_factory) -> Path:
    """An untrained MLP checkpoint for 3-channel images (digits, grey repeated), written in-process."""
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "rgb.pt", "model=mlp", "data.in_channels=3")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_json_says_how_to_feed_the_model(digits_ckpt: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    path = export(export_cfg(digits_ckpt, "torchscript"), run_dir)
    found = read_json(run_dir / "export.json")
    info = load_for_inference(digits_ckpt, torch.device("cpu")).info
    assert path == run_dir / found["file"] == run_dir / "model.torchscript.pt"
    assert (found["format"], found["layout"], found["channel_order"], found["input_size"]) == (
        "torchscript", "NCHW", "L", [8, 8])
    assert found["mean"] == info["mean"] and found["std"] == info["std"] and found["classes"] == info["classes"]
    assert found["classes"] == [str(d) for d in range(10)] and found["center_crop"] is None
    assert found["max_abs_diff"] <= 1e-5 and found["dynamic_batch"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left beside it


def test_torch_export_reloads_and_matches_eager_at_any_batch_size(rgb_ckpt: Path, tmp_path: Path) -> None:
    path = export(export_cfg(rgb_ckpt, "torch_export"), tmp_path)
    assert path == tmp_path / "model.pt2"
    found = read_json(tmp_path / "export.json")
    loaded = load_for_inference(rgb_ckpt, torch.device("cpu"))
    assert (found["format"], found["file"], found["channel_order"], found["in_channels"]) == (
        "torch_export", "model.pt2", "RGB", 3)
    assert found["mean"] == loaded.info["mean"] and len(found["std"]) == 3 and found["classes"] == loaded.classes
    assert found["input_size"] == [8, 8] and found["dynamic_batch"] is True and found["max_abs_diff"] <= 1e-5
    program = torch.export.load(str(path))
    assert isinstance(program, torch.export.ExportedProgram)
    eager = loaded.model
    for batch in (1, 7):  # neither is the batch size it was exported at (4)
        images = torch.randn(batch, 3, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(images), eager(images), atol=1e-5, rtol=1e-5)


def test_a_failed_export_leaves_the_run_dir_as_it_was(digits_ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    def fail_on_reload(*args, **kwargs):
        raise RuntimeError("cannot reload this export")

    monkeypatch.setattr(torch.jit, "load", fail_on_reload)  # after the model file is written
    cfg = export_cfg(digits_ckpt, "torchscript")
    with pytest.raises(ExportError, match=r"export.format=torchscript failed for .*digits\.pt: RuntimeError: cannot "
                                          r"reload this export; another format may work \(onnx, torch_export\)$"):
        export(cfg, tmp_path / "new")
    assert list(tmp_path.iterdir()) == []  # neither the run dir nor a staging folder
    existing = tmp_path / "existing"
    (existing / ".hydra").mkdir(parents=True)
    (existing / ".hydra" / "config.yaml").write_text("mode: export\n")
    before = tree_digest(existing)
    with pytest.raises(ExportError):
        export(cfg, existing)
    assert tree_digest(existing) == before and sorted(p.name for p in tmp_path.iterdir()) == ["existing"]

    def broken_program(*args, **kwargs):  # reloads, then fails on the sample batch
        def run(*inputs):
            raise RuntimeError("shape mismatch in the exported graph")
        return run

    monkeypatch.setattr(torch.jit, "load", broken_program)
    with pytest.raises(ExportError, match="failed for .*: RuntimeError: shape mismatch in the exported graph"):
        export(cfg, tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
