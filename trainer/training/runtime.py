"""Where and how the math runs: device choice, mixed precision, seeding and determinism."""

from __future__ import annotations

import contextlib
import gc
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from trainer.errors import ConfigError

# Whether a run's set-up objects are frozen now, and how many runs of this process froze theirs.
_FROZEN = {"now": False, "runs": 0}


def freeze_setup_objects() -> None:
    """Take every object made so far (the imported modules, the config, the model, the data sets: hundreds of
    thousands) out of the cyclic garbage collector's passes for the rest of the run. Each full pass would walk
    them all again; the report's figures alone trigger enough passes to cost a third of its time. Objects freed
    by reference counting are freed as before; `release_setup_objects` hands them back at the run's end.

    From the second run of a process on (a sweep's jobs, a test suite), the garbage of the runs before is
    collected first, so that it is not kept for this run's length (a failed job's model, held by its traceback).
    Nothing is frozen when the caller has frozen objects of its own."""
    if gc.get_freeze_count():
        return
    if _FROZEN["runs"]:
        gc.collect()
    gc.freeze()
    _FROZEN.update(now=True, runs=_FROZEN["runs"] + 1)


def release_setup_objects() -> None:
    """Return what `freeze_setup_objects` set aside to the collector."""
    if _FROZEN["now"]:
        gc.unfreeze()
        _FROZEN["now"] = False


def select_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is a clear error, not a crash."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.device={name} but no CUDA device is available; "
                              "use trainer.device=cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"trainer.device={name} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


@dataclass(frozen=True)
class Precision:
    """`32` runs in float32; `bf16` and `16` autocast, and only `16` (fp16) needs a gradient scaler."""

    name: str
    device: torch.device

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[self.name]

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "16")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic kernels when asked; otherwise let cuDNN pick the fastest ones."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def capture_rng_state() -> dict:
    """Every RNG state that decides the rest of a run, as types `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def memory_format(channels_last: bool) -> torch.memory_format:
    """NHWC (`channels_last`) for convnets under AMP on tensor-core GPUs; otherwise keep tensors as they are."""
    return torch.channels_last if channels_last else torch.preserve_format


def compile_model(model: torch.nn.Module, enabled: bool, mode: str = "default",
                  backend: str = "inductor") -> torch.nn.Module:
    """`torch.compile(model)` when enabled (compilation happens at the first batch), else the model itself.

    `mode` tunes the inductor backend; other backends (`aot_eager` traces without generating code) ignore it.
    """
    if not enabled:
        return model
    return torch.compile(model, mode=mode if backend == "inductor" else None, backend=backend)


def is_compile_error(err: BaseException) -> bool:
    """Whether `err` came from torch.compile's tracing or code generation (not from the model's own code)."""
    return type(err).__module__.startswith(("torch._dynamo", "torch._inductor"))
