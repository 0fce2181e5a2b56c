"""Schemas of the `regularization` group: the loss, batch mixing, and overrides of the model's regularizers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    ema_decay: float | None = None  # keep, validate and checkpoint an EMA of the weights (monitor val_ema/acc)
    ema_warmup: bool = False  # EMA decay min(ema_decay, 1 - (1 + n) ** -2/3) after n averages (timm's warm-up)
    ema_every_n_steps: int = 1  # average into the EMA on every n-th optimizer step only
    # Cross-entropy class weights: null (none), auto (N / (classes * count of the class) on the training
    # labels) or one positive number per class. Any: OmegaConf cannot type a str-or-list union.
    class_weights: Any = None

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
        require(self.ema_every_n_steps >= 1, "ema_every_n_steps", ">= 1", self.ema_every_n_steps)
        require(valid_class_weights(self.class_weights), "class_weights",
                "null, auto or a non-empty list of numbers > 0", self.class_weights)


def valid_class_weights(value: Any) -> bool:
    """null, "auto", or a non-empty list of positive numbers (booleans are not numbers here)."""
    if value is None or value == "auto":
        return True
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value:
        return False
    return all(isinstance(w, int | float) and not isinstance(w, bool) and w > 0 for w in value)


def check_class_weights(cfg: Any) -> None:
    """A list of regularization.class_weights needs one weight per class of the data (a ValueError otherwise)."""
    weights = cfg.regularization.get("class_weights") if cfg.get("mode") == "train" else None
    if weights is None or isinstance(weights, str):
        return
    require(len(weights) == cfg.data.num_classes, "regularization.class_weights",
            f"auto or {cfg.data.num_classes} weights, one per class of data.num_classes", list(weights))


SCHEMAS = {"regularization": RegularizationConfig}
