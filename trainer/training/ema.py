"""An exponential moving average of the model's weights (and buffers), validated beside the raw model.

`ModelEma` keeps the average in `ema.module`, a copy of the model that validation runs like the model itself.
After every optimizer step the loop calls `ema.update(model)`; every `every_n_steps` steps that blends the
model's current weights in: ema = d * ema + (1 - d) * weights, the first average copying them. With `warmup`, d
starts at 0 and climbs towards `decay` (timm's warm-up), so an EMA with a long horizon (0.9999) is useful early in
training instead of remembering the random initialisation for thousands of steps.

Its state dict has the keys of torch's `AveragedModel(model, use_buffers=True)` (`n_averaged`, `module.<...>`) plus
`n_steps`, so checkpoints written before this class existed resume into it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import nn

WARMUP_POWER = 2 / 3  # timm ModelEmaV3 with warmup_gamma=1, warmup_power=2/3


class ModelEma(nn.Module):
    """The EMA of `model`'s parameters and buffers; validate `ema.module`, call `update(model)` after each step."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False, every_n_steps: int = 1) -> None:
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1 (got {every_n_steps})")
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.decay, self.warmup, self.every_n_steps = decay, warmup, every_n_steps
        # Buffers for the checkpoint; the Python counters are what update() reads, so it never waits on the device.
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))
        self.register_buffer("n_steps", torch.tensor(0, dtype=torch.long))
        self._averaged = self._steps = 0

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def decay_at(self, updates: int) -> float:
        """The decay of the average that follows `updates` earlier ones: `decay`, or its warm-up value."""
        if not self.warmup:
            return self.decay
        return min(self.decay, 1 - (1 + updates) ** -WARMUP_POWER)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Count one optimizer step of `model` (plain, DDP-wrapped or compiled); average on every n-th one."""
        self._steps += 1
        self.n_steps.fill_(self._steps)
        if self._steps % self.every_n_steps:
            return
        pairs = list(zip(tensors_of(self.module), tensors_of(model), strict=True))
        if self._averaged == 0:
            for ema, current in pairs:
                ema.copy_(current)
        else:
            self._blend(pairs, self.decay_at(self._averaged))
        self._averaged += 1
        self.n_averaged.fill_(self._averaged)

    @staticmethod
    def _blend(pairs: list[tuple[torch.Tensor, torch.Tensor]], decay: float) -> None:
        """ema = decay * ema + (1 - decay) * current for floating tensors; the others (step counters) copied."""
        floats = [(ema, current.to(ema.device)) for ema, current in pairs if ema.is_floating_point()]
        if floats:
            torch._foreach_lerp_([ema for ema, _ in floats], [current for _, current in floats], 1 - decay)
        for ema, current in pairs:
            if not ema.is_floating_point():
                ema.copy_(current)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # An AveragedModel's state dict (the old EMA) has no n_steps: it averaged on every step.
        if prefix + "n_steps" not in state_dict and prefix + "n_averaged" in state_dict:
            state_dict[prefix + "n_steps"] = state_dict[prefix + "n_averaged"]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._averaged, self._steps = int(self.n_averaged), int(self.n_steps)


def tensors_of(model: nn.Module) -> Iterator[torch.Tensor]:
    """Parameters then buffers, detached, in registration order (AveragedModel's order with use_buffers=True)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        yield tensor.detach()


def create_ema(model: nn.Module, decay: float, warmup: bool = False, every_n_steps: int = 1) -> ModelEma:
    """The EMA of `model` (built after the model is on its device, before it is wrapped or compiled)."""
    return ModelEma(model, decay, warmup=warmup, every_n_steps=every_n_steps)
