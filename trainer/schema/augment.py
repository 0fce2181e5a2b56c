"""Schemas of the `augment` group: builders of the train-time augmentation (see trainer/data/augment.py)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, SI

from trainer.schema.checks import require

POLICIES = ("imagenet", "cifar10", "svhn")


@dataclass
class AugmentConfig:
    """No augmentation: the builder returns None."""

    _target_: str = "trainer.data.augment.none"


@dataclass
class FlipEraseConfig:
    """Keys every augmenting option shares: crops follow the data's image size."""

    _target_: str = MISSING
    image_size: int = SI("${data.image_size}")
    flip: bool = True  # random horizontal flip; turn off for digits and text
    erasing: float = 0.0  # probability of random erasing, applied after normalisation

    def __post_init__(self) -> None:
        require(0.0 <= self.erasing <= 1.0, "erasing", "in [0, 1]", self.erasing)


@dataclass
class CropFlipConfig(FlipEraseConfig):
    padding: int | None = None  # zero padding before the random crop; null: image_size // 8 (4 at 32 px); 0: no crop

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.padding is None or self.padding >= 0, "padding", ">= 0 or null", self.padding)


@dataclass
class BasicConfig(CropFlipConfig):
    _target_: str = "trainer.data.augment.basic"
    # true: each image is flipped at random in the first epoch, then the other way in every next epoch (every
    # image is seen both ways, as in the CIFAR-10 speed record); runs with data.in_memory=true only
    alternating_flip: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.flip or not self.alternating_flip, "alternating_flip", "false when augment.flip is false",
                self.alternating_flip)


@dataclass
class StandardConfig(FlipEraseConfig):
    _target_: str = "trainer.data.augment.standard"
    scale_min: float = 0.08  # RandomResizedCrop keeps between scale_min and all of the image's area
    color_jitter: float = 0.4  # brightness, contrast and saturation; 0 turns it off

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.scale_min <= 1.0, "scale_min", "in (0, 1]", self.scale_min)
        require(self.color_jitter >= 0.0, "color_jitter", ">= 0", self.color_jitter)


@dataclass
class AutoAugmentConfig(CropFlipConfig):
    _target_: str = "trainer.data.augment.autoaugment"
    policy: str = "imagenet"  # imagenet | cifar10 | svhn

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.policy in POLICIES, "policy", "one of " + ", ".join(POLICIES), self.policy)


@dataclass
class RandAugmentConfig(CropFlipConfig):
    _target_: str = "trainer.data.augment.randaugment"
    num_ops: int = 2
    magnitude: int = 9  # 0 .. num_magnitude_bins - 1
    num_magnitude_bins: int = 31

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_ops >= 1, "num_ops", ">= 1", self.num_ops)
        require(self.num_magnitude_bins >= 2, "num_magnitude_bins", ">= 2", self.num_magnitude_bins)
        require(0 <= self.magnitude < self.num_magnitude_bins, "magnitude",
                f"in [0, num_magnitude_bins) = [0, {self.num_magnitude_bins})", self.magnitude)


@dataclass
class TrivialAugmentConfig(CropFlipConfig):
    _target_: str = "trainer.data.augment.trivialaugment"
    num_magnitude_bins: int = 31

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.num_magnitude_bins >= 2, "num_magnitude_bins", ">= 2", self.num_magnitude_bins)


SCHEMAS = {
    "none": AugmentConfig,
    "basic": BasicConfig,
    "standard": StandardConfig,
    "autoaugment": AutoAugmentConfig,
    "randaugment": RandAugmentConfig,
    "trivialaugment": TrivialAugmentConfig,
}
