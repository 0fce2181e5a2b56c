"""Any `torchvision.models` builder by name, adapted to the data's input channels and class count."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer.errors import ConfigError, described


def build(name: str, in_channels: int, num_classes: int, image_size: int, weights: str | None,
          kwargs: dict[str, Any] | None) -> nn.Module:
    """`torchvision.models.get_model(name, **kwargs)`; pretrained `weights` must already be in torch's hub cache.

    Every argument comes from the config (TorchvisionConfig in trainer/schema/model.py holds the defaults).
    Vision transformers are built for the data's `image_size` (their position embeddings depend on it) unless
    `kwargs` sets `image_size`. `kwargs` are the builder's own arguments (`dropout`, `stochastic_depth_prob`...);
    one the builder refuses is one ConfigError line.
    """
    import torchvision.models as tvm

    if name not in tvm.list_models():
        classifiers = sorted(tvm.list_models(module=tvm))  # the classification models, not detection or video
        close = difflib.get_close_matches(name, classifiers, n=3, cutoff=0.4)
        hint = f"did you mean {' or '.join(close)}?" if close else "e.g. " + ", ".join(classifiers[:8]) + ", ..."
        raise ConfigError(f"model.name={name!r} is not a torchvision model; {hint}")
    extra = ({"image_size": image_size} if name.startswith("vit_") else {}) | (kwargs or {})
    try:
        if weights is None:
            model = tvm.get_model(name, weights=None, num_classes=num_classes, **extra)
        else:
            model = tvm.get_model(name, weights=_cached_weights(name, weights), **extra)
    except TypeError as err:
        refused = next((arg for arg in kwargs or {} if f"argument '{arg}'" in str(err)), None)
        if refused is None:
            raise ConfigError(f"torchvision cannot build {_settings(name, extra, kwargs)}: {described(err)}"
                              ) from None
        raise ConfigError(f"torchvision model {name} takes no {refused} argument (set by model.kwargs.{refused})"
                          ) from None
    except (ValueError, AssertionError, RuntimeError) as err:  # the builder's own checks of its arguments
        raise ConfigError(f"torchvision cannot build {_settings(name, extra, kwargs)}: {described(err)}") from None
    if weights is not None and num_classes != _last_linear(model).out_features:
        _replace_last_linear(model, num_classes)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)
    return model


def _settings(name: str, extra: dict[str, Any], kwargs: dict[str, Any] | None) -> str:
    """The keys that chose the builder's arguments, as an error line names them."""
    sized = "image_size" in extra and "image_size" not in (kwargs or {})
    return ", ".join([f"model.name={name}", *([f"model.kwargs={kwargs}"] if kwargs else []),
                      *([f"data.image_size={extra['image_size']}"] if sized else [])])


def _cached_weights(name: str, weights: str):
    """Resolve the weights enum and insist that its file is in the local cache: no download, no hang."""
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(name)
        resolved = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except (KeyError, ValueError):
        raise ConfigError(f"model.weights={weights!r} is not a weights option of {name}") from None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    filename = Path(resolved.url).name
    if not (cache / filename).is_file():
        raise ConfigError(f"pretrained weights {name}/{weights} are not cached and this run may not download: "
                          f"put {filename} in {cache} (or set model.weights=null)")
    return resolved


def _last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def _replace_last_linear(model: nn.Module, num_classes: int) -> None:
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    old = model.get_submodule(name)
    _set_submodule(model, name, nn.Linear(old.in_features, num_classes))


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first conv for one with `in_channels` inputs (pretrained kernels are averaged over RGB)."""
    name, old = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                    old.groups if old.groups == 1 else in_channels, bias=old.bias is not None)
    with torch.no_grad():
        new.weight.copy_(old.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    _set_submodule(model, name, new)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
