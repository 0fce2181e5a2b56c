"""scikit-learn's bundled 8x8 digits: 1,797 real handwritten digits, no download needed.

Pixels stay float, normalised with the train split's mean/std, in TensorDatasets batched by indexing. With
augmentation the training pixels are quantised to uint8 (an error of at most 1/510) so that every augment op,
AutoAugment included, can run on them per sample. With `in_memory` the same pixels (float, or uint8 when
augmenting) go to the training device and are normalised there per batch.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from trainer.data.base import DataModule
from trainer.data.in_memory import TensorSplits
from trainer.data.splits import held_out
from trainer.data.transforms import TransformedDataset, train_transform
from trainer.errors import DataError

if TYPE_CHECKING:
    from trainer.data.augment import Augment


@functools.cache
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The (1797, 64) pixel array (values 0..16) and the labels of scikit-learn's digits file (read once).

    The CSV is read straight from the installed package: importing scikit-learn itself costs seconds.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data=digits needs scikit-learn, which ships the digits file: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.data, digits.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int64)


class DigitsDataModule(DataModule):
    def __init__(self, val_fraction: float = 0.2, split_seed: int = 0, **common) -> None:
        super().__init__(**common)
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self._train_stats: tuple[float, float] | None = None

    def split(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images in [0, 1] at image_size and in_channels, labels, and the seeded, class-stratified train / val
        indices (each sorted; see trainer/data/splits.py).

        Also keeps the train split's pixel mean and std, which `normalization()` returns.
        """
        pixels, targets = load_digits_arrays()
        images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0  # N x 1 x 8 x 8
        labels = torch.tensor(targets, dtype=torch.long)
        if self.image_size != images.shape[-1]:
            images = torch.nn.functional.interpolate(images, size=self.image_size, mode="bilinear",
                                                     align_corners=False)
        if self.in_channels != 1:
            images = images.expand(-1, self.in_channels, -1, -1).contiguous()

        train_idx, val_idx = held_out(labels, self.val_fraction, self.split_seed, self.folds, self.fold,
                                      "data=digits")
        self._train_stats = images[train_idx].mean().item(), images[train_idx].std().item()
        return images, labels, train_idx, val_idx

    def normalization(self) -> tuple[list[float], list[float]]:
        """The train split's pixel mean and std (one value for all pixels, repeated per channel)."""
        if self._train_stats is None:
            self.split()
        mean, std = self._train_stats
        return [mean] * self.in_channels, [std] * self.in_channels

    def build(self, augment: Augment | None) -> tuple[Dataset, Dataset, None]:
        """Train and val sets; digits has no test split."""
        images, labels, train_idx, val_idx = self.split()
        (mean, *_), (std, *_) = self.normalization()
        normalised = (images - mean) / std
        val = TensorDataset(normalised[val_idx], labels[val_idx])
        if augment is None:
            return TensorDataset(normalised[train_idx], labels[train_idx]), val, None

        transform = train_transform(augment, *self.normalization())
        train = TransformedDataset(TensorDataset(quantise(images[train_idx]), labels[train_idx]), transform)
        return train, val, None

    def tensor_splits(self, augment: Augment | None = None) -> TensorSplits:
        """For `in_memory`: float pixels in [0, 1], the training ones quantised to uint8 as `build` does when
        augmenting (normalised per batch on the device, with `normalization()`)."""
        images, labels, train_idx, val_idx = self.split()
        train = images[train_idx] if augment is None else quantise(images[train_idx])
        return TensorSplits(train, labels[train_idx], images[val_idx], labels[val_idx])


def quantise(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float pixels as uint8 (an error of at most 1/510), the dtype every augment op takes."""
    return images.mul(255).round_().clamp_(0, 255).to(torch.uint8)
