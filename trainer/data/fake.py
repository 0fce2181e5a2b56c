"""torchvision's FakeData: random images of any shape and class count (smoke tests, timing)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset

from trainer.data.base import DataModule
from trainer.data.in_memory import TensorSplits
from trainer.data.transforms import eval_transform, train_transform

if TYPE_CHECKING:
    from trainer.data.augment import Augment

MEAN = STD = 0.5  # FakeData's pixels are uniform in [0, 1]


class FakeDataModule(DataModule):
    """Train, val and (with `test_size` > 0) test splits of random images, each with images of its own."""

    def __init__(self, train_size: int = 256, val_size: int = 64, test_size: int = 0, **common) -> None:
        super().__init__(**common)
        self.train_size = train_size
        self.val_size = val_size
        self.test_size = test_size

    def normalization(self) -> tuple[list[float], list[float]]:
        return [MEAN] * self.in_channels, [STD] * self.in_channels

    def build(self, augment: Augment | None) -> tuple[Dataset, Dataset, Dataset | None]:
        from torchvision.datasets import FakeData

        mean, std = self.normalization()
        shape = (self.in_channels, self.image_size, self.image_size)
        train = FakeData(self.train_size, shape, self.num_classes, transform=train_transform(augment, mean, std),
                         random_offset=0)
        # Different offsets give the val and test splits images of their own.
        val = FakeData(self.val_size, shape, self.num_classes, transform=eval_transform(mean, std),
                       random_offset=self.train_size)
        test = FakeData(self.test_size, shape, self.num_classes, transform=eval_transform(mean, std),
                        random_offset=self.train_size + self.val_size) if self.test_size else None
        return train, val, test

    def tensor_splits(self, augment: Augment | None = None) -> TensorSplits:
        """For `in_memory`: FakeData's images decoded once into uint8 tensors (the same pixels `build` serves)."""
        from torchvision.datasets import FakeData
        from torchvision.transforms.v2.functional import pil_to_tensor

        shape = (self.in_channels, self.image_size, self.image_size)

        def decode(size: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
            samples = FakeData(size, shape, self.num_classes, random_offset=offset)
            pairs = [samples[i] for i in range(size)]
            return (torch.stack([pil_to_tensor(image) for image, _ in pairs]),
                    torch.tensor([int(label) for _, label in pairs], dtype=torch.int64))

        test = decode(self.test_size, self.train_size + self.val_size) if self.test_size else (None, None)
        return TensorSplits(*decode(self.train_size, 0), *decode(self.val_size, self.train_size), *test)
