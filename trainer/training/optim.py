"""Optimizer and LR-scheduler factories: instantiate the configured classes over the model's parameter groups
(trainer/training/param_groups.py), the schedule behind an optional linear warm-up."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from trainer.schema.optim import TRAINER_KEYS
from trainer.schema.scheduler import warmup_epochs
from trainer.training.muon import Muon
from trainer.training.param_groups import parameter_groups

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
    kernels = [{key: group[key] for key in ("fused", "foreach") if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kernel in zip(optimizer.param_groups, kernels, strict=True):
        group.update(kernel)
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

    The trainer's own keys (TRAINER_KEYS: no_decay_norm_bias, layer_decay, head_lr_mult...) are taken out here:
    they decide the parameter groups and each group's lr and weight decay (trainer/training/param_groups.py).
    """
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    own = {key: kwargs.pop(key, None) for key in TRAINER_KEYS}
    factory = instantiate(kwargs, _convert_="all")
    groups = parameter_groups(model, kwargs["lr"], kwargs.get("weight_decay", 0.0),
                              no_decay_norm_bias=bool(own["no_decay_norm_bias"]), layer_decay=own["layer_decay"],
                              head_lr_mult=own["head_lr_mult"],
                              norm_bias_lr_mult=own["norm_bias_lr_mult"], split_muon=issubclass(factory.func, Muon))
    params = [p for group in groups for p in group["params"]]
    return factory(groups, **fast_kernel_kwargs(factory.func, params))


def global_batch_size(cfg: DictConfig, world_size: int) -> int:
    """Samples per optimizer step over every process: data.batch_size x processes x accumulated batches."""
    return cfg.data.batch_size * world_size * cfg.trainer.accumulate_grad_batches


def lr_batch_factor(cfg: DictConfig, world_size: int = 1) -> float:
    """What `optim.scale_lr_with_batch` multiplies optim.lr by for the run's global batch (1 without scaling)."""
    rule, ratio = cfg.optim.get("scale_lr_with_batch"), global_batch_size(cfg, world_size) / cfg.optim.base_batch_size
    return 1.0 if not rule else ratio if rule == "linear" else math.sqrt(ratio)


def scale_lr_with_batch(cfg: DictConfig, world_size: int) -> str | None:
    """With `optim.scale_lr_with_batch`, set the run's `optim.lr` to the lr for its global batch (data.batch_size
    x processes x trainer.accumulate_grad_batches): optim.lr x global/base_batch_size (linear) or its square root
    (sqrt), so that whatever follows optim.lr (onecycle's max_lr) follows the scaled lr. Returns the console's line
    saying so (None without scaling)."""
    rule = cfg.optim.get("scale_lr_with_batch")
    if not rule:
        return None
    batch, base = global_batch_size(cfg, world_size), cfg.optim.base_batch_size
    factor = lr_batch_factor(cfg, world_size)
    lr = cfg.optim.lr * factor
    line = (f"optim.lr {cfg.optim.lr:g} scaled {rule} to the global batch {batch} (base_batch_size {base}): "
            f"x {factor:g} = {lr:g}")
    cfg.optim.lr = lr
    return line


@dataclass
class Warmup:
    """A linear warm-up of `steps` optimizer steps in front of a schedule: step t (from 0) trains at
    target x (t + 1) / steps, `targets` being each group's lr at the schedule's start.

    A per-epoch schedule starts at the first epoch after the warm-up: it waits out `epochs` epoch ends (the epochs
    the warm-up reaches into), the lr holding at its start between the warm-up's last step and that epoch.
    """

    steps: int
    epochs: int
    targets: list[float]
    steps_done: int = 0
    epochs_done: int = 0

    def set_lr(self, optimizer: torch.optim.Optimizer) -> None:
        factor = min(1.0, (self.steps_done + 1) / self.steps)
        for group, target in zip(optimizer.param_groups, self.targets, strict=True):
            group["lr"] = target * factor

    def state_dict(self) -> dict:
        return {"steps_done": self.steps_done, "epochs_done": self.epochs_done}


@dataclass
class Scheduler:
    """A torch LR scheduler and when the loop must step it: after every `step` or every `epoch`; in front of it,
    optionally, a linear `warmup` stepped after every optimizer step.

    The loop calls both `step_batch()` and `step_epoch()`; each acts only at the scheduler's own interval.
    """

    scheduler: LRScheduler | ReduceLROnPlateau
    interval: str
    warmup: Warmup | None = None

    def step_batch(self) -> None:
        """After every optimizer step: advance the warm-up, or a per-batch schedule (onecycle, warmup_cosine)."""
        warmup = self.warmup
        if warmup is not None and warmup.steps_done < warmup.steps:
            warmup.steps_done += 1
            warmup.set_lr(self.scheduler.optimizer)
            return
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
        warmup = self.warmup
        if warmup is not None and warmup.epochs_done < warmup.epochs:
            warmup.epochs_done += 1  # an epoch of the warm-up: the schedule's first epoch comes after it
            return
        if isinstance(self.scheduler, ReduceLROnPlateau):
            if val_loss is None:
                raise ValueError("ReduceLROnPlateau needs the validation loss to step")
            self.scheduler.step(val_loss)
        else:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return {"schedule": self.scheduler.state_dict(),
                "warmup": self.warmup.state_dict() if self.warmup is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`; a checkpoint saved before warm-ups (the schedule's own state alone) restores
        the schedule, its warm-up (warmup_cosine's) within."""
        if "schedule" not in state:
            self.scheduler.load_state_dict(state)
            if self.warmup is not None:
                self.warmup.steps_done, self.warmup.epochs_done = self.warmup.steps, self.warmup.epochs
            return
        self.scheduler.load_state_dict(state["schedule"])
        if self.warmup is not None and state.get("warmup"):
            self.warmup.steps_done = state["warmup"]["steps_done"]
            self.warmup.epochs_done = state["warmup"]["epochs_done"]


@dataclass
class WarmupCosine:
    """The LR factor at a step: cosine from 1 down to `min_lr_ratio` at `total_steps`, after a linear ramp from
    1/warmup_steps to 1 over `warmup_steps` (0 for `scheduler=warmup_cosine`, whose warm-up is the scheduler's
    `warmup_epochs`/`warmup_steps`; checkpoints saved before those keys carry their ramp here). An object, not a
    closure, so LambdaLR's state_dict carries its length to a resumed run."""

    warmup_steps: int
    total_steps: int
    min_lr_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, *, total_steps: int, min_lr_ratio: float = 0.0) -> LambdaLR:
    """`scheduler=warmup_cosine`'s schedule after its warm-up: a per-batch cosine LambdaLR over `total_steps`."""
    return LambdaLR(optimizer, WarmupCosine(0, total_steps, min_lr_ratio))


def create_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int,
                     max_epochs: int, start_epoch: int = 0) -> Scheduler:
    """The scheduler of `cfg._target_` over `optimizer`, for a run of `max_epochs` x `steps_per_epoch` batches,
    behind a linear warm-up of `warmup_steps` (or `warmup_epochs` x steps_per_epoch) optimizer steps (a null
    `warmup_epochs`: trainer.schema.scheduler.warmup_epochs).

    Keys that measure the run and are left null in the config (`total_steps`) are filled in here, the loader length
    being known only once the data is built; they, and a cosine `T_max` that follows `trainer.max_epochs`, measure
    the run after the warm-up. A scalar `max_lr` (onecycle) becomes one per group, x each group's `lr_scale`, so
    layer-wise lrs keep their ratios.

    `start_epoch` > 0 (a resume with `trainer.extend_schedule=true`): a fresh schedule over the epochs
    start_epoch + 1 .. max_epochs alone, from the optimizer's initial lr (`optim.lr`) as if the run began there,
    without a warm-up (the weights are past it); a cosine `T_max` that follows `trainer.max_epochs` becomes the
    number of those epochs.
    """
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    interval = kwargs.pop("interval")
    steps = kwargs.pop("warmup_steps", 0)
    warmup_steps = steps + warmup_epochs(kwargs.pop("warmup_epochs", 0), steps) * steps_per_epoch
    run_epochs = max_epochs
    if start_epoch:
        for group in optimizer.param_groups:  # a restored optimizer holds the old schedule's last lr
            group["lr"] = group.get("initial_lr", group["lr"])
        run_epochs, warmup_steps = max_epochs - start_epoch, 0
    ramp_epochs = math.ceil(warmup_steps / steps_per_epoch)
    if kwargs.get("T_max") == max_epochs:
        kwargs["T_max"] = max(1, run_epochs - ramp_epochs)
    if "total_steps" in kwargs and kwargs["total_steps"] is None:
        kwargs["total_steps"] = max(1, steps_per_epoch * run_epochs - warmup_steps)
    if isinstance(kwargs.get("max_lr"), float | int):
        kwargs["max_lr"] = [kwargs["max_lr"] * group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    factory = instantiate(kwargs, _convert_="all")
    schedule = factory(optimizer)
    if not warmup_steps:
        return Scheduler(schedule, interval)
    warmup = Warmup(warmup_steps, ramp_epochs, [group["lr"] for group in optimizer.param_groups])
    warmup.set_lr(optimizer)
    return Scheduler(schedule, interval, warmup)
