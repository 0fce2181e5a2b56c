"""`mode=eval ckpt=PATH`: score a checkpoint on the val split of the configured data set."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from trainer.build import build_data, build_model, count_parameters, model_config_from_checkpoint
from trainer.errors import ConfigError
from trainer.reporting.console import RunConsole
from trainer.reporting.run_files import write_json
from trainer.training.checkpoint import load_checkpoint
from trainer.training.loop import validate
from trainer.training.runtime import Precision, select_device


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
    model.load_state_dict(checkpoint["model"])
    datamodule = build_data(cfg, with_augment=False)
    loader = datamodule.val_loader(pin_memory=device.type == "cuda")
    steps = min(len(loader), cfg.trainer.limit_val_batches or len(loader))
    stats = validate(model, islice(loader, steps), nn.CrossEntropyLoss(), precision)

    result = {"ckpt": str(cfg.ckpt), "epoch": checkpoint["epoch"], "val_loss": stats.loss, "val_acc": stats.acc,
              "val_top5": stats.top5, "samples": stats.samples, "params": count_parameters(model),
              "device": str(device)}
    write_json(run_dir / "eval.json", result)
    console.table("evaluation", {k: f"{v:.4f}" if isinstance(v, float) else str(v) for k, v in result.items()})
    return stats.acc
