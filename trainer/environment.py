"""What torchrun tells a process through its environment, readable without importing torch."""

from __future__ import annotations

import os


def launched_by_torchrun() -> bool:
    """True in a process that torchrun started with more than one process in the job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def torchrun_rank() -> int:
    """This process's global rank (0 when not under torchrun)."""
    return int(os.environ.get("RANK", "0"))
