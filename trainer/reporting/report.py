"""The end-of-run report: curves, confusion matrix and per-class scores as files, and the same in TensorBoard.

`write_run_report` is called once after the epoch loop, with the predictions of the selected weights that the
run's test pass or best validation epoch collected; without them it loads best.pt and makes a pass of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from trainer.reporting.classification import confusion_matrix, per_class_metrics
from trainer.reporting.loggers import run_params
from trainer.reporting.plots import confusion_figure, curves_figure, render, samples_figure, save_pixels
from trainer.reporting.run_files import write_csv
from trainer.training.checkpoint import load_checkpoint
from trainer.training.loop import validate
from trainer.training.metrics import REPORT_SAMPLES, PredictionCollector, Predictions
from trainer.training.runtime import Precision
from trainer.training.tta import with_tta

PER_CLASS_FIELDS = ("class", "precision", "recall", "f1", "support")


def write_run_report(run_dir: Path, history: list[dict], model: nn.Module, batches: Iterable | None,
                     classes: list[str], precision: Precision, logger: Any, cfg: DictConfig, split: str = "val",
                     tta: str = "none", log_graph: bool = False,
                     predictions: Predictions | None = None) -> dict[str, Path]:
    """Write curves.png, confusion_matrix.png, samples.png and per_class.csv of the selected weights on `split`;
    log figures and hparams.

    `predictions` are those the pass that scored the selected weights collected (a run's test pass, or the
    validation of its best epoch): then `batches` are not read. Without them, `run_dir/checkpoints/best.pt` is
    loaded into `model` when it exists (otherwise the model is used as it is) and `batches` are predicted with
    test-time augmentation `tta`. Returns the files written, by name.
    """
    run_dir = Path(run_dir)
    if predictions is None:
        predictions = predict_best(run_dir, model, batches, precision, tta)
    predicted, targets, samples = predictions.predicted, predictions.targets, predictions.samples
    matrix = confusion_matrix(predicted, targets, len(classes))
    written = {"per_class": write_csv(run_dir / "per_class.csv", per_class_metrics(matrix, classes), PER_CLASS_FIELDS)}

    figures = {"curves": curves_figure(history, title=f"learning curves: {run_dir.name}")} if history else {}
    figures["confusion_matrix"] = confusion_figure(matrix, classes, title=f"confusion matrix ({len(targets)} {split})")
    shown = min(REPORT_SAMPLES, len(samples))
    figures["samples"] = samples_figure(samples[:shown], [classes[i] for i in predicted[:shown].tolist()],
                                        [classes[i] for i in targets[:shown].tolist()],
                                        title=f"{split} samples (predicted / true)")
    for name, figure in figures.items():  # drawn once: the same pixels go to the PNG and to TensorBoard
        pixels = render(figure)
        written[name] = save_pixels(pixels, run_dir / f"{name}.png")
        logger.log_images(f"report/{name}", torch.from_numpy(pixels[..., :3].copy()).permute(2, 0, 1))
        logger.log_artifact(written[name])
    if log_graph and len(samples):
        logger.log_graph(model, samples[:1].to(precision.device))
    logger.log_hparams(run_params(cfg), final_metrics(history, predicted, targets, split),
                       int(history[-1].get("step", 0)) if history else 0)
    return written


def predict_best(run_dir: Path, model: nn.Module, batches: Iterable, precision: Precision,
                 tta: str = "none") -> Predictions:
    """`run_dir/checkpoints/best.pt`'s weights put into `model` (when the file exists), then its predictions of
    `batches` with test-time augmentation `tta`: the report's own pass, where no run's pass collected them."""
    best = Path(run_dir) / "checkpoints" / "best.pt"
    if best.is_file():
        model.load_state_dict(load_checkpoint(best, map_location=precision.device)["model"])
    return predict_split(with_tta(model, tta), batches, precision)


def predict_split(model: nn.Module, batches: Iterable, precision: Precision,
                  memory_format: torch.memory_format = torch.preserve_format) -> Predictions:
    """Predicted and true labels for every batch (on the CPU), and the first inputs for display."""
    collector = PredictionCollector()
    validate(model, batches, nn.CrossEntropyLoss(), precision, memory_format, collect=collector)
    return collector.result()


def final_metrics(history: list[dict], predicted: torch.Tensor, targets: torch.Tensor,
                  split: str = "val") -> dict[str, float]:
    """The scores shown beside the hparams: best and final val accuracy, final val loss, and the reported
    split's accuracy (`hparam/report_test_acc`, or `hparam/report_val_acc` without a test split)."""
    accuracy = float((predicted == targets).float().mean()) if len(targets) else 0.0
    metrics = {f"hparam/report_{split}_acc": accuracy}
    if history:
        metrics |= {"hparam/best_val_acc": max(float(row["val_acc"]) for row in history),
                    "hparam/final_val_acc": float(history[-1]["val_acc"]),
                    "hparam/final_val_loss": float(history[-1]["val_loss"])}
    return metrics
