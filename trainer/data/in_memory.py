"""`data.in_memory=true`: whole data sets as tensors on the training device, batched without a DataLoader.

Images stay uint8 (or float in [0, 1] for digits without augmentation) on the device; each batch is gathered
by one index, augmented by `BatchAugment` and normalised there. No workers and no per-sample Python, as in the
CIFAR-10 speed-record codes. The train order comes from the same `EpochSampler` as the DataLoader path, so
batch k holds the same samples on both paths.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from trainer.data.batch_augment import BatchAugment, EpochDraws
from trainer.data.sampler import EpochSampler

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TensorSplits:
    """Decoded train, val and (where the set has one) test images (N x C x H x W, uint8 or float in [0, 1]) and
    int64 labels. Test tensors that are the val tensors themselves (`is`) mean "the val set is the test set"."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


class Normalizer:
    """uint8 (or [0, 1] float) batches -> normalised float32, with the same ops as `normalized_tensors`."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            floats = images.to(torch.float32).div_(255)
        else:  # a copy: `images` may be a view of the stored set
            floats = images.to(torch.float32, copy=True)
        return floats.sub_(self.mean).div_(self.std)


class DeviceTrainBatches:
    """Training batches (normalised float32 inputs, int64 targets) on `device`, in `sampler`'s order.

    `set_epoch(epoch, start_batch)` fixes the order and draws the epoch's augmentation from a generator on
    the device seeded from (seed, epoch), one row per position of the epoch's order: a mid-epoch start replays
    exactly the batches the full epoch would have produced, and with several ranks every sample gets the
    augmentation it would get in a single process.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, normalizer: Normalizer, batch_size: int,
                 sampler: EpochSampler, augment: BatchAugment) -> None:
        self.images = images
        self.labels = labels
        self.normalize = normalizer
        self.batch_size = batch_size
        self.sampler = sampler
        self.augment = augment
        self.device = images.device
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)
        self.order = self.sampler.epoch_order().to(self.device)
        self.positions = self.sampler.global_positions().to(self.device)
        self.draws: EpochDraws | None = None
        self.image_flips: torch.Tensor | None = None
        if self.augment.active:
            generator = torch.Generator(device=self.device)
            generator.manual_seed((self.sampler.epoch_generator().initial_seed() + 2) % 2**64)
            self.draws = self.augment.draw(self.sampler.length, generator)
        if self.augment.alternating_flip:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(self.sampler.stream_seed("alternating flips", epoch=0))
            self.image_flips = self.augment.image_flips(len(self.images), epoch, generator)

    def __len__(self) -> int:
        """Batches left from `start_batch` on, as `len()` of the DataLoader path's loader."""
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        size = self.batch_size
        for start in range(self.sampler.start_batch * size, len(self.order), size):
            index = self.order[start:start + size]
            inputs = self.images[index]
            if self.draws is None:
                yield self.normalize(inputs), self.labels[index]
                continue
            draws, positions = self.draws, self.positions[start:start + size]
            flips = _rows(draws.flips, positions) if self.image_flips is None else self.image_flips[index]
            inputs = self.augment.crop_flip(inputs, _rows(draws.offsets, positions), flips)
            inputs = self.normalize(inputs)
            if draws.erase is not None:
                inputs = self.augment.erase(inputs, draws.erase[positions])
            yield inputs, self.labels[index]


class DeviceValBatches:
    """Validation (or test) batches on `device`, in order: this rank's samples `rank, rank + world_size, ...`."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, normalizer: Normalizer, batch_size: int) -> None:
        self.images = images
        self.labels = labels
        self.normalize = normalizer
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self.labels), self.batch_size):
            stop = start + self.batch_size
            yield self.normalize(self.images[start:stop]), self.labels[start:stop]


def _rows(values: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor | None:
    return None if values is None else values[positions]
