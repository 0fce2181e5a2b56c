"""Rebuild what a checkpoint needs outside training: its model, class names and eval-time preprocessing.

Shared by `mode=predict` and `mode=export`. The preprocessing is read from the checkpoint's `"inference"`
entry, which the training run saved from its data module (`DataModule.inference_info()`: mean/std, class
names, channels, image size, resize and centre crop); nothing here builds a data module or reads the current
run's data or model config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trainer.build import build_model, model_config_from_checkpoint
from trainer.errors import CheckpointError
from trainer.training.checkpoint import load_checkpoint
from trainer.training.checkpoint_checks import load_model_weights

if TYPE_CHECKING:
    from PIL import Image

# The entry's keys and the plain types each may hold (bool is refused where a number is meant).
INFERENCE_KEYS: dict[str, tuple[type, ...]] = {
    "mean": (list,), "std": (list,), "classes": (list,), "in_channels": (int,), "image_size": (int,),
    "resize": (int, list), "center_crop": (int, type(None)),
}


@dataclass
class LoadedCheckpoint:
    model: nn.Module  # in eval mode, on `device`
    info: dict[str, Any]  # the checkpoint's "inference" entry, checked by `inference_info`
    classes: list[str]
    epoch: int
    weights: str  # which weights the checkpoint holds as its model (describe_weights)


def load_for_inference(path: str | Path, device: torch.device) -> LoadedCheckpoint:
    """The checkpoint's own model (weights loaded, eval mode), saved preprocessing and class names."""
    checkpoint = load_checkpoint(path, map_location=device)
    model_cfg = model_config_from_checkpoint(checkpoint["config"]["model"], str(path))
    info = inference_info(checkpoint, str(path))
    if len(info["classes"]) != model_cfg.num_classes or info["in_channels"] != model_cfg.in_channels:
        raise CheckpointError(f"checkpoint {path}: its inference entry ({len(info['classes'])} classes, "
                              f"{info['in_channels']} channels) does not fit its model ({model_cfg.num_classes} "
                              f"classes, {model_cfg.in_channels} channels)")
    model = build_model(model_cfg).to(device)
    load_model_weights(model, checkpoint["model"], path)
    model.eval()
    return LoadedCheckpoint(model, info, list(info["classes"]), int(checkpoint["epoch"]), describe_weights(checkpoint))


def describe_weights(checkpoint: dict[str, Any]) -> str:
    """Which weights a checkpoint holds as its model, and what selected them: `EMA weights, selected on
    val_ema/acc (epoch 7)` for a best.pt chosen on the EMA's score, `model weights, epoch 8` for a last.pt (or
    `model weights, selected on val/acc (epoch 8)`: the last epoch was the best, and last.pt is best.pt's file)."""
    selected = checkpoint.get("selected") or {}
    kind = "EMA weights" if checkpoint.get("weights") == "ema" else "model weights"
    if selected.get("monitor"):
        return f"{kind}, selected on {selected['monitor']} (epoch {selected.get('epoch')})"
    return f"{kind}, epoch {checkpoint.get('epoch')}"


def inference_info(checkpoint: dict[str, Any], path: str) -> dict[str, Any]:
    """The checkpoint's `"inference"` entry, checked; a CheckpointError when it is missing or malformed.

    Checkpoints written before the entry existed are refused rather than guessed at: their preprocessing
    (digits' train statistics, for one) is not stored in them.
    """
    info = checkpoint.get("inference")
    if info is None:
        raise CheckpointError(f"checkpoint {path} predates saved preprocessing: it has no 'inference' entry "
                              "(the mean/std, class names and image size its data module used), so predict and "
                              "export cannot tell how to prepare images for it; retrain it with this version")
    if not isinstance(info, dict):
        raise CheckpointError(f"checkpoint {path} has an invalid inference entry: a {type(info).__name__}")
    wrong = bad_keys(info)
    if wrong:
        raise CheckpointError(f"checkpoint {path} has an invalid inference entry: bad or missing "
                              f"{', '.join(wrong)}")
    return info


def bad_keys(info: dict[str, Any]) -> list[str]:
    """The keys of an inference entry that are missing or hold the wrong kind of value (mean and std: one
    number per channel, std positive)."""
    bad = [key for key, kinds in INFERENCE_KEYS.items()
           if isinstance(info.get(key), bool) or not isinstance(info.get(key), kinds)]
    for key in ("mean", "std"):
        if key not in bad and (len(info[key]) != info.get("in_channels") or not all(
                isinstance(v, int | float) and (key == "mean" or v > 0) for v in info[key])):
            bad.append(key)
    return bad


def image_transform(info: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> the checkpoint's channels -> its resize and centre crop -> float C x H x W, normalised
    with the mean/std its data module normalised with."""
    from torchvision.transforms import v2

    from trainer.data.transforms import resize_ops

    channels = info["in_channels"]
    to_float = v2.Compose([v2.ToImage(), *resize_ops(info["resize"], info["center_crop"]),
                           v2.ToDtype(torch.float32, scale=True)])
    normalise = v2.Normalize(list(info["mean"]), list(info["std"]))

    def transform(image: Image.Image) -> torch.Tensor:
        tensor = to_float(image.convert("RGB" if channels == 3 else "L"))
        if tensor.shape[0] != channels:  # grey repeated, as the data modules repeat grey images
            tensor = tensor.expand(channels, -1, -1)
        return normalise(tensor.contiguous())

    return transform
