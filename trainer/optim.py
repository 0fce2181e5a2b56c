"""Optimizer and LR-scheduler factories: instantiate the configured torch classes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn


def create_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer class of `cfg._target_`, over the model's trainable parameters."""
    factory = instantiate(cfg, _convert_="all")
    return factory([p for p in model.parameters() if p.requires_grad])


@dataclass
class Scheduler:
    """A torch LR scheduler and when the loop must step it: after every `step` or every `epoch`."""

    scheduler: torch.optim.lr_scheduler.LRScheduler
    interval: str

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def create_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer) -> Scheduler:
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    interval = kwargs.pop("interval")
    factory = instantiate(kwargs, _convert_="all")
    return Scheduler(factory(optimizer), interval)
