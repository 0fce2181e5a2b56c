"""`mode=eval ckpt=PATH`: score a checkpoint on the val split of the configured data set.

The configured data module prepares the images; where the checkpoint's saved preprocessing (its "inference"
entry) differs from what that module does, a warning names the keys that differ.
"""

from __future__ import annotations

import logging
import math
from itertools import islice
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from trainer.build import build_data, build_model, count_parameters, model_config_from_checkpoint
from trainer.errors import ConfigError
from trainer.reporting.console import RunConsole
from trainer.reporting.run_files import write_json
from trainer.training.checkpoint import load_checkpoint
from trainer.training.checkpoint_checks import load_model_weights
from trainer.training.loop import validate
from trainer.training.runtime import Precision, select_device

log = logging.getLogger("trainer")

COMPARED_KEYS = ("mean", "std", "in_channels", "image_size", "resize", "center_crop", "classes")


def evaluate(cfg: DictConfig, run_dir: Path) -> float:
    console = RunConsole(cfg.trainer.progress)
    checkpoint = load_checkpoint(cfg.ckpt)
    model_cfg = model_config_from_checkpoint(checkpoint["config"]["model"], cfg.ckpt)
    if model_cfg.num_classes != cfg.data.num_classes or model_cfg.in_channels != cfg.data.in_channels:
        raise ConfigError(
            f"checkpoint {cfg.ckpt} expects {model_cfg.num_classes} classes and {model_cfg.in_channels} "
            f"input channels, but the data config has {cfg.data.num_classes} and {cfg.data.in_channels}")

    device = select_device(cfg.trainer.device)
    precision = Precision(cfg.trainer.precision, device)
    model = build_model(model_cfg).to(device)
    load_model_weights(model, checkpoint["model"], cfg.ckpt)
    datamodule = build_data(cfg, with_augment=False)
    differ = preprocessing_differences(checkpoint.get("inference"), datamodule.inference_info())
    if differ:
        log.warning("checkpoint %s was trained with preprocessing that differs from the configured data's in "
                    "%s; scoring with the configured data's", cfg.ckpt, ", ".join(differ))
    loader = datamodule.val_loader(pin_memory=device.type == "cuda")
    steps = min(len(loader), cfg.trainer.limit_val_batches or len(loader))
    stats = validate(model, islice(loader, steps), nn.CrossEntropyLoss(), precision)

    result = {"ckpt": str(cfg.ckpt), "epoch": checkpoint["epoch"], "val_loss": stats.loss, "val_acc": stats.acc,
              "val_top5": stats.top5, "samples": stats.samples, "params": count_parameters(model),
              "device": str(device)}
    write_json(run_dir / "eval.json", result)
    console.table("evaluation", {k: f"{v:.4f}" if isinstance(v, float) else str(v) for k, v in result.items()})
    console.info(f"wrote {run_dir / 'eval.json'}")
    return stats.acc


def preprocessing_differences(saved: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """The keys of a checkpoint's saved preprocessing that differ from the data module's (none for a checkpoint
    saved without it); mean and std agree within float32 rounding."""
    if not isinstance(saved, dict):
        return []

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and all(
                isinstance(v, float) for v in (*a, *b)):
            return all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(a, b, strict=True))
        return a == b

    return [key for key in COMPARED_KEYS if not same(saved.get(key), current[key])]
