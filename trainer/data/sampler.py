"""The training sampler: an epoch's order is a function of (seed, epoch) alone, and can start mid-epoch."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def check_shard(rank: int, world_size: int) -> None:
    """A ValueError unless `rank` names one of `world_size` shards."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size (got rank={rank}, world_size={world_size})")


def class_balance_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weights 1 / (the count of the sample's class), as float64: every class is drawn equally often."""
    labels = labels.to(torch.int64)
    counts = torch.bincount(labels).to(torch.float64)
    return counts[labels].reciprocal()


class EpochSampler(Sampler[int]):
    """Indices for one epoch, shuffled by a generator seeded from (seed, epoch), from batch `start_batch` on.

    A run resumed mid-epoch calls `set_epoch(epoch, start_batch)` and sees exactly the batches the
    interrupted run had not yet trained on, without drawing from any other random number generator.
    With `world_size` > 1 it shards like DistributedSampler: every rank draws the same permutation, pads it
    to a multiple of `world_size` by repeating its first indices, and takes every `world_size`-th one from
    `rank` on; `start_batch` then counts batches of the rank's shard.

    With per-sample `weights` (`data.sampler=balanced`: see `class_balance_weights`) a shuffled epoch is
    `length` indices drawn with replacement in proportion to them, from the same (seed, epoch) generator, so
    resume and sharding work as for a permutation.
    """

    def __init__(self, length: int, batch_size: int, shuffle: bool, seed: int, rank: int = 0,
                 world_size: int = 1, weights: torch.Tensor | None = None) -> None:
        check_shard(rank, world_size)
        if weights is not None and weights.shape != (length,):
            raise ValueError(f"need one weight per sample ({length}), got weights of shape {tuple(weights.shape)}")
        self.length = length
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.weights = weights
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    def epoch_generator(self) -> torch.Generator:
        """A generator seeded for this epoch (also used to seed loader workers)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def stream_seed(self, stream: str, epoch: int | None = None) -> int:
        """The seed of one of this epoch's (or `epoch`'s) named random streams (the per-sample augmentation seeds,
        decoder=cuda's draws): a hash of (seed, epoch, stream), so no stream repeats another epoch's or stream's."""
        epoch = self.epoch if epoch is None else epoch
        digest = hashlib.blake2b(f"{self.seed}:{epoch}:{stream}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1

    def sample_seeds(self) -> torch.Tensor:
        """One seed per position of the epoch's (unpadded) order, from (seed, epoch) alone: what the per-sample
        augmentation of the sample at that position draws from (trainer/data/seeding.py)."""
        generator = torch.Generator().manual_seed(self.stream_seed("sample augmentation"))
        return torch.randint(0, 2**62, (max(self.length, 1),), generator=generator)

    @property
    def shard_size(self) -> int:
        """Samples per rank and epoch: the padded epoch divided by `world_size`."""
        return math.ceil(self.length / self.world_size)

    def global_positions(self) -> torch.Tensor:
        """Each shard entry's position in the epoch's (unpadded) order: the padding repeats positions 0, 1, ..."""
        padded = torch.arange(self.rank, self.shard_size * self.world_size, self.world_size)
        return padded % max(self.length, 1)

    def epoch_order(self) -> torch.Tensor:
        """This rank's indices for the whole epoch (ignoring `start_batch`), as an int64 CPU tensor."""
        if self.shuffle and self.weights is not None:
            order = torch.multinomial(self.weights, self.length, replacement=True, generator=self.epoch_generator())
        elif self.shuffle:
            order = torch.randperm(self.length, generator=self.epoch_generator())
        else:
            order = torch.arange(self.length)
        if self.world_size == 1:
            return order
        return order[self.global_positions()]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_order()[self.start_batch * self.batch_size:].tolist())

    def __len__(self) -> int:
        return max(self.shard_size - self.start_batch * self.batch_size, 0)
