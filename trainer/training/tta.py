"""Test-time augmentation: average a classifier's logits over mirrored and shifted copies of each image.

`with_tta(model, mode)` returns the model itself for "none", and otherwise a `TTAModel` that holds it: train(),
eval() and .to() reach the wrapped model as they would unwrapped. Evaluate with it; save the wrapped model's
weights, not the wrapper's (its state dict keys carry a `model.` prefix).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.schema.run import TTA_MODES
from trainer.schema.run import TTA_TRANSLATE_PX as TRANSLATE_PX


class TTAModel(nn.Module):
    """`model` with its logits averaged over the views of `mode` ("flip" or "flip_translate"), in float32."""

    def __init__(self, model: nn.Module, mode: str) -> None:
        super().__init__()
        if mode not in TTA_MODES or mode == "none":
            raise ValueError(f"TTA mode must be one of {', '.join(TTA_MODES[1:])} for TTAModel (got {mode!r})")
        self.model, self.mode = model, mode

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = self.flip_mean(inputs)
        if self.mode == "flip":
            return logits
        shifted = (self.flip_mean(shift(inputs, TRANSLATE_PX, TRANSLATE_PX))
                   + self.flip_mean(shift(inputs, -TRANSLATE_PX, -TRANSLATE_PX))) / 2
        return 0.5 * logits + 0.5 * shifted

    def flip_mean(self, inputs: torch.Tensor) -> torch.Tensor:
        """The mean of the logits of `inputs` and of their horizontal mirror images."""
        return (self.model(inputs).float() + self.model(inputs.flip(-1)).float()) / 2


def shift(inputs: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """Images (..., H, W) translated by `down` and `right` pixels (|shift| <= TRANSLATE_PX), reflect-filled."""
    height, width = inputs.shape[-2:]
    if min(height, width) <= TRANSLATE_PX:
        raise ValueError(f"flip_translate needs images larger than {TRANSLATE_PX} px (got {height}x{width})")
    padded = F.pad(inputs, (TRANSLATE_PX,) * 4, mode="reflect")
    top, left = TRANSLATE_PX - down, TRANSLATE_PX - right
    return padded[..., top:top + height, left:left + width]


def with_tta(model: nn.Module, mode: str) -> nn.Module:
    """`model` for mode "none"; a `TTAModel` averaging over `mode`'s views otherwise (ValueError if unknown)."""
    if mode not in TTA_MODES:
        raise ValueError(f"TTA mode must be one of {', '.join(TTA_MODES)} (got {mode!r})")
    return model if mode == "none" else TTAModel(model, mode)
