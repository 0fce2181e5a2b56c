"""In-memory data for in-process tests: seeded toy batches, and the digits module built without a config."""

from __future__ import annotations

import torch

from trainer.data.digits import DigitsDataModule


def toy_batches(seed: int = 0, batches: int = 8, classes: int = 3, features: int = 6,
                batch_size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Linearly separable blobs of `features` values: a working loop must fit them."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=gen) * 4
    out = []
    for _ in range(batches):
        y = torch.randint(0, classes, (batch_size,), generator=gen)
        out.append((centers[y] + torch.randn(batch_size, features, generator=gen), y))
    return out


def image_batches(batches: int = 6, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two classes of 3x8x8 images told apart by their mean brightness: any working convnet fits them."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        y = torch.randint(0, 2, (16,), generator=gen)
        x = torch.randn(16, 3, 8, 8, generator=gen) * 0.5 + (y.float() * 2 - 1).view(-1, 1, 1, 1)
        out.append((x, y))
    return out


def digits_module(**settings) -> DigitsDataModule:
    """The digits module as `data=digits` builds it (before `setup()`), without composing a config (which costs a
    third of a second); `settings` override its keys."""
    return DigitsDataModule(**{"batch_size": 64, "num_workers": 0, "num_classes": 10, "in_channels": 1,
                               "image_size": 8, **settings})
