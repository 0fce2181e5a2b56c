"""What `load_checkpoint` checks about a file before and after torch reads it, each failure a one-line
CheckpointError: a directory, a file torch.save did not write (empty, random bytes, an ONNX or TorchScript export),
entries of the wrong kind; and `load_model_weights`, which names the weights that do not fit a model."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from trainer.errors import CheckpointError, first_line

REQUIRED_KEYS = ("model", "config", "epoch")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # the older one: a pickled magic number
NEEDS_A_CHECKPOINT = ("mode=eval, predict and export, and trainer.resume, need a training checkpoint: "
                      "a run's checkpoints/last.pt or checkpoints/best.pt")


def refuse_directory(path: Path) -> None:
    """A CheckpointError for a directory given as a checkpoint, suggesting its checkpoints/last.pt if it has one."""
    if path.is_dir():
        last = path / "checkpoints" / "last.pt"
        hint = f"did you mean {last}?" if last.is_file() else NEEDS_A_CHECKPOINT
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file; {hint}")


def refuse_non_checkpoint(path: Path) -> None:
    """A CheckpointError for a file that is not one torch.save wrote: empty, another format, a TorchScript export."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(LEGACY_MAGIC))
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    if not head:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a write that never finished, or not a "
                              "checkpoint")
    if not head.startswith((ZIP_MAGIC, LEGACY_MAGIC)):
        kind = "an ONNX export" if path.suffix == ".onnx" else "corrupt, or another kind of file"
        raise CheckpointError(f"{path} is not a checkpoint (not a file torch.save wrote): {kind}; "
                              f"{NEEDS_A_CHECKPOINT}")
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {first_line(err)}") from None
        if any(name == "constants.pkl" or name.endswith("/constants.pkl") for name in names):
            raise CheckpointError(f"{path} is a TorchScript export (what mode=export writes), not a training "
                                  f"checkpoint; {NEEDS_A_CHECKPOINT}")


def unpickling_reason(err: Exception) -> str:
    """What torch's weights-only unpickler objected to, without its advice to load with weights_only=False."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return lines[0].rstrip(".") if lines else type(err).__name__


def check_entries(payload: object, path: Path) -> None:
    """A CheckpointError unless `payload` has a state_dict, a config with a model entry and an epoch number."""
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a trainer checkpoint (expected keys {', '.join(REQUIRED_KEYS)}); "
                              f"{NEEDS_A_CHECKPOINT}")
    weights, config, epoch = payload["model"], payload["config"], payload["epoch"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"checkpoint {path} is malformed: its model entry is not a state_dict of tensors "
                              f"(a {type(weights).__name__})")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        found = type(config.get("model") if isinstance(config, dict) else config).__name__
        raise CheckpointError(f"checkpoint {path} is malformed: its config has no model section (found a {found}), "
                              "so it cannot say which model its weights are for")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise CheckpointError(f"checkpoint {path} is malformed: its epoch is {epoch!r}, not a count of epochs")


def load_model_weights(model: torch.nn.Module, weights: dict, path: str | Path) -> None:
    """`model.load_state_dict(weights)`, or a CheckpointError naming the keys and shapes that do not fit."""
    own = model.state_dict()
    missing = [key for key in own if key not in weights]
    unexpected = [key for key in weights if key not in own]
    resized = [f"{key} {tuple(weights[key].shape)} vs {tuple(own[key].shape)}" for key in own
               if key in weights and tuple(weights[key].shape) != tuple(own[key].shape)]
    problems = [f"{label}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("shape in checkpoint vs model", resized)) if keys]
    if problems:
        raise CheckpointError(f"checkpoint {path}'s weights do not fit the model its config describes "
                              f"({'; '.join(problems)})")
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}'s weights do not load: {first_line(err)}") from None
