"""Train-time augmentation builders, one per `configs/augment/*.yaml` option.

The contract: a builder returns an `Augment` (or None for `augment=none`). Its `ops` are torchvision v2
transforms that run on uint8 images (a `tv_tensors.Image` or a PIL image) before the data module converts
them to float and normalises them with the data set's own mean/std; random erasing runs after normalisation.
`trainer.data.transforms.train_transform` assembles the pipeline, so every option works on every data set
(float data such as digits is quantised to uint8 first, so AutoAugment and friends get the dtype they need).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainer.errors import ConfigError

if TYPE_CHECKING:  # torchvision is imported by the builders only: `augment=none` runs without it
    from torchvision.transforms import v2


@dataclass(frozen=True)
class Augment:
    """What an augment option asks for; the data module wraps it in conversion and normalisation."""

    name: str
    ops: tuple[v2.Transform, ...]  # on uint8 images, before conversion to float
    erasing: float = 0.0  # RandomErasing probability, applied to the normalised tensor
    sizes_itself: bool = False  # ops output image_size x image_size from any input (RandomResizedCrop)
    photometric: bool = False  # colour ops, which torchvision runs on 1- or 3-channel images only

    def check_channels(self, channels: int) -> None:
        """Colour ops fail inside a loader worker on other channel counts: say so before training starts."""
        if self.photometric and channels not in (1, 3):
            raise ConfigError(f"augment={self.name} changes colours, which needs 1- or 3-channel images "
                              f"(the data has {channels}); use augment=basic or augment=none")


def crop_and_flip(image_size: int, padding: int | None, flip: bool) -> list[v2.Transform]:
    """Random crop of `image_size` from the image padded by `padding` (None: image_size // 8, 0: no crop)."""
    from torchvision.transforms import v2

    padding = image_size // 8 if padding is None else padding
    ops: list[v2.Transform] = []
    if padding > 0:
        ops.append(v2.RandomCrop(image_size, padding=padding))
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    return ops


def none() -> None:
    """No augmentation: the data module applies only its own tensor conversion and normalisation."""
    return None


def basic(image_size: int, padding: int | None = None, flip: bool = True, erasing: float = 0.0) -> Augment:
    """Random crop with padding plus horizontal flip (turn flips off for digits and text)."""
    return Augment("basic", tuple(crop_and_flip(image_size, padding, flip)), erasing)


def standard(image_size: int, scale_min: float = 0.08, flip: bool = True, color_jitter: float = 0.4,
             erasing: float = 0.0) -> Augment:
    """The ImageNet recipe: RandomResizedCrop, horizontal flip, ColorJitter(brightness, contrast, saturation)."""
    from torchvision.transforms import v2

    ops: list[v2.Transform] = [v2.RandomResizedCrop(image_size, scale=(scale_min, 1.0))]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    if color_jitter > 0:
        ops.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    return Augment("standard", tuple(ops), erasing, sizes_itself=True, photometric=color_jitter > 0)


def autoaugment(image_size: int, policy: str = "imagenet", padding: int | None = None, flip: bool = True,
                erasing: float = 0.0) -> Augment:
    """Crop and flip as `basic`, then AutoAugment's learned policy for imagenet, cifar10 or svhn."""
    from torchvision.transforms import v2

    ops = [*crop_and_flip(image_size, padding, flip), v2.AutoAugment(v2.AutoAugmentPolicy(policy))]
    return Augment("autoaugment", tuple(ops), erasing, photometric=True)


def randaugment(image_size: int, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                padding: int | None = None, flip: bool = True, erasing: float = 0.0) -> Augment:
    """Crop and flip as `basic`, then RandAugment: `num_ops` random ops at a fixed `magnitude`."""
    from torchvision.transforms import v2

    ops = [*crop_and_flip(image_size, padding, flip),
           v2.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins)]
    return Augment("randaugment", tuple(ops), erasing, photometric=True)


def trivialaugment(image_size: int, num_magnitude_bins: int = 31, padding: int | None = None, flip: bool = True,
                   erasing: float = 0.0) -> Augment:
    """Crop and flip as `basic`, then TrivialAugmentWide: one random op at a random magnitude."""
    from torchvision.transforms import v2

    ops = [*crop_and_flip(image_size, padding, flip), v2.TrivialAugmentWide(num_magnitude_bins=num_magnitude_bins)]
    return Augment("trivialaugment", tuple(ops), erasing, photometric=True)
