"""Checkpoints that are written atomically and loaded without ever running pickled code."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from trainer.errors import CheckpointError, OutputError

REQUIRED_KEYS = ("model", "config", "epoch")


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    A kill at any instant leaves either the old file or the complete new one, never a truncated one.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OutputError(f"could not write {path}: {err.strerror or err}") from None
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make run files private to their writer
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        # torch.save reports a failed write of its zip stream as a RuntimeError
        if isinstance(err, (OSError, RuntimeError)):
            reason = getattr(err, "strerror", None) or str(err).strip().splitlines()[0]
            raise OutputError(f"could not write {path}: {reason}; its previous version is intact") from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(payload: dict, path: Path) -> None:
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load with `weights_only=True`; every way this can fail becomes a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else "unsafe pickle"
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"refusing to load {path}: it needs arbitrary unpickling, which could run code "
                "(only weights-only checkpoints are accepted)") from None
        raise CheckpointError(f"checkpoint {path} is corrupt: {reason}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {reason}") from None
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a trainer checkpoint (expected keys {', '.join(REQUIRED_KEYS)})")
    return payload


def config_mismatch(saved: dict, wanted: dict) -> list[str]:
    """The keys whose values differ between two model configs, sorted."""
    return sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))


def check_model_config(saved: dict, wanted: dict, path: str | Path) -> None:
    differing = config_mismatch(saved, wanted)
    if differing:
        details = ", ".join(f"model.{k}: checkpoint {saved.get(k)!r} vs requested {wanted.get(k)!r}"
                            for k in differing)
        raise CheckpointError(f"checkpoint {path} was made for another model ({details})")
