"""Schemas of the `regularization` group: the training criterion and its regularizers."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.schema.checks import require


@dataclass
class RegularizationConfig:
    """The training criterion; regularizers that live in the loss configure it here."""

    _target_: str = "torch.nn.CrossEntropyLoss"
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        require(0.0 <= self.label_smoothing < 1.0, "label_smoothing", "in [0, 1)", self.label_smoothing)


SCHEMAS = {"regularization": RegularizationConfig}
