"""Data sets small enough to decode once into uint8 tensors (MNIST-like, CIFAR): the shared build step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from trainer.data.base import DataModule
from trainer.data.in_memory import TensorSplits
from trainer.data.transforms import image_tensor_sets, match_channels, resize_images
from trainer.errors import DataError

if TYPE_CHECKING:
    from trainer.data.augment import Augment


@dataclass
class DecodedSplits:
    """The official train and test splits as N x C x H x W uint8 images and int64 labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    classes: list[str]


class InMemoryDataModule(DataModule):
    """Subclasses name their option, mean/std and `decode()`; the official test split is the val set.

    Images are resized to `image_size` and grey ones repeated to `in_channels` once, at load time; with
    `in_memory` they stay uint8 and go to the training device as they are (see trainer/data/in_memory.py).
    """

    option = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __init__(self, root: str, download: bool = False, **common) -> None:
        super().__init__(**common)
        self.root = Path(root).expanduser()
        self.download = download

    def decode(self) -> DecodedSplits:
        raise NotImplementedError

    def normalization(self) -> tuple[list[float], list[float]]:
        """The set's constants, repeated per channel when grey images are repeated to `in_channels`."""
        channels = self.in_channels
        return list(self.mean) * (channels // len(self.mean)), list(self.std) * (channels // len(self.std))

    def build(self, augment: Augment | None) -> tuple[Dataset, Dataset]:
        splits = self.tensor_splits(augment)
        return image_tensor_sets(splits.train_images, splits.train_labels, splits.val_images, splits.val_labels,
                                 *self.normalization(), augment)

    def tensor_splits(self, augment: Augment | None = None) -> TensorSplits:
        """The decoded uint8 splits at image_size and in_channels (normalised later with `normalization()`)."""
        splits = self.decode()
        if len(splits.classes) != self.num_classes:
            raise DataError(f"data={self.option} has {len(splits.classes)} classes but data.num_classes="
                            f"{self.num_classes}")
        self.classes = splits.classes

        def prepare(images: torch.Tensor) -> torch.Tensor:
            return match_channels(resize_images(images, self.image_size), self.in_channels)

        return TensorSplits(prepare(splits.train_images), splits.train_labels, prepare(splits.val_images),
                            splits.val_labels)
