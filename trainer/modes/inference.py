"""Rebuild what a checkpoint needs outside training: its model, class names and eval-time preprocessing.

Shared by `mode=predict` and `mode=export`; nothing here reads the current run's data or model config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from trainer.build import build_model, data_config_from_checkpoint, model_config_from_checkpoint
from trainer.training.checkpoint import load_checkpoint

if TYPE_CHECKING:
    from PIL import Image

FAKE_STATS = 0.5  # trainer/data/fake.py: FakeData pixels are uniform in [0, 1]


@dataclass
class LoadedCheckpoint:
    model: nn.Module  # in eval mode, on `device`
    data_cfg: DictConfig
    classes: list[str]
    epoch: int


def load_for_inference(path: str | Path, device: torch.device) -> LoadedCheckpoint:
    """The checkpoint's own model (weights loaded, eval mode), data config and class names."""
    checkpoint = load_checkpoint(path, map_location=device)
    model_cfg = model_config_from_checkpoint(checkpoint["config"]["model"], str(path))
    data_cfg = data_config_from_checkpoint(checkpoint["config"]["data"], str(path))
    model = build_model(model_cfg).to(device)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    classes = [str(c) for c in checkpoint.get("classes") or range(model_cfg.num_classes)]
    return LoadedCheckpoint(model, data_cfg, classes, int(checkpoint["epoch"]))


def normalization(data_cfg: DictConfig) -> tuple[list[float], list[float]]:
    """Per-channel mean/std exactly as the data module normalised its images during training.

    digits: the train split's mean/std, recomputed from the bundled file with the stored split seed (it is
    computed at load time, not stored); fake: 0.5; the others: the data module's constants or config values.
    """
    module = instantiate(data_cfg)  # constructors only store settings: no file is read here
    channels = data_cfg.in_channels
    if hasattr(module, "train_stats"):
        mean, std = module.train_stats()
        return [mean] * channels, [std] * channels
    if data_cfg._target_.endswith("FakeDataModule"):
        return [FAKE_STATS] * channels, [FAKE_STATS] * channels
    mean, std = list(module.mean), list(module.std)
    return mean * (channels // len(mean)), std * (channels // len(std))


def image_transform(data_cfg: DictConfig) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> the checkpoint's channels -> its image_size -> float C x H x W, normalised."""
    from torchvision.transforms import v2

    from trainer.data.transforms import eval_transform

    size, channels = data_cfg.image_size, data_cfg.in_channels
    if "crop_fraction" in data_cfg:  # imagefolder: resize the short side, then centre-crop, as in training
        fit = [v2.Resize(round(size / data_cfg.crop_fraction), antialias=True), v2.CenterCrop(size)]
    else:
        fit = [v2.Resize([size, size], antialias=True)]
    normalise = eval_transform(*normalization(data_cfg), fit)

    def transform(image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB" if channels == 3 else "L")
        tensor = normalise(image)
        return tensor.expand(channels, -1, -1).contiguous() if tensor.shape[0] != channels else tensor

    return transform
