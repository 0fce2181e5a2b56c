"""Any `timm` model by name (`timm.list_models()`), built for the data's input channels and class count.

Pretrained weights come only from a local file (`model.pretrained_file`), read as `model.init_from` reads one
(trainer/training/init_from.py: weights only; a state dict, or one in a `model`/`state_dict` entry; DDP's and
torch.compile's prefixes stripped) and handed to timm as its pretrained state dict: timm adapts the first conv
to the data's channels, keeps the file's classifier when it has a row per class of the data and drops one made
for another number of classes, and resizes a ViT's position embedding. Every remote source (URL, Hugging Face
Hub) is cleared from the model's pretrained config first, so nothing is ever downloaded.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.errors import ConfigError, described
from trainer.models.catalog import TIMM_RATES

KEY = "model.pretrained_file"
# The pretrained-config entries that name a weight source other than the state dict: all are cleared.
REMOTE_SOURCES = ("url", "file", "hf_hub_id", "hf_hub_filename", "source")


def build(name: str, in_channels: int, num_classes: int, image_size: int, kwargs: dict[str, Any] | None,
          pretrained_file: str | None, dropout: float | None, stochastic_depth: float | None) -> nn.Module:
    """`timm.create_model(name, in_chans=in_channels, num_classes=num_classes, **kwargs)`.

    Every argument comes from the config (TimmConfig in trainer/schema/model.py holds the defaults).
    `dropout` and `stochastic_depth` (null: the model's own default) are timm's `drop_rate` and
    `drop_path_rate`. A model with a fixed input size (a ViT, Swin...) is built for `image_size` unless
    `kwargs` sets `img_size`. A setting timm refuses is one ConfigError line naming the keys.
    """
    _check_name(name)
    args = dict(kwargs or {})
    rates = {"dropout": dropout, "stochastic_depth": stochastic_depth}
    args |= {TIMM_RATES[key]: value for key, value in rates.items() if value is not None}
    settings = [f"model.name={name}", *([f"model.kwargs={kwargs}"] if kwargs else []),
                *(f"model.{key}={value}" for key, value in rates.items() if value is not None)]
    if "img_size" not in args and _fixed_input_size(name):
        args["img_size"] = image_size
        settings.append(f"data.image_size={image_size}")
    weights = read_weights(pretrained_file) if pretrained_file is not None else None
    if weights is not None:
        args |= {"pretrained": True, "pretrained_cfg_overlay": _local_only(name, weights)}
    model = _create(name, in_channels, num_classes, args, ", ".join(settings), pretrained_file)
    _check_input_size(model, name, image_size)
    if weights is not None:
        getattr(model, "pretrained_cfg", {}).pop("state_dict", None)  # timm's copy of the file: not kept
        if not loaded_tensors(model, weights):
            raise ConfigError(f"{KEY}={pretrained_file} holds no tensor of timm model {name} (none has the name "
                              "and shape of one of its weights): is it weights for another architecture?")
    return model


def _create(name: str, in_channels: int, num_classes: int, args: dict[str, Any], settings: str,
            pretrained_file: str | None) -> nn.Module:
    """`timm.create_model`, each error of the user's settings one ConfigError line."""
    import timm

    try:
        return timm.create_model(name, in_chans=in_channels, num_classes=num_classes, **args)
    except TypeError as err:
        refused = next((arg for arg in args if f"argument '{arg}'" in str(err)), None)
        if refused is None:
            raise ConfigError(f"timm cannot build {settings}: {described(err)}") from None
        key = next((f"model.{key}" for key, arg in TIMM_RATES.items() if arg == refused), f"model.kwargs.{refused}")
        raise ConfigError(f"timm model {name} takes no {refused} argument (set by {key})") from None
    except RuntimeError as err:  # with a file: timm's own check of the weights against the model
        if pretrained_file is None:
            raise ConfigError(f"timm cannot build {settings}: {described(err)}") from None
        raise ConfigError(f"{KEY}={pretrained_file} does not fit timm model {name}: "
                          f"{str(err).splitlines()[0]}") from None
    except (ValueError, AssertionError) as err:  # a model's own checks of its arguments
        raise ConfigError(f"timm cannot build {settings}: {described(err)}") from None


def _check_input_size(model: nn.Module, name: str, image_size: int) -> None:
    """A model that cuts its input into patches (a ViT, Swin...) must get patches no larger than the image and,
    when it insists on one input size, `image_size` pixels: else its first forward fails."""
    embed = getattr(model, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    if patch is None:
        return
    patch = max(patch) if isinstance(patch, tuple | list) else patch
    if patch > image_size:
        raise ConfigError(f"timm model {name} cuts its input into {patch}-px patches, larger than data.image_size="
                          f"{image_size}: set a smaller model.kwargs.patch_size or a larger data.image_size")
    built_for = getattr(embed, "img_size", None)
    if getattr(embed, "strict_img_size", False) and built_for is not None and \
            tuple(built_for) != (image_size, image_size):
        raise ConfigError(f"timm model {name} is built for {built_for[0]}x{built_for[1]} px input (model.kwargs."
                          f"img_size) but gets data.image_size={image_size}: leave img_size out, or add "
                          "dynamic_img_size: true to model.kwargs")


def read_weights(pretrained_file: str) -> dict[str, torch.Tensor]:
    """The file's tensors, read by `model.init_from`'s reader; one ConfigError/CheckpointError line if it is not
    a file, does not read as weights, or is a checkpoint of this project (whose classes only init_from checks)."""
    from trainer.training.init_from import read_payload, saved_classes, state_dict_of

    path = Path(pretrained_file).expanduser()
    if not path.is_file():
        raise ConfigError(f"{KEY}={pretrained_file} is not a file (timm weights: a .pth/.pt state dict or a "
                          ".safetensors file)")
    payload = read_payload(path, KEY)
    if saved_classes(payload) is not None:
        raise ConfigError(f"{KEY}={pretrained_file} is a checkpoint of this project: start from it with "
                          f"model.init_from={pretrained_file} (model.pretrained_file takes timm weights)")
    return state_dict_of(payload, path, KEY)[0]


def loaded_tensors(model: nn.Module, weights: dict[str, torch.Tensor]) -> list[str]:
    """The names of `model`'s tensors that equal the file's tensor of the same name: the weights timm loaded.

    timm itself loads non-strictly when the classifier is dropped, so a file of another architecture would
    otherwise leave the whole model at its random initialisation without a word.
    """
    return [key for key, tensor in model.state_dict().items()
            if key in weights and weights[key].shape == tensor.shape and torch.equal(weights[key], tensor)]


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


def _local_only(name: str, weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The pretrained-config overlay that loads `weights` and nothing else: its remote sources are cleared, so
    timm has nowhere to download from.

    timm keeps the classifier only when the model's class count equals the config's `num_classes` (1000 for
    ImageNet weights), so that is set to the rows of the file's classifier (0 for a file without one), and
    `input_size` to the channels of the file's first conv, which timm adapts from.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    heads = [weights[f"{head}.weight"] for head in _names(cfg.classifier if cfg else None)
             if f"{head}.weight" in weights]
    overlay: dict[str, Any] = {"state_dict": weights, "num_classes": heads[0].shape[0] if heads else 0,
                               "label_offset": 0, **dict.fromkeys(REMOTE_SOURCES)}
    convs = [weights[f"{conv}.weight"] for conv in _names(cfg.first_conv if cfg else None)
             if f"{conv}.weight" in weights]
    if cfg and convs and convs[0].ndim == 4:
        overlay["input_size"] = (convs[0].shape[1], *cfg.input_size[1:])
    return overlay


def _names(entry: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """A pretrained config's `classifier` or `first_conv`: one module name, several or none."""
    return (entry,) if isinstance(entry, str) else tuple(entry or ())
