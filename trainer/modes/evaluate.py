"""`mode=eval ckpt=PATH`: score a checkpoint on `eval.split` (test, or val) of the configured data set, with
the weights the checkpoint holds (best.pt: the ones it was selected with, EMA or not) and `eval.tta`.

The configured data module prepares the images; where the checkpoint's saved preprocessing (its "inference"
entry) differs from what that module does, a warning names the keys that differ, and so does one where the
val split was held out otherwise than in training (its images may then have been trained on).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig
from torch import nn

from trainer.build import build_data, build_model, count_parameters, model_config_from_checkpoint
from trainer.errors import ConfigError
from trainer.modes.inference import describe_weights
from trainer.reporting.console import RunConsole, option_name
from trainer.reporting.run_files import write_json
from trainer.training.checkpoint import load_checkpoint
from trainer.training.checkpoint_checks import load_model_weights
from trainer.training.loop import validate
from trainer.training.runtime import Precision, select_device
from trainer.training.scoring import split_batches
from trainer.training.tta import with_tta

if TYPE_CHECKING:
    from trainer.data.base import DataModule
    from trainer.training.metrics import EpochStats

log = logging.getLogger("trainer")

COMPARED_KEYS = ("mean", "std", "in_channels", "image_size", "resize", "center_crop", "classes")
SPLIT_KEYS = ("val_fraction", "split_seed")  # what decides which training images the val split holds


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
    split = scored_split(cfg, datamodule, checkpoint, console)
    stats = score_split(with_tta(model, cfg.eval.tta), datamodule, split, cfg.trainer, precision)

    result = {"ckpt": str(cfg.ckpt), "epoch": checkpoint["epoch"], "weights": describe_weights(checkpoint),
              "split": split, "tta": cfg.eval.tta, f"{split}_loss": stats.loss, f"{split}_acc": stats.acc,
              f"{split}_top5": stats.top5, "samples": stats.samples, "params": count_parameters(model),
              "device": str(device)}
    write_json(run_dir / "eval.json", result)
    console.table("evaluation", {k: f"{v:.4f}" if isinstance(v, float) else str(v) for k, v in result.items()})
    console.info(f"wrote {run_dir / 'eval.json'}")
    return stats.acc


def scored_split(cfg: DictConfig, datamodule: DataModule, checkpoint: dict, console: RunConsole) -> str:
    """`eval.split`, or val for a data set without a test split (said on the console); for val, a warning when
    the checkpoint's run held it out otherwise (data.val_fraction, data.split_seed)."""
    split = cfg.eval.split
    if split == "test" and datamodule.test_set is None:
        console.info(f"data={option_name('data', cfg.data._target_)} has no test split: scoring its val split")
        split = "val"
    saved = checkpoint["config"].get("data") or {}
    moved = [key for key in SPLIT_KEYS if key in cfg.data and saved.get(key) != cfg.data[key]]
    if split == "val" and moved:
        log.warning("checkpoint %s was trained beside a val split held out otherwise (%s): its val images may "
                    "have been trained on", cfg.ckpt, ", ".join(f"data.{key}" for key in moved))
    return split


def score_split(model: nn.Module, datamodule: DataModule, split: str, tcfg: DictConfig,
                precision: Precision) -> EpochStats:
    """`model` on the data module's `split`, capped by trainer.limit_val_batches / limit_test_batches."""
    batches = split_batches(datamodule, split, tcfg, precision.device.type == "cuda", precision.device)
    return validate(model, batches, nn.CrossEntropyLoss(), precision)


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
