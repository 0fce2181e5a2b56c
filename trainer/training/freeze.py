"""`model.freeze=[stem, stages.0]` and `trainer.unfreeze_at_epoch=N`: train part of the model, then all of it.

A frozen parameter gets `requires_grad=False` and its norm layers stay in eval mode, so their running statistics
are frozen too (as timm's freeze does). The frozen parameters stay in the optimizer from the start: their grad is
None, so the optimizer skips them (no step, no weight decay), and unfreezing needs no new parameter groups. The
`Unfreeze` hook lifts the freeze before epoch N+1, so a run resumed at any point is frozen or not exactly as the
uninterrupted run.
"""

from __future__ import annotations

import logging
import types
from typing import TYPE_CHECKING

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from trainer.errors import ConfigError
from trainer.training.hooks import Hook

log = logging.getLogger("trainer")

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig

    from trainer.reporting.console import RunConsole
    from trainer.training.checkpoint import TrainState
    from trainer.training.distributed import Distributed


def under(name: str, prefix: str) -> bool:
    """Whether the module or parameter `name` is `prefix` or inside it (`stages.0` holds `stages.0.conv.weight`,
    not `stages.01.weight`)."""
    return not prefix or name == prefix or name.startswith(prefix + ".")


def frozen_parameters(model: nn.Module, prefixes: list[str]) -> list[nn.Parameter]:
    """The parameters under any of `prefixes`; a ConfigError for a prefix that holds none, listing the model's
    top-level modules."""
    named = list(model.named_parameters())
    unknown = [prefix for prefix in prefixes if not any(under(name, prefix) for name, _ in named)]
    if unknown:
        top = ", ".join(name for name, _ in model.named_children())
        raise ConfigError(f"model.freeze: {', '.join(unknown)} names no parameters of the model (prefixes of "
                          f"module names; its top-level modules: {top})")
    return [p for name, p in named if any(under(name, prefix) for prefix in prefixes)]


def frozen_norms(model: nn.Module, prefixes: list[str]) -> list[nn.Module]:
    """The norm layers with running statistics (BatchNorm, SyncBatchNorm, InstanceNorm) under `prefixes`."""
    return [m for name, m in model.named_modules() if isinstance(m, _NormBase) and any(under(name, p)
                                                                                       for p in prefixes)]


def listed(prefixes: list[str]) -> str:
    """The prefixes as the command line writes them: [stem, stages.0]."""
    return "[" + ", ".join(prefixes) + "]"


def eval_only(module: nn.Module, mode: bool = True) -> nn.Module:
    """`module.train(mode)` for a frozen norm layer: it stays in eval mode whatever the run asks."""
    return nn.Module.train(module, False)


def freeze(model: nn.Module, prefixes: list[str]) -> list[str]:
    """Freeze the parameters under `prefixes` and keep their norm layers in eval mode; the console line that
    says so (none without prefixes). Call it after the optimizer is built and before DDP wraps the model."""
    if not prefixes:
        return []
    params = frozen_parameters(model, prefixes)
    for param in params:
        param.requires_grad_(False)
    for norm in frozen_norms(model, prefixes):
        norm.train = types.MethodType(eval_only, norm)  # model.train() reaches it through this
        norm.train()
    total = sum(p.numel() for p in model.parameters())
    return [f"model.freeze={listed(prefixes)}: {sum(p.numel() for p in params):,} of {total:,} parameters frozen, "
            "their norm layers' running statistics too"]


def unfreeze(model: nn.Module, prefixes: list[str], optimizer: torch.optim.Optimizer) -> None:
    """Undo `freeze`: every parameter under `prefixes` that `optimizer` steps trains (one the model keeps frozen
    itself, such as airbench's BatchNorm weights, stays frozen), and their norm layers follow the model's mode."""
    stepped = {id(param) for group in optimizer.param_groups for param in group["params"]}
    for param in frozen_parameters(model, prefixes):
        if id(param) in stepped:
            param.requires_grad_(True)
    for norm in frozen_norms(model, prefixes):
        if "train" in vars(norm):
            del norm.train
        norm.train(model.training)


def check_freeze_options(cfg: DictConfig, ctx: Distributed) -> None:
    """Refuse, before anything is built, a trainer.unfreeze_at_epoch without model.freeze, or under torchrun
    (DDP keeps to the parameters that were trainable when it wrapped the model); warn when it is at or past the
    last epoch."""
    at = cfg.trainer.get("unfreeze_at_epoch")
    if at is None:
        return
    if not cfg.model.get("freeze"):
        raise ConfigError(f"trainer.unfreeze_at_epoch={at} needs model.freeze (the module-name prefixes to train "
                          "only from that epoch on), e.g. model.freeze=[features.0]")
    if at >= cfg.trainer.max_epochs:  # a warning, not an error: a later resume may extend trainer.max_epochs
        log.warning("trainer.unfreeze_at_epoch=%d: the freeze does not lift in a run of trainer.max_epochs=%d",
                    at, cfg.trainer.max_epochs)
    if ctx.enabled:
        raise ConfigError(f"trainer.unfreeze_at_epoch={at} is not supported under torchrun (DDP syncs only the "
                          "parameters trainable when the run starts); freeze for the whole run, or run one process")


class Unfreeze(Hook):
    """Lift `model.freeze` before epoch `at + 1`: after `at` epochs every parameter trains."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, prefixes: list[str], at: int,
                 console: RunConsole) -> None:
        self.model, self.optimizer, self.prefixes, self.at, self.console = model, optimizer, list(prefixes), at, console
        self.frozen = True

    def before_epoch(self, state: TrainState) -> None:
        if not self.frozen or state.epoch < self.at:
            return
        unfreeze(self.model, self.prefixes, self.optimizer)
        self.frozen = False
        self.console.info(f"epoch {state.epoch + 1}: model.freeze={listed(self.prefixes)} lifted "
                          f"(trainer.unfreeze_at_epoch={self.at}); every parameter trains from now on")


def unfreeze_hooks(cfg: DictConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                   console: RunConsole) -> list[Hook]:
    """The run's `Unfreeze` hook when trainer.unfreeze_at_epoch is set (none otherwise)."""
    at = cfg.trainer.get("unfreeze_at_epoch")
    return [] if at is None else [Unfreeze(model, optimizer, list(cfg.model.freeze), at, console)]
