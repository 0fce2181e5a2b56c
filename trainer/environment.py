"""The process environment the trainer reads: torchrun's variables and HYDRA_FULL_ERROR, without importing torch.

Every read of `os.environ` in the trainer goes through this module.
"""

from __future__ import annotations

import os


def world_size() -> int:
    """Processes in the torchrun job (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_by_torchrun() -> bool:
    """True in a process that torchrun started with more than one process in the job."""
    return world_size() > 1


def torchrun_rank() -> int:
    """This process's global rank (0 when not under torchrun)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its own machine (its GPU index under torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """Processes torchrun started on this machine (its --nproc_per_node)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))


def full_error_requested() -> bool:
    """HYDRA_FULL_ERROR=1: show every error's whole traceback instead of its one line."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"
