"""An exponential moving average of the model's weights (and buffers), validated beside the raw model."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def create_ema(model: nn.Module, decay: float) -> AveragedModel:
    """ema = decay * ema + (1 - decay) * weights after every optimizer step; the first step copies."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
