"""Optimizer and LR-scheduler factories: instantiate the configured torch classes."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

# Layers whose weights are scales and shifts of normalised activations: decaying them towards 0 only hurts.
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)


def parameter_groups(model: nn.Module, no_decay_norm_bias: bool = False) -> list[dict]:
    """The trainable parameters as optimizer groups: one, or (decay, no-decay) with weight_decay 0 on biases
    and normalisation weights (every 1-D parameter, and any parameter of a norm layer)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_decay_norm_bias:
        return [{"params": params}]
    exempt = {id(p) for module in model.modules() for p in module.parameters(recurse=False)
              if p.ndim <= 1 or isinstance(module, NORM_LAYERS)}
    decay = [p for p in params if id(p) not in exempt]
    no_decay = [p for p in params if id(p) in exempt]
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


# Devices with fused optimizer kernels in torch; on CPU the fused AdamW step is ~6x faster than the for loop.
FUSED_DEVICE_TYPES = ("cpu", "cuda")


def fast_kernel_kwargs(optimizer_class: type, params: list[torch.Tensor]) -> dict:
    """`fused=True` where torch has a fused kernel for the class (Adam, AdamW, SGD) and every parameter is a
    float tensor on a CPU or CUDA device; otherwise nothing, which leaves torch's default (RMSprop: foreach on
    CUDA, a for loop on CPU)."""
    has_fused = "fused" in inspect.signature(optimizer_class).parameters
    supported = bool(params) and all(p.device.type in FUSED_DEVICE_TYPES and p.is_floating_point() for p in params)
    return {"fused": True} if has_fused and supported else {}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """`optimizer.load_state_dict(state)`, kept on this optimizer's kernel and its parameters' memory layout.

    torch's loader takes each group's `fused`/`foreach` from the saved state (a checkpoint from a for-loop
    optimizer would turn fused off) and keeps the saved strides of moment buffers, which a fused kernel reads
    as if laid out like the parameter: a run resumed with another `trainer.channels_last` would update the
    wrong elements. Here the kernel choice comes back and every buffer is re-laid like its parameter.
    """
    optimizer.load_state_dict(state)
    kernels = {key: optimizer.defaults[key] for key in ("fused", "foreach") if key in optimizer.defaults}
    for group in optimizer.param_groups:
        group.update(kernels)
        for param in group["params"]:
            buffers = optimizer.state.get(param, {})
            for key, value in buffers.items():
                if not torch.is_tensor(value):
                    continue
                if key == "step" and group.get("fused"):
                    buffers[key] = value.to(device=param.device, dtype=torch.float32)
                elif key == "step" and not group.get("capturable") and value.device.type != "cpu":
                    buffers[key] = value.cpu()  # the for-loop and foreach steps read it on the host
                elif value.shape == param.shape and value.stride() != param.stride():
                    buffers[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def create_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer class of `cfg._target_`, over the model's trainable parameters.

    `no_decay_norm_bias` is not a torch argument: it is taken out here and decides the parameter groups.
    """
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    no_decay_norm_bias = kwargs.pop("no_decay_norm_bias", False)
    factory = instantiate(kwargs, _convert_="all")
    groups = parameter_groups(model, no_decay_norm_bias)
    params = [p for group in groups for p in group["params"]]
    return factory(groups, **fast_kernel_kwargs(factory.func, params))


@dataclass
class Scheduler:
    """A torch LR scheduler and when the loop must step it: after every `step` or every `epoch`.

    The loop calls both `step_batch()` and `step_epoch()`; each acts only at the scheduler's own interval.
    """

    scheduler: LRScheduler
    interval: str

    def step_batch(self) -> None:
        """After every optimizer step: advance a per-batch schedule (onecycle, warmup_cosine)."""
        if self.interval != "step":
            return
        total = getattr(self.scheduler, "total_steps", None)
        if total is not None and self.scheduler.last_epoch >= total - 1:
            return  # OneCycleLR's last step is total - 1: hold its final, lowest lr (it raises past the end)
        self.scheduler.step()

    def step_epoch(self, val_loss: float | None = None) -> None:
        """After validation: advance a per-epoch schedule; ReduceLROnPlateau judges `val_loss`."""
        if self.interval != "epoch":
            return
        if isinstance(self.scheduler, ReduceLROnPlateau):
            if val_loss is None:
                raise ValueError("ReduceLROnPlateau needs the validation loss to step")
            self.scheduler.step(val_loss)
        else:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


@dataclass
class WarmupCosine:
    """The LR factor at a step: linear warmup from 1/warmup_steps to 1, then cosine down to `min_lr_ratio` at
    `total_steps`. An object, not a closure, so LambdaLR's state_dict carries its length to a resumed run."""

    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, *, warmup: int, warmup_unit: str, total_steps: int,
                  steps_per_epoch: int, min_lr_ratio: float = 0.0) -> LambdaLR:
    """`scheduler=warmup_cosine`: a per-batch LambdaLR; `warmup` counts steps or epochs (`warmup_unit`)."""
    warmup_steps = warmup * steps_per_epoch if warmup_unit == "epochs" else warmup
    return LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_lr_ratio))


def create_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int,
                     max_epochs: int, start_epoch: int = 0) -> Scheduler:
    """The scheduler of `cfg._target_` over `optimizer`, for a run of `max_epochs` x `steps_per_epoch` batches.

    Keys that measure the run (`total_steps`, `steps_per_epoch`) and are left null in the config are filled in
    here: the loader length is only known once the data is built.

    `start_epoch` > 0 (a resume with `trainer.extend_schedule=true`): a fresh schedule over the epochs
    start_epoch + 1 .. max_epochs alone, from the optimizer's initial lr (`optim.lr`) as if the run began there;
    a cosine `T_max` that follows `trainer.max_epochs` becomes the number of those epochs.
    """
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    interval = kwargs.pop("interval")
    if start_epoch:
        for group in optimizer.param_groups:  # a restored optimizer holds the old schedule's last lr
            group["lr"] = group.get("initial_lr", group["lr"])
        if kwargs.get("T_max") == max_epochs:
            kwargs["T_max"] = max_epochs - start_epoch
        max_epochs -= start_epoch
    run_length = {"total_steps": steps_per_epoch * max_epochs, "steps_per_epoch": steps_per_epoch}
    for key, value in run_length.items():
        if key in kwargs and kwargs[key] is None:
            kwargs[key] = value
    factory = instantiate(kwargs, _convert_="all")
    return Scheduler(factory(optimizer), interval)
