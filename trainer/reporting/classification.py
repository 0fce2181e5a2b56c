"""Per-class scores for the run report: a confusion matrix and precision / recall / F1 / support from it."""

from __future__ import annotations

import torch


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """num_classes x num_classes counts: row = true class, column = predicted class."""
    flat = targets.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_metrics(matrix: torch.Tensor, classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    matrix = matrix.double()
    hits = matrix.diag()
    predicted, support = matrix.sum(dim=0), matrix.sum(dim=1)
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), 0.0)
    recall = torch.where(support > 0, hits / support.clamp(min=1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp(min=1e-12), 0.0)
    return [{"class": name, "precision": round(p, 6), "recall": round(r, 6), "f1": round(f, 6), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision.tolist(), recall.tolist(), f1.tolist(),
                                        support.tolist(), strict=True)]
