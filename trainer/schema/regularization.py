"""Schemas of the `regularization` group: the loss, batch mixing, and overrides of the model's regularizers."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.schema.checks import require


@dataclass
class RegularizationConfig:
    """Instantiates `trainer.training.regularization.Regularization`; every option file sets a few of these keys."""

    _target_: str = "trainer.training.regularization.Regularization"
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0  # > 0: mixup with lambda ~ Beta(alpha, alpha)
    cutmix_alpha: float = 0.0  # > 0: cutmix with lambda ~ Beta(alpha, alpha)
    mix_prob: float = 1.0  # fraction of batches that are mixed
    dropout: float | None = None  # overrides the model's `dropout`
    stochastic_depth: float | None = None  # overrides the model's `stochastic_depth`
    ema_decay: float | None = None  # keep and validate an EMA of the weights

    def __post_init__(self) -> None:
        require(0.0 <= self.label_smoothing < 1.0, "label_smoothing", "in [0, 1)", self.label_smoothing)
        require(self.mixup_alpha >= 0, "mixup_alpha", ">= 0", self.mixup_alpha)
        require(self.cutmix_alpha >= 0, "cutmix_alpha", ">= 0", self.cutmix_alpha)
        require(0.0 <= self.mix_prob <= 1.0, "mix_prob", "in [0, 1]", self.mix_prob)
        require(self.dropout is None or 0.0 <= self.dropout < 1.0, "dropout", "in [0, 1) or null", self.dropout)
        require(self.stochastic_depth is None or 0.0 <= self.stochastic_depth < 1.0, "stochastic_depth",
                "in [0, 1) or null", self.stochastic_depth)
        require(self.ema_decay is None or 0.0 < self.ema_decay < 1.0, "ema_decay", "in (0, 1) or null",
                self.ema_decay)


SCHEMAS = {"regularization": RegularizationConfig}
