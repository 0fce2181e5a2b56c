"""The one-line range check every schema's `__post_init__` uses."""

from __future__ import annotations

from typing import Any


def require(ok: bool, key: str, requirement: str, value: Any) -> None:
    """Raise ValueError("<key> must be <requirement> (got <value>)") unless `ok`."""
    if not ok:
        raise ValueError(f"{key} must be {requirement} (got {value!r})")
