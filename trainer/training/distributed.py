"""Data-parallel training under `torchrun`: the process group, and the few collective calls the loop needs.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them every helper here is a no-op for one process.
Rank 0 owns the run dir and every file in it; the other ranks train, and agree with rank 0 at each step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer import environment
from trainer.environment import launched_by_torchrun, torchrun_rank
from trainer.errors import ConfigError
from trainer.training.metrics import EpochStats


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; `world_size == 1` is an ordinary single-process run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (a picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(values, value)
        return values

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when `flag` is true on any rank (one small all-reduce)."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return bool(tensor.item())

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank: all ranks must skip or stop together, or DDP hangs."""
        finite = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
        if self.enabled:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        return bool(finite.item())

    def reduce_stats(self, stats: EpochStats, device: torch.device) -> EpochStats:
        """Epoch metrics over every rank's samples: sums of loss, hits and samples; the slowest rank's time."""
        if not self.enabled:
            return stats
        top5 = stats.top5 if stats.top5 is not None else 0.0
        sums = torch.tensor([stats.loss * stats.samples, stats.acc * stats.samples, top5 * stats.samples,
                             float(stats.samples), float(stats.skipped)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(sums)
        seconds = torch.tensor([stats.seconds], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(seconds, op=torch.distributed.ReduceOp.MAX)
        loss_sum, hits, hits5, samples, skipped = sums.tolist()
        n = max(samples, 1.0)
        return EpochStats(loss=loss_sum / n, acc=hits / n, top5=None if stats.top5 is None else hits5 / n,
                          samples=int(samples), seconds=float(seconds.item()), steps=stats.steps,
                          skipped=int(skipped))


def init_distributed(device_name: str) -> tuple[Distributed, torch.device | None]:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU); returns the context and this rank's device.

    The device is None for a single process: the caller picks it as usual.
    """
    if not launched_by_torchrun():
        return Distributed(), None
    rank, world_size, local_rank = torchrun_rank(), environment.world_size(), environment.local_rank()
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={device_name} but no CUDA device is available; use trainer.device=cpu")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s): "
                              "start at most one process per GPU (--nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo", device_id=device if use_cuda
                                             else None)
    return Distributed(rank, local_rank, world_size), device


def shutdown_distributed(ctx: Distributed) -> None:
    if ctx.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def wrap_model(model: nn.Module, ctx: Distributed, device: torch.device) -> nn.Module:
    """DDP around `model` under torchrun; the model itself when running alone."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter: equal digests mean bitwise-equal weights.

    Buffers are left out: BatchNorm's running statistics follow each rank's own batches (DDP copies rank 0's
    at every forward pass, and rank 0's are the ones saved).
    """
    digest = hashlib.sha256()
    for name, tensor in model.named_parameters():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def shared_run_dir(ctx: Distributed, run_dir: Path) -> Path:
    """Rank 0's run dir on every rank (the others were started with a throwaway one)."""
    return Path(ctx.broadcast(str(run_dir)))
