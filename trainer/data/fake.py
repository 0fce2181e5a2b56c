"""torchvision's FakeData: random images of any shape and class count (smoke tests, timing)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from trainer.data.base import DataModule


class FakeDataModule(DataModule):
    def __init__(self, train_size: int = 256, val_size: int = 64, **common) -> None:
        super().__init__(**common)
        self.train_size = train_size
        self.val_size = val_size

    def build(self, train_transform: Callable | None) -> tuple[Dataset, Dataset]:
        from torchvision.datasets import FakeData
        from torchvision.transforms import v2

        to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize([0.5] * self.in_channels, [0.5] * self.in_channels)]
        train_steps = ([train_transform] if train_transform is not None else []) + to_tensor
        shape = (self.in_channels, self.image_size, self.image_size)
        train = FakeData(self.train_size, shape, self.num_classes, transform=v2.Compose(train_steps),
                         random_offset=0)
        # A different offset gives the validation split images of its own.
        val = FakeData(self.val_size, shape, self.num_classes, transform=v2.Compose(to_tensor),
                       random_offset=self.train_size)
        return train, val
