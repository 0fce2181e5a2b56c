"""`model.init_from=PATH`: start a training run's model from the weights in a local file.

The file may be a checkpoint of this project (its `"model"` entry), a plain state_dict saved with `torch.save`
(`.pt`/`.pth`; also wrapped as `{"state_dict": ...}` or `{"model": ...}`, with DDP's `module.` or torch.compile's
`_orig_mod.` prefix), or a `.safetensors` file. Every tensor whose key and shape fit the model is loaded; a first
conv made for another number of input channels is adapted as timm's `adapt_input_conv` does (MNIST's 1-channel
stem on 3-channel CIFAR-10); a tensor of another shape (a head for another num_classes) keeps the model's fresh
initialisation. A checkpoint of this project names its classes: when they are not the data's (MNIST's digits for
CIFAR-10's ten classes), its classifier is re-initialised too, as its rows would score the wrong classes. The
optimizer, the lr schedule and the epoch count start afresh. Nothing is ever downloaded.
"""

from __future__ import annotations

import math
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.errors import CheckpointError, ConfigError, first_line
from trainer.training.checkpoint_checks import unpickling_reason

KEY = "model.init_from"
WRAPPERS = ("model", "state_dict")  # the entries that hold the weights: a trainer checkpoint's, a common wrapper's
PREFIXES = ("module.", "_orig_mod.")  # what DDP and torch.compile put before every key
SHOWN_NAMES = 3  # names listed per kind in the console block; the rest are counted


@dataclass
class InitReport:
    """What `init_from` did with each tensor of the file and of the model."""

    path: str
    source: str  # what the file was: "a trainer checkpoint, epoch 3", "a state_dict", "a safetensors file"
    loaded: list[str] = field(default_factory=list)  # copied unchanged
    adapted: list[str] = field(default_factory=list)  # a first conv, its input channels adapted ("name (1 -> 3)")
    reinitialised: list[str] = field(default_factory=list)  # another shape in the file: fresh initialisation kept
    other_classes: list[str] = field(default_factory=list)  # the classifier of a checkpoint of other classes: fresh
    missing: list[str] = field(default_factory=list)  # the model's tensors the file lacks: fresh initialisation kept
    unexpected: list[str] = field(default_factory=list)  # the file's tensors the model lacks: ignored

    def lines(self) -> str:
        """The console block: the counts of each kind of key, then the names (truncated) of every kind but the
        loaded ones."""
        kinds = [("adapted", self.adapted, "input channels"), ("re-initialised", self.reinitialised, "shape differs"),
                 ("new head", self.other_classes, "the file's classes are not the data's"),
                 ("missing", self.missing, "not in the file"), ("unexpected", self.unexpected, "ignored")]
        counts = ", ".join(f"{len(names)} {label}" for label, names, _ in [("loaded", self.loaded, ""), *kinds])
        text = [f"{KEY}={self.path} ({self.source}): {counts}"]
        text += [f"  {label} ({why}): {names_text(names)}" for label, names, why in kinds if names]
        return "\n".join(text)


def names_text(names: list[str]) -> str:
    """The first few names, and how many more."""
    more = f" (+{len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def read_payload(path: Path, key: str = KEY) -> Any:
    """The file's contents: `safetensors.torch.load_file` for .safetensors, else `torch.load(weights_only=True)`;
    a file that does not read is one CheckpointError line naming the config `key` that gave the path."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(f"{key}={path}: refusing to load it, it needs arbitrary unpickling, which could "
                                  "run code (save a state_dict of tensors, or a .safetensors file)") from None
        reason = unpickling_reason(err)
    except Exception as err:  # a truncated zip, a safetensors header that does not parse
        reason = first_line(err).split(" (Could this error message be improved?")[0]
    raise CheckpointError(f"{key}={path} does not read as weights (a torch.save file or a .safetensors file): "
                          f"{reason}")


def state_dict_of(payload: Any, path: Path, key: str = KEY) -> tuple[dict[str, torch.Tensor], str]:
    """The weights a payload holds, and what it was: the tensors of a state_dict, or of its `model` or
    `state_dict` entry (a trainer checkpoint's `model`), without a `module.`/`_orig_mod.` prefix."""
    if path.suffix == ".safetensors":
        return strip_prefixes(payload), "a safetensors file"
    if not isinstance(payload, dict):
        raise CheckpointError(f"{key}={path} holds a {type(payload).__name__}, not a state_dict")
    source = "a state_dict"
    for key in WRAPPERS:
        if isinstance(payload.get(key), dict):
            is_checkpoint = key == "model" and "config" in payload and "epoch" in payload
            source = f"a trainer checkpoint, epoch {payload['epoch']}" if is_checkpoint else \
                f"a state_dict in its {key!r} entry"
            payload = payload[key]
            break
    weights = {str(k): v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if not weights:
        raise CheckpointError(f"{key}={path} holds no tensors (expected a state_dict, or one in a 'model' or "
                              "'state_dict' entry)")
    return strip_prefixes(weights), source


def strip_prefixes(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`weights` without a prefix that every key carries (`module.`, `_orig_mod.`, nested in any order)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if weights and all(key.startswith(prefix) for key in weights):
                weights = {key[len(prefix):]: value for key, value in weights.items()}
                stripped = True
    return weights


def is_input_conv(saved: torch.Size, own: torch.Size) -> bool:
    """Whether a saved first-conv weight was made for another number of input channels: 4-D, its shape
    differing from the model's in dim 1 alone (a later conv of another width is re-initialised instead)."""
    return len(saved) == len(own) == 4 and saved[1] != own[1] and saved[:1] + saved[2:] == own[:1] + own[2:]


def adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A conv weight (out, c, kh, kw) for `in_channels` inputs instead of c, as timm's `adapt_input_conv`:

    1 channel: the sum over the c channels (a grey image gives the output the old weights gave it repeated in
    every channel); more: the c channels repeated up to `in_channels` and scaled by c / in_channels (an image
    whose channels are all equal gives the output the old weights gave one of them repeated c times).
    """
    dtype, weight = weight.dtype, weight.float()
    old = weight.shape[1]
    if in_channels == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        repeats = math.ceil(in_channels / old)
        adapted = weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (old / in_channels)
    return adapted.to(dtype)


def classifier_keys(model: nn.Module, num_classes: int) -> set[str]:
    """The state_dict keys of the model's classifier: its last nn.Linear with `num_classes` outputs."""
    heads = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and module.out_features == num_classes]
    return {f"{heads[-1]}.{name}" for name, _ in model.get_submodule(heads[-1]).named_parameters()} if heads else set()


def saved_classes(payload: Any) -> list[str] | None:
    """The class names a checkpoint of this project was trained on (its `inference` entry); None for other files."""
    info = payload.get("inference") if isinstance(payload, dict) else None
    classes = info.get("classes") if isinstance(info, dict) else None
    return [str(c) for c in classes] if isinstance(classes, list) else None


def init_from(model: nn.Module, path: str | Path, classes: list[str] | None = None) -> InitReport:
    """Load the file's weights into `model` where they fit (see the module docstring) and say what was done;
    `classes` are the data's class names (a checkpoint trained on others gets no say in the classifier).

    A missing file is a ConfigError; a file that does not read, or none of whose tensors fit, a CheckpointError.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        kind = "a directory, not a weights file" if path.is_dir() else "not found"
        raise ConfigError(f"{KEY}={path}: {kind} (a local checkpoint, .pt/.pth state_dict or .safetensors "
                          "file; nothing is downloaded)")
    payload = read_payload(path)
    weights, source = state_dict_of(payload, path)
    report = InitReport(str(path), source)
    own = model.state_dict()
    theirs_classes = saved_classes(payload)
    new_head = classifier_keys(model, len(classes)) if classes and theirs_classes not in (None, classes) else set()
    first_conv = next((key for key, tensor in own.items() if tensor.ndim == 4), None)  # the only one adapted
    merged: dict[str, torch.Tensor] = {}
    for key, mine in own.items():
        theirs = weights.get(key)
        if theirs is None:
            report.missing.append(key)
        elif key in new_head:
            report.other_classes.append(key)
        elif theirs.shape == mine.shape:
            merged[key] = theirs
            report.loaded.append(key)
        elif key == first_conv and is_input_conv(theirs.shape, mine.shape):
            merged[key] = adapt_input_conv(theirs, mine.shape[1])
            report.adapted.append(f"{key} ({theirs.shape[1]} -> {mine.shape[1]})")
        else:
            report.reinitialised.append(key)
    report.unexpected = [key for key in weights if key not in own]
    if not merged:
        raise CheckpointError(f"{KEY}={path}: none of its {len(weights)} tensors fits the model (its keys: "
                              f"{names_text(list(weights))}; the model's: {names_text(list(own))})")
    model.load_state_dict(merged, strict=False)  # copies into the model's tensors, in their dtype
    return report


def start_model(model: nn.Module, init_path: str | None, resumed: bool, classes: list[str] | None = None) -> list[str]:
    """Apply `model.init_from` to a training run's fresh model, unless the run resumes (its checkpoint holds the
    weights); the console lines that say what happened (none without init_from)."""
    if not init_path:
        return []
    if resumed:
        return [f"{KEY}={init_path} is ignored: the run resumes, and its checkpoint holds the weights"]
    return [init_from(model, init_path, classes).lines()]
