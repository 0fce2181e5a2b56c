"""Data sets small enough to decode once into uint8 tensors (MNIST-like, CIFAR): the shared build step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from trainer.data.base import DataModule
from trainer.data.in_memory import TensorSplits
from trainer.data.splits import held_out
from trainer.data.transforms import image_tensor_sets, match_channels, normalized_tensors, resize_images
from trainer.errors import DataError

if TYPE_CHECKING:
    from trainer.data.augment import Augment


@dataclass
class DecodedSplits:
    """The official train and test splits as N x C x H x W uint8 images and int64 labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]


class InMemoryDataModule(DataModule):
    """Subclasses name their option, mean/std and `decode()` (the official train and test splits).

    The val set is a seeded, class-stratified `val_fraction` of the official train split (held out of training;
    see trainer/data/splits.py), and `test_set` is the official test split, for scoring once after training.
    With `val_fraction` 0 the official test split is the val set (and `test_set` that same set: `val_is_test`).
    Images are resized to `image_size` and grey ones repeated to `in_channels` once, at load time; with
    `in_memory` they stay uint8 and go to the training device as they are (see trainer/data/in_memory.py).
    """

    option = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __init__(self, root: str, download: bool = False, val_fraction: float = 0.1, split_seed: int = 0,
                 **common) -> None:
        super().__init__(**common)
        self.root = Path(root).expanduser()
        self.download = download
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    def decode(self) -> DecodedSplits:
        raise NotImplementedError

    def normalization(self) -> tuple[list[float], list[float]]:
        """The set's constants, repeated per channel when grey images are repeated to `in_channels`."""
        channels = self.in_channels
        return list(self.mean) * (channels // len(self.mean)), list(self.std) * (channels // len(self.std))

    def build(self, augment: Augment | None) -> tuple[Dataset, Dataset, Dataset]:
        splits = self.tensor_splits(augment)
        train, val = image_tensor_sets(splits.train_images, splits.train_labels, splits.val_images,
                                       splits.val_labels, *self.normalization(), augment)
        if splits.test_images is splits.val_images:
            return train, val, val
        return train, val, normalized_tensors(splits.test_images, splits.test_labels, *self.normalization())

    def tensor_splits(self, augment: Augment | None = None) -> TensorSplits:
        """The decoded uint8 splits at image_size and in_channels (normalised later with `normalization()`):
        train and val from the official train split, test the official test split (val too, with
        `val_fraction` 0: the same tensors)."""
        splits = self.decode()
        if len(splits.classes) != self.num_classes:
            raise DataError(f"data={self.option} has {len(splits.classes)} classes but data.num_classes="
                            f"{self.num_classes}")
        self.classes = splits.classes

        def prepare(images: torch.Tensor) -> torch.Tensor:
            return match_channels(resize_images(images, self.image_size), self.in_channels)

        images, labels = prepare(splits.train_images), splits.train_labels
        test_images, test_labels = prepare(splits.test_images), splits.test_labels
        if self.val_fraction == 0 and self.folds is None:
            return TensorSplits(images, labels, test_images, test_labels, test_images, test_labels)
        train_idx, val_idx = held_out(labels, self.val_fraction, self.split_seed, self.folds, self.fold,
                                      f"data={self.option}'s train split")
        return TensorSplits(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx], test_images,
                            test_labels)
