"""Any `timm` model by name (`timm.list_models()`), built for the data's input channels and class count.

Pretrained weights come only from a local file (`model.pretrained_file`): timm loads it as its own pretrained
weights, so it adapts the first conv to the data's channels, drops a classifier made for another number of
classes and resizes a ViT's position embedding. Every remote source (URL, Hugging Face Hub) is cleared from
the model's pretrained config first, so nothing is ever downloaded.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from torch import nn

from trainer.errors import ConfigError
from trainer.models.catalog import TIMM_RATES

# The pretrained-config entries that name a weight source: all but `file` are cleared (see `_local_only`).
REMOTE_SOURCES = ("url", "hf_hub_id", "hf_hub_filename", "source")


def build(name: str, in_channels: int, num_classes: int, image_size: int = 224, kwargs: dict[str, Any] | None = None,
          pretrained_file: str | None = None, dropout: float | None = None,
          stochastic_depth: float | None = None) -> nn.Module:
    """`timm.create_model(name, in_chans=in_channels, num_classes=num_classes, **kwargs)`.

    `dropout` and `stochastic_depth` (null: the model's own default) are timm's `drop_rate` and
    `drop_path_rate`. A model with a fixed input size (a ViT, Swin...) is built for `image_size` unless
    `kwargs` sets `img_size`.
    """
    import timm

    _check_name(name)
    args = dict(kwargs or {})
    rates = {"dropout": dropout, "stochastic_depth": stochastic_depth}
    args |= {TIMM_RATES[key]: value for key, value in rates.items() if value is not None}
    if "img_size" not in args and _fixed_input_size(name):
        args["img_size"] = image_size
    if pretrained_file is not None:
        args |= {"pretrained": True, "pretrained_cfg_overlay": _local_only(pretrained_file)}
    try:
        model = timm.create_model(name, in_chans=in_channels, num_classes=num_classes, **args)
    except TypeError as err:
        refused = next((arg for arg in args if f"argument '{arg}'" in str(err)), None)
        if refused is None:
            raise
        key = next((f"model.{key}" for key, arg in TIMM_RATES.items() if arg == refused), f"model.kwargs.{refused}")
        raise ConfigError(f"timm model {name} takes no {refused} argument (set by {key})") from None
    except RuntimeError as err:  # timm's own check of the weights against the model
        if pretrained_file is None:
            raise
        raise ConfigError(f"model.pretrained_file={pretrained_file} does not fit timm model {name}: "
                          f"{str(err).splitlines()[0]}") from None
    if pretrained_file is not None and not loaded_tensors(model, pretrained_file):
        raise ConfigError(f"model.pretrained_file={pretrained_file} holds no tensor of timm model {name} (none has "
                          "the name and shape of one of its weights): is it weights for another architecture?")
    return model


def loaded_tensors(model: nn.Module, pretrained_file: str) -> list[str]:
    """The names of `model`'s tensors that equal the file's tensor of the same name: the weights timm loaded.

    timm itself loads non-strictly when the classifier is dropped, so a file of another architecture would
    otherwise leave the whole model at its random initialisation without a word.
    """
    import torch

    weights = file_state_dict(pretrained_file)
    return [key for key, tensor in model.state_dict().items()
            if key in weights and weights[key].shape == tensor.shape and torch.equal(weights[key], tensor)]


def file_state_dict(path: str) -> dict[str, Any]:
    """The state dict in a weights file as timm reads it: a .safetensors file, or a torch file (weights only,
    memory-mapped when it can be) holding the dict itself or a wrapper (`state_dict_ema`, `model_ema`,
    `state_dict`, `model`), without a `module.` prefix."""
    import torch
    from timm.models import clean_state_dict

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
        saved = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(saved, dict):
        wrapped = next((key for key in ("state_dict_ema", "model_ema", "state_dict", "model")
                        if isinstance(saved.get(key), dict)), None)
        saved = saved[wrapped] if wrapped else saved
    return clean_state_dict(saved) if isinstance(saved, dict) else {}


def _check_name(name: str) -> None:
    """An unknown name is a ConfigError with the closest timm names; `name.tag` (a pretrained tag) is accepted."""
    import timm

    if name in timm.list_models() or name in timm.list_models(pretrained=True):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else "timm.list_models() lists them"
    raise ConfigError(f"model.name={name!r} is not a timm model; {hint}")


def _fixed_input_size(name: str) -> bool:
    """Whether timm builds `name` for one input size (its pretrained config says so: ViTs, Swin...)."""
    from timm.models import get_pretrained_cfg

    pretrained_cfg = get_pretrained_cfg(name)
    return bool(pretrained_cfg is not None and pretrained_cfg.fixed_input_size)


def _local_only(pretrained_file: str) -> dict[str, Any]:
    """The pretrained-config overlay that loads `pretrained_file` and nothing else (a ConfigError if it is not
    a file): its remote sources are cleared, so timm has nowhere to download from."""
    path = Path(pretrained_file).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.pretrained_file={pretrained_file} is not a file (timm weights: a .pth/.pt state "
                          "dict or a .safetensors file)")
    return {"file": str(path), "custom_load": False, **dict.fromkeys(REMOTE_SOURCES)}
