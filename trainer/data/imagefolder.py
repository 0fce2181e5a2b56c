"""Any folder tree of images, one sub-folder per class (torchvision's ImageFolder), decoded per sample.

Validation images are resized to image_size / crop_fraction and centre-cropped to image_size; training images
get the same unless the augment option crops to size itself. With no `val_dir`, a seeded `val_fraction` of
`train_dir` is held out.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from trainer.data.base import DataModule
from trainer.data.transforms import TransformedDataset, eval_transform, resize_ops, train_transform
from trainer.errors import DataError

log = logging.getLogger("trainer")

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

    from trainer.data.augment import Augment


def load_image(path: str, mode: str) -> Image.Image:
    """Decode one file as RGB or grey ("L"), whatever mode it was saved in; a DataError names a bad file."""
    try:
        with open(path, "rb") as handle:
            return Image.open(handle).convert(mode)
    except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise DataError(f"cannot read image {path}: {err}; fix or remove it, or set data.skip_corrupt=true") from None


def drop_corrupt(folder: ImageFolder) -> int:
    """Remove the files PIL cannot decode from `folder`'s sample list; returns how many were dropped."""
    good = []
    for path, label in folder.samples:
        try:
            with Image.open(path) as image:
                image.verify()
            good.append((path, label))
        except (OSError, SyntaxError, ValueError):
            log.warning("skipping unreadable image %s", path)
    dropped = len(folder.samples) - len(good)
    folder.samples = folder.imgs = good
    folder.targets = [label for _, label in good]
    return dropped


def scan_folder(key: str, folder: Path, mode: str) -> ImageFolder:
    """ImageFolder over `folder`, or a DataError saying what is wrong with the tree."""
    from torchvision.datasets import ImageFolder

    layout = f"expected one sub-folder of images per class, e.g. {folder}/<class>/<image>.png"
    if not folder.is_dir():
        raise DataError(f"data.{key} {folder} is not a folder ({layout})")
    if not any(entry.is_dir() for entry in folder.iterdir()):
        raise DataError(f"data.{key} {folder} has no class folders ({layout})")
    try:
        return ImageFolder(str(folder), loader=partial(load_image, mode=mode))
    except FileNotFoundError as err:  # a class folder without a single image file
        raise DataError(f"data.{key} {folder}: {err}") from None


class ImageFolderDataModule(DataModule):
    def __init__(self, train_dir: str, val_dir: str | None = None, val_fraction: float = 0.1,
                 split_seed: int = 0, crop_fraction: float = 0.875, mean: list[float] = (0.485, 0.456, 0.406),
                 std: list[float] = (0.229, 0.224, 0.225), skip_corrupt: bool = False, **common) -> None:
        super().__init__(**common)
        self.train_dir = Path(train_dir).expanduser()
        self.val_dir = Path(val_dir).expanduser() if val_dir else None
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.crop_fraction = crop_fraction
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.skip_corrupt = skip_corrupt
        self.skipped_corrupt = 0

    def normalization(self) -> tuple[list[float], list[float]]:
        return list(self.mean), list(self.std)

    def eval_resize(self) -> dict[str, Any]:
        """The short side to image_size / crop_fraction, then a centre crop of image_size."""
        return {"resize": round(self.image_size / self.crop_fraction), "center_crop": self.image_size}

    def build(self, augment: Augment | None) -> tuple[Dataset, Dataset]:
        mode = "L" if self.in_channels == 1 else "RGB"
        train = scan_folder("train_dir", self.train_dir, mode)
        if self.skip_corrupt:
            self.skipped_corrupt += drop_corrupt(train)
        if len(train.classes) < 2:
            raise DataError(f"data.train_dir {self.train_dir} has one class folder ({train.classes[0]}), but a "
                            "classifier needs at least 2 classes: add a sub-folder of images for each other class")
        if len(train.classes) != self.num_classes:
            raise DataError(f"data.train_dir {self.train_dir} has {len(train.classes)} class folders but "
                            f"data.num_classes={self.num_classes}: set data.num_classes={len(train.classes)}")
        self.classes = list(train.classes)
        fit = resize_ops(**self.eval_resize())
        train_tf = train_transform(augment, *self.normalization(), fit)
        val_tf = eval_transform(*self.normalization(), fit)

        if self.val_dir is None:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
            num_val = int(round(len(train) * self.val_fraction))
            if not 0 < num_val < len(train):
                raise DataError(f"data.train_dir {self.train_dir} has {len(train)} images: too few to hold out "
                                f"data.val_fraction={self.val_fraction} of them; add images or set data.val_dir")
            return (TransformedDataset(Subset(train, order[num_val:]), train_tf),
                    TransformedDataset(Subset(train, order[:num_val]), val_tf))

        val = scan_folder("val_dir", self.val_dir, mode)
        if self.skip_corrupt:
            self.skipped_corrupt += drop_corrupt(val)
        if self.skipped_corrupt:
            log.warning("data.skip_corrupt: skipped %d unreadable image(s)", self.skipped_corrupt)
        if val.classes != train.classes:
            missing = sorted(set(train.classes) - set(val.classes))
            extra = sorted(set(val.classes) - set(train.classes))
            raise DataError(f"data.val_dir {self.val_dir} and data.train_dir {self.train_dir} need the same class "
                            f"folders: missing from val_dir {missing}, only in val_dir {extra}")
        train.transform, val.transform = train_tf, val_tf
        return train, val
