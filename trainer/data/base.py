"""The DataModule contract shared by every `configs/data/*.yaml` option."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler, Subset, TensorDataset

from trainer.data.sampler import EpochSampler

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
    Loaders are deterministic: the train order is a function of (seed, epoch) (see sampler.py).
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

    def _loader(self, dataset: Dataset, sampler: Sampler, pin_memory: bool,
                generator: torch.Generator) -> DataLoader:
        """Every loader gets its own generator: creating an iterator draws a worker seed from it, and
        drawing from the global RNG instead would shift dropout and mixup after a mid-epoch resume."""
        if isinstance(dataset, TensorDataset) and self.num_workers == 0:
            # Whole batches by one tensor index each: no per-sample Python, no collate.
            return DataLoader(dataset, batch_size=None, sampler=BatchSampler(sampler, self.batch_size, False),
                              pin_memory=pin_memory, generator=generator)
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, generator=generator,
            num_workers=self.num_workers, worker_init_fn=seed_worker, pin_memory=pin_memory,
            persistent_workers=self.num_workers > 0, drop_last=False)

    def train_loader(self, seed: int, pin_memory: bool = False) -> DataLoader:
        """Shuffled by `self.train_sampler`; call `set_train_epoch` before each epoch."""
        self.train_sampler = EpochSampler(len(self.train_set), self.batch_size, self.shuffle_train, seed)
        self._worker_seeds = torch.Generator()
        return self._loader(self.train_set, self.train_sampler, pin_memory, self._worker_seeds)

    def set_train_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Fix the epoch's batch order (and loader-worker seeds) from (seed, epoch); start at `start_batch`."""
        self.train_sampler.set_epoch(epoch, start_batch)
        self._worker_seeds.manual_seed(self.train_sampler.epoch_generator().initial_seed() + 1)

    def val_loader(self, pin_memory: bool = False) -> DataLoader:
        return self._loader(self.val_set, SequentialSampler(self.val_set), pin_memory, torch.Generator())
