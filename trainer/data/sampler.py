"""The training sampler: an epoch's order is a function of (seed, epoch) alone, and can start mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Indices for one epoch, shuffled by a generator seeded from (seed, epoch), from batch `start_batch` on.

    A run resumed mid-epoch calls `set_epoch(epoch, start_batch)` and sees exactly the batches the
    interrupted run had not yet trained on, without drawing from any other random number generator.
    """

    def __init__(self, length: int, batch_size: int, shuffle: bool, seed: int) -> None:
        self.length = length
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def epoch_generator(self) -> torch.Generator:
        """A generator seeded for this epoch (also used to seed loader workers)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.length, generator=self.epoch_generator())
        else:
            order = torch.arange(self.length)
        return iter(order[self.start_batch * self.batch_size:].tolist())

    def __len__(self) -> int:
        return max(self.length - self.start_batch * self.batch_size, 0)
