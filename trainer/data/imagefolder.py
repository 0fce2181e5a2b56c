"""Any folder tree of images, one sub-folder per class (torchvision's ImageFolder), decoded per sample in the loader
workers (`data.decoder=torchvision|pil`, trainer/data/decoders.py) or per batch on the GPU (`data.decoder=cuda`,
trainer/data/device_decode.py).

Validation and test images are resized to image_size / crop_fraction and centre-cropped to image_size; training
images get the same unless the augment option crops to size itself. With no `val_dir`, a seeded, class-stratified
`val_fraction` of `train_dir` is held out. `test_dir` (optional) holds the test split, scored once after training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from trainer.data.base import DataModule
from trainer.data.capabilities import DECODERS, DEFAULT_DECODER
from trainer.data.decoders import PIL_ERRORS, load_image, load_tensor, pil_mode
from trainer.data.device_decode import (
    FolderAugment,
    FolderEvalBatches,
    FolderPipeline,
    FolderTrainBatches,
    collate_raw,
    read_raw,
    require_cuda,
)
from trainer.data.splits import held_out
from trainer.data.transforms import TransformedDataset, eval_transform, resize_ops, train_transform
from trainer.errors import ConfigError, DataError

log = logging.getLogger("trainer")

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

    from trainer.data.augment import Augment


def drop_corrupt(folder: ImageFolder) -> int:
    """Remove the files PIL cannot decode from `folder`'s sample list; returns how many were dropped."""
    good = []
    for path, label in folder.samples:
        try:
            with Image.open(path) as image:
                image.verify()
            good.append((path, label))
        except PIL_ERRORS:
            log.warning("skipping unreadable image %s", path)
    dropped = len(folder.samples) - len(good)
    folder.samples = folder.imgs = good
    folder.targets = [label for _, label in good]
    return dropped


def image_loader(decoder: str, channels: int) -> Callable[[str], Any]:
    """What the loader workers turn each file path into, for `data.decoder` (see trainer/data/decoders.py)."""
    if decoder == "pil":
        return partial(load_image, mode=pil_mode(channels))
    if decoder == "torchvision":
        return partial(load_tensor, channels=channels)
    if decoder == "cuda":
        return read_raw
    raise ConfigError(f"data.decoder must be one of {', '.join(DECODERS)} (got {decoder!r})")


def scan_folder(key: str, folder: Path, loader: Callable[[str], Any]) -> ImageFolder:
    """ImageFolder over `folder` whose samples `loader` reads, or a DataError saying what is wrong with the tree."""
    from torchvision.datasets import ImageFolder

    layout = f"expected one sub-folder of images per class, e.g. {folder}/<class>/<image>.png"
    if not folder.is_dir():
        raise DataError(f"data.{key} {folder} is not a folder ({layout})")
    if not any(entry.is_dir() for entry in folder.iterdir()):
        raise DataError(f"data.{key} {folder} has no class folders ({layout})")
    try:
        return ImageFolder(str(folder), loader=loader)
    except FileNotFoundError as err:  # a class folder without a single image file
        raise DataError(f"data.{key} {folder}: {err}") from None


def transformed(dataset: Dataset, transform: Callable | None) -> Dataset:
    return dataset if transform is None else TransformedDataset(dataset, transform)


class ImageFolderDataModule(DataModule):
    def __init__(self, train_dir: str, val_dir: str | None = None, val_fraction: float = 0.1,
                 split_seed: int = 0, crop_fraction: float = 0.875, mean: list[float] = (0.485, 0.456, 0.406),
                 std: list[float] = (0.229, 0.224, 0.225), skip_corrupt: bool = False, test_dir: str | None = None,
                 decoder: str = DEFAULT_DECODER, **common) -> None:
        super().__init__(**common)
        self.loader = image_loader(decoder, self.in_channels)  # fails on an unknown decoder before any scan
        self.decoder = decoder
        self.train_dir = Path(train_dir).expanduser()
        self.val_dir = Path(val_dir).expanduser() if val_dir else None
        self.test_dir = Path(test_dir).expanduser() if test_dir else None
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.crop_fraction = crop_fraction
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.skip_corrupt = skip_corrupt
        self.skipped_corrupt = 0
        self.folder_augment: FolderAugment | None = None  # decoder=cuda's batched augmentation (from setup)
        self._folder_train: FolderTrainBatches | None = None

    def normalization(self) -> tuple[list[float], list[float]]:
        return list(self.mean), list(self.std)

    def eval_resize(self) -> dict[str, Any]:
        """The short side to image_size / crop_fraction, then a centre crop of image_size."""
        return {"resize": round(self.image_size / self.crop_fraction), "center_crop": self.image_size}

    def build(self, augment: Augment | None) -> tuple[Dataset, Dataset, Dataset | None]:
        """Train and val sets (val_dir, or a held-out part of train_dir), and test_dir's set or None.

        With decoder=cuda their samples are (path, bytes) pairs, which the loaders decode and transform."""
        train_tf = eval_tf = None
        if self.decoder == "cuda":
            self.folder_augment = FolderAugment.from_augment(augment, self.image_size)  # fails before any scan
            self.collate_fn = collate_raw
        else:
            fit = resize_ops(**self.eval_resize())
            train_tf = train_transform(augment, *self.normalization(), fit)
            eval_tf = eval_transform(*self.normalization(), fit)
        train = self.scan("train_dir", self.train_dir)
        self.check_train_classes(train)
        self.classes = list(train.classes)

        if self.val_dir is None:
            train_idx, val_idx = held_out(train.targets, self.val_fraction, self.split_seed, self.folds, self.fold,
                                          f"data.train_dir {self.train_dir}")
            train_set: Dataset = transformed(Subset(train, train_idx.tolist()), train_tf)
            val_set: Dataset = transformed(Subset(train, val_idx.tolist()), eval_tf)
        else:
            val_set = self.scan_like(train, "val_dir", self.val_dir)
            train.transform, val_set.transform = train_tf, eval_tf
            train_set = train
        test_set = None
        if self.test_dir is not None:
            test_set = self.scan_like(train, "test_dir", self.test_dir)
            test_set.transform = eval_tf
        if self.skipped_corrupt:
            log.warning("data.skip_corrupt: skipped %d unreadable image(s)", self.skipped_corrupt)
        return train_set, val_set, test_set

    def scan(self, key: str, folder: Path) -> ImageFolder:
        """`scan_folder`, less the unreadable images with `skip_corrupt` (counted in `skipped_corrupt`)."""
        found = scan_folder(key, folder, self.loader)
        if self.skip_corrupt:
            self.skipped_corrupt += drop_corrupt(found)
        return found

    def check_train_classes(self, train: ImageFolder) -> None:
        if len(train.classes) < 2:
            raise DataError(f"data.train_dir {self.train_dir} has one class folder ({train.classes[0]}), but a "
                            "classifier needs at least 2 classes: add a sub-folder of images for each other class")
        if len(train.classes) != self.num_classes:
            raise DataError(f"data.train_dir {self.train_dir} has {len(train.classes)} class folders but "
                            f"data.num_classes={self.num_classes}: set data.num_classes={len(train.classes)}")

    def scan_like(self, train: ImageFolder, key: str, folder: Path) -> ImageFolder:
        """The folder of data.`key`, which must have train_dir's class folders."""
        found = self.scan(key, folder)
        if found.classes != train.classes:
            missing = sorted(set(train.classes) - set(found.classes))
            extra = sorted(set(found.classes) - set(train.classes))
            raise DataError(f"data.{key} {folder} and data.train_dir {self.train_dir} need the same class "
                            f"folders: missing from {key} {missing}, only in {key} {extra}")
        return found

    def train_loader(self, seed: int, pin_memory: bool = False, device: torch.device | None = None, rank: int = 0,
                     world_size: int = 1) -> Iterable:
        """DataModule's loader; with decoder=cuda, its raw batches decoded and augmented on `device`, a GPU."""
        if self.decoder != "cuda":
            return super().train_loader(seed, pin_memory, device, rank, world_size)
        pipeline = self.pipeline(device)
        loader = super().train_loader(seed, pin_memory, device, rank, world_size)
        self._folder_train = FolderTrainBatches(loader, self.train_sampler, pipeline)
        return self._folder_train

    def set_train_epoch(self, epoch: int, start_batch: int = 0) -> None:
        super().set_train_epoch(epoch, start_batch)
        if self._folder_train is not None:
            self._folder_train.set_epoch()

    def _eval_loader(self, dataset: Dataset, pin_memory: bool, device: torch.device | None, rank: int,
                     world_size: int) -> Iterable:
        if self.decoder != "cuda":
            return super()._eval_loader(dataset, pin_memory, device, rank, world_size)
        pipeline = self.pipeline(device)
        return FolderEvalBatches(super()._eval_loader(dataset, pin_memory, device, rank, world_size), pipeline)

    def pipeline(self, device: torch.device | None) -> FolderPipeline:
        """decoder=cuda's decode-and-transform step on `device` (see `decode_device`)."""
        if self.folder_augment is None:
            raise RuntimeError("ImageFolderDataModule.pipeline() needs setup() first")
        device = self.decode_device(device)
        fit = self.eval_resize()
        return FolderPipeline(self.folder_augment, self._normalizer(device), self.in_channels, fit["resize"],
                              fit["center_crop"], device)

    def decode_device(self, device: torch.device | None) -> torch.device:
        """The GPU that decoder=cuda decodes on (None: the first one); a ConfigError on any other device."""
        return require_cuda(device)
