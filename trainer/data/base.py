"""The DataModule contract shared by every `configs/data/*.yaml` option."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
)

if TYPE_CHECKING:
    from trainer.augment import Augment


def seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's RNGs in a loader worker from the seed torch gave that worker."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class DataModule:
    """Builds `train_set` and `val_set` in `setup()`; subclasses implement `build()`.

    `build(augment)` applies the augment option's ops to training images only (see trainer/augment.py);
    with no augmentation, in-memory sets return `TensorDataset`s, which `_loader` batches by indexing.
    Loaders are deterministic: shuffling draws from a generator that the caller seeds per epoch.
    """

    def __init__(self, batch_size: int, num_workers: int, num_classes: int, in_channels: int,
                 image_size: int) -> None:
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.classes: list[str] = [str(i) for i in range(num_classes)]
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.shuffle_train = True

    def build(self, augment: Augment | None) -> tuple[Dataset, Dataset]:
        raise NotImplementedError

    def setup(self, augment: Augment | None = None) -> None:
        self.train_set, self.val_set = self.build(augment)

    def overfit(self, num_batches: int) -> None:
        """Train and validate on the same first `num_batches` training batches, in a fixed order."""
        subset = Subset(self.train_set, range(min(len(self.train_set), num_batches * self.batch_size)))
        self.train_set = self.val_set = subset
        self.shuffle_train = False

    def _loader(self, dataset: Dataset, shuffle: bool, generator: torch.Generator | None,
                pin_memory: bool) -> DataLoader:
        if isinstance(dataset, TensorDataset) and self.num_workers == 0:
            # Whole batches by one tensor index each: no per-sample Python, no collate.
            order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
            return DataLoader(dataset, batch_size=None, sampler=BatchSampler(order, self.batch_size, False),
                              pin_memory=pin_memory)
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, generator=generator,
            num_workers=self.num_workers, worker_init_fn=seed_worker, pin_memory=pin_memory,
            persistent_workers=self.num_workers > 0, drop_last=False)

    def train_loader(self, generator: torch.Generator, pin_memory: bool = False) -> DataLoader:
        return self._loader(self.train_set, self.shuffle_train, generator, pin_memory)

    def val_loader(self, pin_memory: bool = False) -> DataLoader:
        return self._loader(self.val_set, False, None, pin_memory)
