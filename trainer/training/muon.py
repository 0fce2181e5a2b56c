"""`optim=muon`: torch's Muon on the hidden weight matrices and AdamW on every other parameter, as one optimizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon over the groups marked `use_muon` (trainer.training.param_groups marks the hidden 2-D
    weights), torch.optim.AdamW over the others, at `adamw_lr_ratio` x their lr.

    One optimizer to the rest of the run: its `param_groups` are the two inner optimizers' groups (the same dicts,
    so an LR scheduler sets both), and its `state` is theirs, so `state_dict()` / `load_state_dict()` are torch's
    own and round-trip exactly. `fused`/`foreach` choose the AdamW part's kernel (torch's Muon has one kernel).
    With `scheduler=onecycle`, the cycled momentum is Muon's (`optimizer.defaults` holds `momentum`, not `betas`).

    No setting has a default of its own: the config supplies each (MuonConfig in trainer/schema/optim.py); `fused`
    and `foreach` left None are torch's kernel choice.
    """

    def __init__(self, params: Iterable[dict[str, Any]], lr: float, weight_decay: float, *, momentum: float,
                 nesterov: bool, ns_steps: int, adjust_lr_fn: str, adamw_lr_ratio: float,
                 betas: tuple[float, float], eps: float, amsgrad: bool, fused: bool | None = None,
                 foreach: bool | None = None) -> None:
        groups = [group if isinstance(group, dict) else {"params": [group]} for group in params]
        matrices = [group for group in groups if group.get("use_muon")]
        others = [group for group in groups if not group.get("use_muon")]
        for group in others:  # the AdamW part's lr, kept in lr_scale so schedulers that read it follow
            group["lr"] = group.get("lr", lr) * adamw_lr_ratio
            group["lr_scale"] = group.get("lr_scale", 1.0) * adamw_lr_ratio
        self.inner: list[torch.optim.Optimizer] = []
        if matrices:
            self.inner.append(torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay, momentum=momentum,
                                               nesterov=nesterov, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn))
        if others:
            self.inner.append(torch.optim.AdamW(others, lr=lr * adamw_lr_ratio, betas=betas, eps=eps,
                                                weight_decay=weight_decay, amsgrad=amsgrad, fused=fused,
                                                foreach=foreach))
        super().__init__([group for optimizer in self.inner for group in optimizer.param_groups], {})
        self.defaults = {"lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
                         "ns_steps": ns_steps, "adjust_lr_fn": adjust_lr_fn, "adamw_lr_ratio": adamw_lr_ratio,
                         "fused": fused, "foreach": foreach}
        self.share()

    def share(self) -> None:
        """Hand this optimizer's groups (in order: Muon's, then AdamW's) and its state back to the inner two."""
        start = 0
        for optimizer in self.inner:
            count = len(optimizer.param_groups)
            optimizer.param_groups = self.param_groups[start:start + count]
            optimizer.state = self.state
            start += count

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # new group dicts and state: share them again
        self.share()

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.inner:
            optimizer.step()
        return loss
