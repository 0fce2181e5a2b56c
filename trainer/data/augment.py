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
class CropFlip:
    """The numbers the random crop and flip ops are built from, kept as data (in-memory data runs them as
    batched tensor ops from these, see trainer/data/batch_augment.py)."""

    size: int  # the crop's output side (the data's image_size)
    padding: int  # zero padding on every side before a random crop of `size`; 0: no crop
    flip: float  # probability of a horizontal flip; 0: no flip
    alternating: bool = False  # flips alternate per image over epochs (batched paths only, see BatchAugment)

    @classmethod
    def of(cls, image_size: int, padding: int | None, flip: bool, alternating: bool = False) -> CropFlip:
        """`padding` None: image_size // 8; `flip`: torchvision's RandomHorizontalFlip probability, 0.5."""
        return cls(image_size, image_size // 8 if padding is None else padding, 0.5 if flip else 0.0,
                   alternating and flip)

    def ops(self) -> list[v2.Transform]:
        from torchvision.transforms import v2

        ops: list[v2.Transform] = []
        if self.padding > 0:
            ops.append(v2.RandomCrop(self.size, padding=self.padding))
        if self.flip > 0:
            ops.append(v2.RandomHorizontalFlip(self.flip))
        return ops


@dataclass(frozen=True)
class ResizedCrop:
    """The numbers `augment=standard`'s RandomResizedCrop, flip and ColorJitter ops are built from, kept as data
    (`data.decoder=cuda` runs them as batched tensor ops from these, see trainer/data/batch_standard.py)."""

    size: int  # the crop's output side (the data's image_size)
    scale: tuple[float, float]  # the crop's share of the image's area, drawn uniformly
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # its aspect ratio (width / height), drawn log-uniformly
    flip: float = 0.5  # probability of a horizontal flip; 0: no flip
    jitter: float = 0.0  # ColorJitter's brightness = contrast = saturation strength; 0: no jitter

    def ops(self) -> list[v2.Transform]:
        from torchvision.transforms import v2

        ops: list[v2.Transform] = [v2.RandomResizedCrop(self.size, scale=self.scale, ratio=self.ratio)]
        if self.flip > 0:
            ops.append(v2.RandomHorizontalFlip(self.flip))
        if self.jitter > 0:
            ops.append(v2.ColorJitter(brightness=self.jitter, contrast=self.jitter, saturation=self.jitter))
        return ops


@dataclass(frozen=True)
class Augment:
    """What an augment option asks for; the data module wraps it in conversion and normalisation."""

    name: str
    ops: tuple[v2.Transform, ...]  # on uint8 images, before conversion to float
    erasing: float = 0.0  # RandomErasing probability, applied to the normalised tensor
    sizes_itself: bool = False  # ops output image_size x image_size from any input (RandomResizedCrop)
    photometric: bool = False  # colour ops, which torchvision runs on 1- or 3-channel images only
    crop_flip: CropFlip | None = None  # the parameters of the leading crop and flip ops, when they come from one
    resized_crop: ResizedCrop | None = None  # standard's crop, flip and jitter parameters

    def check_channels(self, channels: int) -> None:
        """Colour ops fail inside a loader worker on other channel counts: say so before training starts."""
        if self.photometric and channels not in (1, 3):
            raise ConfigError(f"augment={self.name} changes colours, which needs 1- or 3-channel images "
                              f"(the data has {channels}); use augment=basic or augment=none")


def none() -> None:
    """No augmentation: the data module applies only its own tensor conversion and normalisation."""
    return None


def basic(image_size: int, padding: int | None = None, flip: bool = True, erasing: float = 0.0,
          alternating_flip: bool = False) -> Augment:
    """Random crop with padding plus horizontal flip (turn flips off for digits and text); `alternating_flip`: each
    image is flipped at random in the first epoch and the other way in each next one (data.in_memory only)."""
    geometry = CropFlip.of(image_size, padding, flip, alternating_flip)
    return Augment("basic", tuple(geometry.ops()), erasing, crop_flip=geometry)


def standard(image_size: int, scale_min: float = 0.08, flip: bool = True, color_jitter: float = 0.4,
             erasing: float = 0.0) -> Augment:
    """The ImageNet recipe: RandomResizedCrop, horizontal flip, ColorJitter(brightness, contrast, saturation)."""
    recipe = ResizedCrop(image_size, (scale_min, 1.0), flip=0.5 if flip else 0.0, jitter=color_jitter)
    return Augment("standard", tuple(recipe.ops()), erasing, sizes_itself=True, photometric=color_jitter > 0,
                   resized_crop=recipe)


def autoaugment(image_size: int, policy: str = "imagenet", padding: int | None = None, flip: bool = True,
                erasing: float = 0.0) -> Augment:
    """Crop and flip as `basic`, then AutoAugment's learned policy for imagenet, cifar10 or svhn."""
    from torchvision.transforms import v2

    geometry = CropFlip.of(image_size, padding, flip)
    ops = [*geometry.ops(), v2.AutoAugment(v2.AutoAugmentPolicy(policy))]
    return Augment("autoaugment", tuple(ops), erasing, photometric=True, crop_flip=geometry)


def randaugment(image_size: int, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                padding: int | None = None, flip: bool = True, erasing: float = 0.0) -> Augment:
    """Crop and flip as `basic`, then RandAugment: `num_ops` random ops at a fixed `magnitude`."""
    from torchvision.transforms import v2

    geometry = CropFlip.of(image_size, padding, flip)
    ops = [*geometry.ops(), v2.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins)]
    return Augment("randaugment", tuple(ops), erasing, photometric=True, crop_flip=geometry)


def trivialaugment(image_size: int, num_magnitude_bins: int = 31, padding: int | None = None, flip: bool = True,
                   erasing: float = 0.0) -> Augment:
    """Crop and flip as `basic`, then TrivialAugmentWide: one random op at a random magnitude."""
    from torchvision.transforms import v2

    geometry = CropFlip.of(image_size, padding, flip)
    ops = [*geometry.ops(), v2.TrivialAugmentWide(num_magnitude_bins=num_magnitude_bins)]
    return Augment("trivialaugment", tuple(ops), erasing, photometric=True, crop_flip=geometry)
