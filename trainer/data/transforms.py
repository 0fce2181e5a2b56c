"""The data side of the augment contract: uint8 images -> [augment ops] -> float -> normalise -> [erasing].

Also the one-off tensor helpers that in-memory data sets use to decode once and then batch by indexing.
torchvision is imported inside the functions that need it, so unaugmented digits runs never load it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset, TensorDataset

if TYPE_CHECKING:
    from torchvision.transforms import v2

    from trainer.data.augment import Augment

Stats = Sequence[float]


class TransformedDataset(Dataset):
    """Apply `transform` to the input of each (input, target) sample of `dataset`."""

    def __init__(self, dataset: Dataset, transform: Callable) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        return self.transform(x), y


def eval_transform(mean: Stats, std: Stats, fit: Sequence[v2.Transform] = ()) -> v2.Compose:
    """Image (PIL or uint8 tensor) -> `fit` (resize, centre crop) -> float in [0, 1] -> normalised."""
    from torchvision.transforms import v2

    return v2.Compose([v2.ToImage(), *fit, v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(mean), list(std))])


def resize_ops(resize: int | Sequence[int], center_crop: int | None = None) -> list[v2.Transform]:
    """`DataModule.eval_resize()` as v2 ops: resize (one side: the short side; [h, w]: exactly), then an
    optional centre crop."""
    from torchvision.transforms import v2

    ops: list[v2.Transform] = [v2.Resize(resize if isinstance(resize, int) else list(resize), antialias=True)]
    if center_crop is not None:
        ops.append(v2.CenterCrop(center_crop))
    return ops


def train_transform(augment: Augment | None, mean: Stats, std: Stats,
                    fit: Sequence[v2.Transform] = ()) -> v2.Compose:
    """The eval pipeline with the augment ops on uint8 images and random erasing after normalisation.

    `fit` brings an image of any size to image_size; augment ops that crop to size themselves replace it.
    """
    from torchvision.transforms import v2

    if augment is None:
        return eval_transform(mean, std, fit)
    augment.check_channels(len(mean))
    steps: list[v2.Transform] = [v2.ToImage(), *([] if augment.sizes_itself else fit), *augment.ops,
                                 v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if augment.erasing > 0:
        steps.append(v2.RandomErasing(p=augment.erasing))
    return v2.Compose(steps)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """N x C x H x W uint8 images resized once (antialiased) to size x size; unchanged when already there."""
    from torchvision.transforms import v2

    if images.shape[-2:] == (size, size):
        return images
    return v2.functional.resize(images, [size, size], antialias=True)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey N x 1 x H x W images repeated to `channels`; other counts must already match (schemas check)."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] != 1:
        raise ValueError(f"cannot turn {images.shape[1]}-channel images into {channels} channels")
    return images.expand(-1, channels, -1, -1).contiguous()


def normalized_tensors(images: torch.Tensor, labels: torch.Tensor, mean: Stats, std: Stats) -> TensorDataset:
    """uint8 images as one normalised float tensor: the loader then slices whole batches without Python."""
    floats = images.to(torch.float32).div_(255)
    floats.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1))
    return TensorDataset(floats, labels)


def image_tensor_sets(train_images: torch.Tensor, train_labels: torch.Tensor, val_images: torch.Tensor,
                      val_labels: torch.Tensor, mean: Stats, std: Stats,
                      augment: Augment | None) -> tuple[Dataset, Dataset]:
    """Train/val sets from uint8 tensors: normalised tensors, or per-sample v2 augmentation for training."""
    val = normalized_tensors(val_images, val_labels, mean, std)
    if augment is None:
        return normalized_tensors(train_images, train_labels, mean, std), val
    transform = train_transform(augment, mean, std)
    return TransformedDataset(TensorDataset(train_images, train_labels), transform), val
