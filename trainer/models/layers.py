"""Building blocks shared by every model: activations by name, normalisation by name, conv-norm-act."""

from __future__ import annotations

from torch import nn

from trainer.models import catalog

# Both tables come from the torch-free catalog, which the config schema validates against.
ACTIVATIONS: dict[str, type[nn.Module]] = {name: getattr(nn, cls) for name, cls in catalog.ACTIVATIONS.items()}
NORMS = catalog.NORMS


def make_activation(name: str) -> nn.Module:
    """An activation module by name (relu, leaky_relu, elu, gelu, silu/swish, sigmoid, tanh, none)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATIONS)}") from None


def make_norm2d(name: str, channels: int) -> nn.Module:
    """A 2-D normalisation layer by name: batch, group (32 groups or fewer), layer (over C, H, W), none."""
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "group":
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if name == "layer":
        return nn.GroupNorm(1, channels)  # LayerNorm over (C, H, W), independent of the spatial size
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}; choose from {', '.join(NORMS)}")


class ConvNormAct(nn.Sequential):
    """Conv2d -> norm -> activation [-> spatial dropout] (the guide's ConvLayer).

    The conv has a bias only when there is no norm to absorb it. `spatial_dropout` > 0 appends
    Dropout2d, which drops whole feature maps rather than single activations.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1, norm: str = "batch", act: str = "relu",
                 spatial_dropout: float = 0.0) -> None:
        if padding is None:
            padding = kernel_size // 2
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups,
                      bias=norm == "none"),
            make_norm2d(norm, out_channels),
            make_activation(act),
        ]
        if spatial_dropout > 0:
            layers.append(nn.Dropout2d(spatial_dropout))
        super().__init__(*layers)
