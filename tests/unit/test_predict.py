"""`mode=predict`, `mode=export` and `mode=eval` from a checkpoint's saved preprocessing (its "inference" entry).

In-process, from a digits checkpoint written by tests/conftest.py (an untrained model, the payload a training run
writes); tests/e2e/test_predict.py runs predict through the CLI, and from a checkpoint a real run saved.
"""

from __future__ import annotations

import importlib.util
import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import (
    FOLDERS,
    STATS,
    TREE_COLOURS,
    build,
    compose,
    digits_module,
    read_csv,
    read_json,
    write_checkpoint,
    write_cifar,
    write_image_tree,
    write_mnist_like,
)
from trainer.data.splits import stratified_split
from trainer.errors import CheckpointError, ConfigError, DataError, TrainerError
from trainer.modes.evaluate import evaluate
from trainer.modes.export import export
from trainer.modes.inference import image_transform, load_for_inference
from trainer.modes.predict import predict
from trainer.schema import validate


def test_topk_is_capped_at_the_number_of_classes(digits_ckpt: Path, digit_pngs, tmp_path: Path) -> None:
    folder, _ = digit_pngs
    cfg = compose("mode=predict", f"ckpt={digits_ckpt}", f"predict.input={folder / 'digit_0.png'}",
                  "predict.topk=50", "trainer.progress=none")
    validate(cfg)
    rows = read_csv(predict(cfg, tmp_path))
    assert len(rows) == 1 and "top10_class" in rows[0] and "top11_class" not in rows[0]
    assert sum(float(rows[0][f"top{k}_prob"]) for k in range(1, 11)) == pytest.approx(1.0, abs=1e-4)
    assert sorted(rows[0][f"top{k}_class"] for k in range(1, 11)) == [str(d) for d in range(10)]


def test_png_preprocessing_matches_the_training_normalisation(digits_ckpt: Path, digit_pngs) -> None:
    folder, val_tensors = digit_pngs
    loaded = load_for_inference(digits_ckpt, torch.device("cpu"))
    transform = image_transform(loaded.info)
    std = digits_module().normalization()[1][0]
    for n in range(5):
        with Image.open(folder / f"digit_{n}.png") as image:
            tensor = transform(image)
        assert tensor.shape == (1, 8, 8)
        assert torch.allclose(tensor, val_tensors[n], atol=0.51 / 255 / std + 1e-6)  # uint8 rounding only
    assert loaded.classes == [str(d) for d in range(10)] and loaded.epoch == 1


def test_resize_crop_and_channels_follow_the_saved_entry() -> None:
    info = {"mean": [0.5] * 4, "std": [0.25] * 4, "classes": ["a", "b"], "in_channels": 4, "image_size": 12,
            "resize": 16, "center_crop": 12}
    wide = Image.new("RGB", (40, 20), (255, 255, 255))
    out = image_transform(info)(wide)
    assert out.shape == (4, 12, 12)  # short side to 16 (32 x 16), then the centre 12 x 12
    torch.testing.assert_close(out, torch.full((4, 12, 12), 2.0))  # white: (1 - 0.5) / 0.25 in every channel
    grey = image_transform(info | {"in_channels": 3, "mean": [0.0] * 3, "std": [1.0] * 3, "resize": [12, 12],
                                   "center_crop": None})(Image.new("L", (30, 9), 51))
    torch.testing.assert_close(grey, torch.full((3, 12, 12), 0.2))


def test_a_checkpoint_without_the_entry_is_refused_as_older(tmp_path: Path) -> None:
    old = write_checkpoint(tmp_path / "old.pt", drop=("inference",))
    with pytest.raises(CheckpointError, match=r"old\.pt predates saved preprocessing: it has no 'inference' entry"):
        load_for_inference(old, torch.device("cpu"))
    cfg = compose("mode=export", f"ckpt={old}", "trainer.progress=none")
    with pytest.raises(CheckpointError, match="retrain it with this version"):
        export(cfg, tmp_path)


def test_a_malformed_entry_is_a_checkpoint_error(tmp_path: Path) -> None:
    module = digits_module()
    module.setup()
    info = module.inference_info()
    for bad, named in ((info | {"std": [0.3, 0.3]}, "std"), (info | {"mean": "0.5"}, "mean"),
                       ({k: v for k, v in info.items() if k != "resize"}, "resize"),
                       (info | {"image_size": True}, "image_size"), (info | {"std": [0.0]}, "std")):
        path = write_checkpoint(tmp_path / "bad.pt", inference=bad)
        with pytest.raises(CheckpointError, match=f"invalid inference entry: bad or missing {named}$"):
            load_for_inference(path, torch.device("cpu"))
    path = write_checkpoint(tmp_path / "few.pt", inference=info | {"classes": ["a", "b"]})
    with pytest.raises(CheckpointError, match=r"inference entry \(2 classes, 1 channels\) does not fit its model"):
        load_for_inference(path, torch.device("cpu"))


def test_predict_without_input_or_with_a_missing_folder_is_a_clear_error(digits_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="predict.input must be an image file or folder when mode=predict"):
        validate(compose("mode=predict", f"ckpt={digits_ckpt}"))
    with pytest.raises(ConfigError, match="ckpt must be a checkpoint path when mode=export"):
        validate(compose("mode=export"))
    with pytest.raises(ConfigError, match="export.format must be one of torchscript, onnx"):
        validate(compose("mode=export", "ckpt=x.pt", "export.format=tflite"))
    cfg = compose("mode=predict", f"ckpt={digits_ckpt}", f"predict.input={tmp_path / 'nope'}",
                  "trainer.progress=none")
    with pytest.raises(DataError, match="does not exist"):
        predict(cfg, tmp_path)
    (tmp_path / "empty").mkdir()
    cfg.predict.input = str(tmp_path / "empty")
    with pytest.raises(DataError, match="holds no .png, .jpg, .jpeg files"):
        predict(cfg, tmp_path)


def test_eval_warns_when_the_data_prepares_images_otherwise(digits_ckpt: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="trainer")
    same = compose("mode=eval", f"ckpt={digits_ckpt}", "trainer.progress=none")
    validate(same)
    evaluate(same, tmp_path / "same")
    assert not caplog.records and read_json(tmp_path / "same" / "eval.json")["samples"] == 359
    other = compose("mode=eval", f"ckpt={digits_ckpt}", "data.split_seed=1", "trainer.progress=none")
    validate(other)
    evaluate(other, tmp_path / "other")
    # Another split_seed also moves the val split (trainer/modes/evaluate.py warns of that separately).
    assert "mean, std; scoring with the configured data's" in [r.getMessage().split(" in ")[-1]
                                                                for r in caplog.records]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_reloads_and_matches_eager(digits_ckpt: Path, tmp_path: Path) -> None:
    cfg = compose("mode=export", f"ckpt={digits_ckpt}", "export.format=torchscript", "trainer.progress=none")
    validate(cfg)
    path = export(cfg, tmp_path)
    assert path == tmp_path / "model.torchscript.pt"
    exported = read_json(tmp_path / "export.json")
    assert exported["max_abs_diff"] <= 1e-5 and exported["input_shape"] == [4, 1, 8, 8]
    loaded = load_for_inference(digits_ckpt, torch.device("cpu"))
    scripted = torch.jit.load(str(path))
    batch = torch.randn(7, 1, 8, 8)  # another batch size than the traced one
    with torch.no_grad():
        assert torch.allclose(scripted(batch), loaded.model(batch), atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("onnx") is not None, reason="onnx is installed: the error path is moot")
def test_onnx_without_the_package_says_how_to_install_it(digits_ckpt: Path, tmp_path: Path) -> None:
    cfg = compose("mode=export", f"ckpt={digits_ckpt}", "export.format=onnx", "trainer.progress=none")
    with pytest.raises(TrainerError) as caught:
        export(cfg, tmp_path)
    assert str(caught.value) == "export.format=onnx needs the onnx package: pip install -e '.[onnx]'"
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx is not installed (pip install -e '.[onnx]')")
def test_onnx_export_writes_a_model(digits_ckpt: Path, tmp_path: Path) -> None:
    cfg = compose("mode=export", f"ckpt={digits_ckpt}", "export.format=onnx", "trainer.progress=none")
    path = export(cfg, tmp_path)
    assert path.stat().st_size > 1000
    diff = read_json(tmp_path / "export.json")["max_abs_diff"]
    if importlib.util.find_spec("onnxruntime") is None:
        assert diff is None  # nothing to run the exported model with
    else:
        assert diff is not None and diff <= 1e-4


# ---- inference_info against the loaders, for every data option that builds offline

def saved_pictures(option: str, root: Path) -> tuple[list[str], list[Image.Image]]:
    """Overrides for a tiny set of `option` and its first three val images as a user would save them.

    The stored sets' val images are the held-out part of their train split (data.val_fraction=0.1, split_seed=0).
    """
    if option in FOLDERS:
        arrays = write_mnist_like(root, option)
        val_idx = stratified_split(torch.from_numpy(arrays["train_y"]), 0.1, 0)[1]
        return [f"data.root={root}"], [Image.fromarray(arrays["train_x"][i]) for i in val_idx[:3].tolist()]
    if option in ("cifar10", "cifar100"):
        arrays = write_cifar(root, option)
        val_idx = stratified_split(torch.from_numpy(arrays["train_y"]), 0.1, 0)[1]
        return [f"data.root={root}"], [Image.fromarray(arrays["train_x"][i].reshape(3, 32, 32).transpose(1, 2, 0)
                                                       .copy()) for i in val_idx[:3].tolist()]
    if option == "fake":
        from torchvision.datasets import FakeData

        return [], [FakeData(64, (3, 32, 32), 10, random_offset=256)[i][0] for i in range(3)]
    if option == "imagefolder":
        train, val = write_image_tree(root / "train"), write_image_tree(root / "val", per_class=1)
        pictures = []
        for name in sorted(TREE_COLOURS):
            with Image.open(val / name / "0.png") as image:
                pictures.append(image.copy())
        return [f"data.train_dir={train}", f"data.val_dir={val}", "data.num_classes=3", "data.image_size=12",
                "data.num_workers=0"], pictures
    images, _, _, val_idx = digits_module().split()
    return [], [Image.fromarray((images[i, 0].numpy() * 255).round().astype(np.uint8), mode="L")
                for i in val_idx[:3].tolist()]


@pytest.mark.parametrize(("option", "in_memory"), [
    ("digits", False), ("digits", True), ("fake", False), ("fake", True), ("mnist", False), ("mnist", True),
    ("fashion_mnist", False), ("cifar10", False), ("cifar10", True), ("cifar100", False), ("imagefolder", False)])
def test_inference_info_rebuilds_the_val_preprocessing(option: str, in_memory: bool, tmp_path: Path) -> None:
    overrides, pictures = saved_pictures(option, tmp_path)
    datamodule = build(f"data={option}", *overrides, f"data.in_memory={str(in_memory).lower()}")
    info = datamodule.inference_info()
    buffer = io.BytesIO()
    torch.save({"inference": info}, buffer)
    assert torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)["inference"] == info
    assert info["classes"] == datamodule.classes and info["in_channels"] == datamodule.in_channels
    assert len(info["mean"]) == len(info["std"]) == datamodule.in_channels
    if option in STATS:
        assert (info["mean"], info["std"]) == tuple(list(s) for s in STATS[option])
    val_x, _ = next(iter(datamodule.val_loader()))
    transform = image_transform(info)
    rebuilt = torch.stack([transform(picture) for picture in pictures])
    atol = 0.51 / 255 / info["std"][0] if option == "digits" else 1e-6  # digits: its PNGs round to uint8
    torch.testing.assert_close(rebuilt, val_x[:3].cpu(), atol=atol, rtol=0)


def test_digits_inference_info_holds_the_train_split_statistics() -> None:
    module = digits_module(in_channels=3, split_seed=4)
    with pytest.raises(RuntimeError, match=r"inference_info\(\) needs setup\(\) first"):
        module.inference_info()
    module.setup()
    images, _, train_idx, val_idx = module.split()
    mean, std = images[train_idx].mean().item(), images[train_idx].std().item()
    info = module.inference_info()
    assert (info["mean"], info["std"]) == ([mean] * 3, [std] * 3)
    assert {key: info[key] for key in ("image_size", "resize", "center_crop")} == {
        "image_size": 8, "resize": [8, 8], "center_crop": None}
    assert torch.equal(module.val_set.tensors[0], (images[val_idx] - mean) / std)
