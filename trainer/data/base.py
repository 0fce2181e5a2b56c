"""The DataModule contract shared by every `configs/data/*.yaml` option."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler, Subset, TensorDataset

from trainer.data.batch_augment import BatchAugment
from trainer.data.capabilities import SAMPLERS, eval_batch
from trainer.data.in_memory import DeviceTrainBatches, DeviceValBatches, Normalizer, TensorSplits
from trainer.data.sampler import EpochSampler, check_shard, class_balance_weights
from trainer.data.seeding import SeededOrder, SeededSamples, seed_worker
from trainer.data.splits import dataset_labels
from trainer.errors import ConfigError

if TYPE_CHECKING:
    from trainer.data.augment import Augment


class DataModule:
    """Builds `train_set`, `val_set` and `test_set` in `setup()`; subclasses implement `build()`.

    `build(augment)` returns (train, val, test or None) and applies the augment option's ops to training images
    only (see trainer/data/augment.py); with no augmentation, in-memory sets return `TensorDataset`s, which
    `_loader` batches by indexing. `val_set` picks the best checkpoint; `test_set` (None when the data set has no
    test split) is for scoring once after training, and is `val_set` itself when `val_is_test`.
    Loaders are deterministic: the train order is a function of (seed, epoch) (see sampler.py), drawn class-
    balanced with `sampler="balanced"`, and so is each training sample's augmentation (see seeding.py).
    Val and test batches hold `eval_batch_size` samples (null: twice `batch_size`, capabilities.eval_batch).
    `pin_memory` (null: auto) and `prefetch_factor` (null: torch's default) are DataLoader settings.
    With `in_memory`, subclasses implement `tensor_splits()` instead: the sets then hold the decoded (not
    normalised) tensors, and the loaders batch, augment and normalise them on the device.
    Subclasses implement `normalization()`, the one source of the mean/std that both paths normalise with
    and that `inference_info()` hands to predict/export through the checkpoint.
    """

    def __init__(self, batch_size: int, num_workers: int, num_classes: int, in_channels: int,
                 image_size: int, in_memory: bool = False, sampler: str = "shuffle", folds: int | None = None,
                 fold: int = 0, eval_batch_size: int | None = None, prefetch_factor: int | None = None,
                 pin_memory: bool | None = None) -> None:
        if sampler not in SAMPLERS:
            raise ConfigError(f"data.sampler must be one of {', '.join(SAMPLERS)} (got {sampler!r})")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch(batch_size, eval_batch_size)
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.in_memory = in_memory
        self.sampler = sampler
        self.folds, self.fold = folds, fold  # data.folds: validate on fold `fold` of K (trainer/data/splits.py)
        self.classes: list[str] = [str(i) for i in range(num_classes)]
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.shuffle_train = True
        self.batch_augment: BatchAugment | None = None
        self._worker_seeds: torch.Generator | None = None
        self._device_train: DeviceTrainBatches | None = None
        self._train_labels: tuple[Dataset, torch.Tensor] | None = None
        self.collate_fn: Any = None  # how the DataLoader path batches samples (None: torch's default_collate)

    def build(self, augment: Augment | None) -> tuple[Dataset, Dataset, Dataset | None]:
        """(train, val, test), the test set None when the data set has no test split."""
        raise NotImplementedError

    def normalization(self) -> tuple[list[float], list[float]]:
        """The per-channel mean and std (`in_channels` values each) that this module normalises images with."""
        raise NotImplementedError

    def eval_resize(self) -> dict[str, Any]:
        """How an image of any size is brought to image_size at eval time, as plain numbers: `resize` ([h, w],
        or one side for the short side) and `center_crop` (a side, or None). In-memory sets are stored at
        image_size x image_size, so a plain resize to that."""
        return {"resize": [self.image_size, self.image_size], "center_crop": None}

    def inference_info(self) -> dict[str, Any]:
        """The eval-time preprocessing as plain data, saved in checkpoints for predict and export.

        Keys: `mean`, `std` (per channel, exactly what the loaders normalise with), `classes`, `in_channels`,
        `image_size`, and `eval_resize()`'s `resize` and `center_crop`. Only lists, str, int, float and None,
        so that `torch.load(weights_only=True)` reads them. Call after `setup()`, which reads the class names
        (and, for digits, the train split's statistics) from the data.
        """
        if self.train_set is None:
            raise RuntimeError(f"{type(self).__name__}.inference_info() needs setup() first")
        mean, std = self.normalization()
        return {"mean": [float(m) for m in mean], "std": [float(s) for s in std],
                "classes": [str(c) for c in self.classes], "in_channels": int(self.in_channels),
                "image_size": int(self.image_size), **self.eval_resize()}

    def tensor_splits(self, augment: Augment | None) -> TensorSplits:
        """The decoded splits that `in_memory` keeps on the device (data sets that fit in memory only)."""
        raise ConfigError(f"data.in_memory=true is not supported by {type(self).__name__}: its images are "
                          "decoded per sample; set data.in_memory=false")

    def setup(self, augment: Augment | None = None) -> None:
        if not self.in_memory:
            if augment is not None and augment.crop_flip and augment.crop_flip.alternating:
                raise ConfigError("augment.alternating_flip=true flips each image by its epoch, which only the "
                                  "batched in-memory path does (data.in_memory=true, for the data sets that support "
                                  "it); set augment.alternating_flip=false otherwise")
            self.train_set, self.val_set, self.test_set = self.build(augment)
            return
        self.batch_augment = BatchAugment.from_augment(augment, self.image_size)  # fails before any decoding
        splits = self.tensor_splits(augment)
        self.train_set = TensorDataset(splits.train_images, splits.train_labels)
        self.val_set = TensorDataset(splits.val_images, splits.val_labels)
        if splits.test_images is None:
            self.test_set = None
        elif splits.test_images is splits.val_images and splits.test_labels is splits.val_labels:
            self.test_set = self.val_set
        else:
            self.test_set = TensorDataset(splits.test_images, splits.test_labels)

    @property
    def val_is_test(self) -> bool:
        """Whether the val set is the official test split itself (stored sets with data.val_fraction=0): a
        "best" checkpoint chosen on it has seen the test set, so its score there is not an unbiased one."""
        return self.val_set is not None and self.val_set is self.test_set

    def train_labels(self) -> torch.Tensor:
        """The int64 labels of `train_set`, in its index order (read once per train set, then kept)."""
        if self.train_set is None:
            raise RuntimeError(f"{type(self).__name__}.train_labels() needs setup() first")
        if self._train_labels is None or self._train_labels[0] is not self.train_set:
            self._train_labels = self.train_set, dataset_labels(self.train_set)
        return self._train_labels[1]

    def first_train_images(self, count: int) -> torch.Tensor:
        """The first `count` training images as the model sees them (normalised float): in memory without
        augmentation; per sample through the train transform, its random draws kept apart from the run's RNG."""
        count = min(count, len(self.train_set))
        if self.in_memory:
            return self._normalizer(None)(self.train_set.tensors[0][:count])
        with torch.random.fork_rng(devices=[]):
            images = [self.train_set[index][0] for index in range(count)]
        if not all(isinstance(image, torch.Tensor) for image in images):
            raise ConfigError(f"{type(self).__name__} yields undecoded training samples (data.decoder=cuda decodes "
                              "them on the device): the whitening init needs images; use another data.decoder")
        return torch.stack(images)

    def overfit(self, num_batches: int) -> None:
        """Train and validate on the same first `num_batches` training batches, in a fixed order.

        With `in_memory` the val batches are these images without augmentation. `test_set` stays as it was.
        """
        count = min(len(self.train_set), num_batches * self.batch_size)
        if self.in_memory:
            subset = TensorDataset(*(tensor[:count] for tensor in self.train_set.tensors))
        else:
            subset = Subset(self.train_set, range(count))
        self.train_set = self.val_set = subset
        self.shuffle_train = False

    def pins(self, auto: bool) -> bool:
        """Whether loaders pin their batches: `data.pin_memory` when set, else `auto` (the training device is CUDA)."""
        return auto if self.pin_memory is None else self.pin_memory

    def _loader(self, dataset: Dataset, sampler: Sampler | Iterable, batch_size: int, pin_memory: bool,
                generator: torch.Generator, collate_fn: Any = None, persistent: bool = True) -> DataLoader:
        """Every loader gets its own generator: creating an iterator draws a worker seed from it, and
        drawing from the global RNG instead would shift dropout and mixup after a mid-epoch resume. Workers persist
        across epochs unless the loader is read once (`persistent=False`: the test split)."""
        if isinstance(dataset, TensorDataset) and self.num_workers == 0:
            # Whole batches by one tensor index each: no per-sample Python, no collate.
            return DataLoader(dataset, batch_size=None, sampler=BatchSampler(sampler, batch_size, False),
                              pin_memory=self.pins(pin_memory), generator=generator)
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, generator=generator, collate_fn=collate_fn,
            num_workers=self.num_workers, worker_init_fn=seed_worker, pin_memory=self.pins(pin_memory),
            persistent_workers=persistent and self.num_workers > 0, prefetch_factor=self.prefetch_factor,
            drop_last=False)

    def train_loader(self, seed: int, pin_memory: bool = False, device: torch.device | None = None, rank: int = 0,
                     world_size: int = 1) -> DataLoader | DeviceTrainBatches:
        """Shuffled by `self.train_sampler` (class-balanced draws with `sampler="balanced"`), this rank's shard
        only; call `set_train_epoch` before each epoch.

        `device` is where `in_memory` batches are made (None: the CPU); the DataLoader path ignores it.
        `pin_memory` is the auto value (whether the training device is CUDA), which `data.pin_memory` overrides.
        """
        weights = class_balance_weights(self.train_labels()) if self.sampler == "balanced" else None
        self.train_sampler = EpochSampler(len(self.train_set), self.batch_size, self.shuffle_train, seed, rank,
                                          world_size, weights)
        if self.in_memory:
            images, labels = (tensor.to(device or "cpu") for tensor in self.train_set.tensors)
            self._worker_seeds = None
            self._device_train = DeviceTrainBatches(images, labels, self._normalizer(device), self.batch_size,
                                                    self.train_sampler, self.batch_augment)
            return self._device_train
        self._device_train = None
        self._worker_seeds = torch.Generator()
        if isinstance(self.train_set, TensorDataset):  # no per-sample transform, so nothing to seed
            return self._loader(self.train_set, self.train_sampler, self.batch_size, pin_memory, self._worker_seeds)
        return self._loader(SeededSamples(self.train_set), SeededOrder(self.train_sampler), self.batch_size,
                            pin_memory, self._worker_seeds, self.collate_fn)

    def set_train_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Fix the epoch's batch order (and loader-worker seeds) from (seed, epoch); start at `start_batch`."""
        if self._device_train is not None:
            self._device_train.set_epoch(epoch, start_batch)
            return
        self.train_sampler.set_epoch(epoch, start_batch)
        # Ranks other than 0 seed their workers apart, so that their augmentations are not the same draws.
        worker_seed = self.train_sampler.epoch_generator().initial_seed() + 1 + (self.train_sampler.rank << 32)
        self._worker_seeds.manual_seed(worker_seed % 2**64)

    def val_loader(self, pin_memory: bool = False, device: torch.device | None = None, rank: int = 0,
                   world_size: int = 1) -> DataLoader | DeviceValBatches:
        """The val set in order; with `world_size` > 1, rank r gets samples r, r + world_size, ... (no padding)."""
        return self._eval_loader(self.val_set, pin_memory, device, rank, world_size)

    def test_loader(self, pin_memory: bool = False, device: torch.device | None = None, rank: int = 0,
                    world_size: int = 1) -> DataLoader | DeviceValBatches:
        """The test set in order, sharded as `val_loader`; a RuntimeError when `test_set` is None."""
        if self.test_set is None:
            raise RuntimeError(f"{type(self).__name__} has no test set (digits, fake with data.test_size=0 and "
                               "imagefolder without data.test_dir have none): check test_set first")
        return self._eval_loader(self.test_set, pin_memory, device, rank, world_size, persistent=False)

    def _eval_loader(self, dataset: Dataset, pin_memory: bool, device: torch.device | None, rank: int,
                     world_size: int, persistent: bool = True) -> DataLoader | DeviceValBatches:
        check_shard(rank, world_size)
        if self.in_memory:
            images, labels = (tensor[rank::world_size].to(device or "cpu") for tensor in dataset.tensors)
            return DeviceValBatches(images, labels, self._normalizer(device), self.eval_batch_size)
        sampler = SequentialSampler(dataset) if world_size == 1 else range(rank, len(dataset), world_size)
        return self._loader(dataset, sampler, self.eval_batch_size, pin_memory, torch.Generator(), self.collate_fn,
                            persistent)

    def _normalizer(self, device: torch.device | None) -> Normalizer:
        return Normalizer(*self.normalization(), torch.device(device or "cpu"))
