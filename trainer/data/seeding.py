"""Random numbers of the per-sample pipeline that depend only on (seed, epoch, position), never on the process.

Each training sample's augmentation draws from torch's generator seeded with its position's seed
(`EpochSampler.sample_seeds()`), whichever loader worker (or the main process) makes it: a run resumed mid-epoch,
or at an epoch boundary with fresh workers, replays the very draws the uninterrupted run made, with any
`data.num_workers`, and under torchrun every sample gets the draws it would get in one process. In the main
process the generator's state is put back after each sample, so dropout and mixup draw as if no augmentation ran.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from trainer.data.sampler import EpochSampler


def seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's RNGs in a loader worker from the seed torch gave that worker."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class SeededOrder(Sampler[tuple[int, int]]):
    """`sampler`'s indices from its `start_batch` on, each paired with the seed of its position in the epoch."""

    def __init__(self, sampler: EpochSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[tuple[int, int]]:
        sampler = self.sampler
        start = sampler.start_batch * sampler.batch_size
        seeds = sampler.sample_seeds()[sampler.global_positions()[start:]]
        return zip(sampler.epoch_order()[start:].tolist(), seeds.tolist(), strict=True)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededSamples(Dataset):
    """`dataset[index]` for keys `(index, seed)`, made with torch's generator seeded by `seed`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        generator = torch.default_generator
        if get_worker_info() is not None:  # a worker's generator serves its samples alone
            generator.manual_seed(seed)
            return self.dataset[index]
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)
