"""`mode=predict` and `mode=export` on a real 1-epoch digits checkpoint: once through the CLI, the rest in-process."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import compose, read_json, run_cli
from trainer.data.digits import DigitsDataModule
from trainer.errors import ConfigError, DataError, TrainerError
from trainer.modes.export import export
from trainer.modes.inference import image_transform, load_for_inference
from trainer.modes.predict import predict
from trainer.schema import validate

FAST = ("trainer.progress=plain",)


@pytest.fixture(scope="module")
def best_ckpt(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli(f"hydra.run.dir={run_dir}", "trainer.max_epochs=1", *FAST)
    assert result.returncode == 0, result.stderr
    return run_dir / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """Five val digits saved as 8x8 grey PNGs (pixels 0..16 -> 0..255), and their normalised val tensors."""
    folder = tmp_path_factory.mktemp("pngs")
    module = DigitsDataModule(batch_size=64, num_workers=0, num_classes=10, in_channels=1, image_size=8)
    images, _, _, val_idx = module.split()
    for n, index in enumerate(val_idx[:5].tolist()):
        pixels = (images[index, 0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"digit_{n}.png")
    module.setup()
    return folder, module.val_set.tensors[0][:5]


def test_predict_a_folder_writes_one_row_per_image(best_ckpt: Path, digit_pngs, tmp_path: Path) -> None:
    folder, _ = digit_pngs
    result = run_cli("mode=predict", f"ckpt={best_ckpt}", f"predict.input={folder}", "predict.topk=3",
                     f"hydra.run.dir={tmp_path / 'predict'}", *FAST)
    assert result.returncode == 0, result.stderr
    with (tmp_path / "predict" / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == [f"digit_{n}.png" for n in range(5)]
    assert list(rows[0]) == ["file", "top1_class", "top1_prob", "top2_class", "top2_prob", "top3_class", "top3_prob"]
    for row in rows:
        probs = [float(row[f"top{k}_prob"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert "predictions (first 5 of 5)" in result.stdout


def test_topk_is_capped_at_the_number_of_classes(best_ckpt: Path, digit_pngs, tmp_path: Path) -> None:
    folder, _ = digit_pngs
    cfg = compose("mode=predict", f"ckpt={best_ckpt}", f"predict.input={folder / 'digit_0.png'}", "predict.topk=50",
                  "trainer.progress=none")
    validate(cfg)
    with (predict(cfg, tmp_path)).open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and "top10_class" in rows[0] and "top11_class" not in rows[0]
    assert sum(float(rows[0][f"top{k}_prob"]) for k in range(1, 11)) == pytest.approx(1.0, abs=1e-4)
    assert sorted(rows[0][f"top{k}_class"] for k in range(1, 11)) == [str(d) for d in range(10)]


def test_png_preprocessing_matches_the_training_normalisation(best_ckpt: Path, digit_pngs) -> None:
    folder, val_tensors = digit_pngs
    loaded = load_for_inference(best_ckpt, torch.device("cpu"))
    transform = image_transform(loaded.data_cfg)
    std = DigitsDataModule(batch_size=64, num_workers=0, num_classes=10, in_channels=1, image_size=8).train_stats()[1]
    for n in range(5):
        with Image.open(folder / f"digit_{n}.png") as image:
            tensor = transform(image)
        assert tensor.shape == (1, 8, 8)
        assert torch.allclose(tensor, val_tensors[n], atol=0.51 / 255 / std + 1e-6)  # uint8 rounding only
    assert loaded.classes == [str(d) for d in range(10)]


def test_predict_without_input_or_with_a_missing_folder_is_a_clear_error(best_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="predict.input must be an image file or folder when mode=predict"):
        validate(compose("mode=predict", f"ckpt={best_ckpt}"))
    with pytest.raises(ConfigError, match="ckpt must be a checkpoint path when mode=export"):
        validate(compose("mode=export"))
    with pytest.raises(ConfigError, match="export.format must be one of torchscript, onnx"):
        validate(compose("mode=export", "ckpt=x.pt", "export.format=tflite"))
    cfg = compose("mode=predict", f"ckpt={best_ckpt}", f"predict.input={tmp_path / 'nope'}", "trainer.progress=none")
    with pytest.raises(DataError, match="does not exist"):
        predict(cfg, tmp_path)
    (tmp_path / "empty").mkdir()
    cfg.predict.input = str(tmp_path / "empty")
    with pytest.raises(DataError, match="holds no .png, .jpg, .jpeg files"):
        predict(cfg, tmp_path)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_reloads_and_matches_eager(best_ckpt: Path, tmp_path: Path) -> None:
    cfg = compose("mode=export", f"ckpt={best_ckpt}", "export.format=torchscript", "trainer.progress=none")
    validate(cfg)
    path = export(cfg, tmp_path)
    assert path == tmp_path / "model.torchscript.pt"
    assert read_json(tmp_path / "export.json")["max_abs_diff"] <= 1e-5
    loaded = load_for_inference(best_ckpt, torch.device("cpu"))
    scripted = torch.jit.load(str(path))
    batch = torch.randn(7, 1, 8, 8)  # another batch size than the traced one
    with torch.no_grad():
        assert torch.allclose(scripted(batch), loaded.model(batch), atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("onnx") is not None, reason="onnx is installed: the error path is moot")
def test_onnx_without_the_package_says_how_to_install_it(best_ckpt: Path, tmp_path: Path) -> None:
    cfg = compose("mode=export", f"ckpt={best_ckpt}", "export.format=onnx", "trainer.progress=none")
    with pytest.raises(TrainerError) as caught:
        export(cfg, tmp_path)
    assert str(caught.value) == "export.format=onnx needs the onnx package: pip install -e '.[onnx]'"
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx is not installed (pip install -e '.[onnx]')")
def test_onnx_export_writes_a_model(best_ckpt: Path, tmp_path: Path) -> None:
    cfg = compose("mode=export", f"ckpt={best_ckpt}", "export.format=onnx", "trainer.progress=none")
    path = export(cfg, tmp_path)
    assert path.stat().st_size > 1000
    diff = read_json(tmp_path / "export.json")["max_abs_diff"]
    if importlib.util.find_spec("onnxruntime") is None:
        assert diff is None  # nothing to run the exported model with
    else:
        assert diff is not None and diff <= 1e-4
