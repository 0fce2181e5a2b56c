"""Schemas of the `data` group: loader settings shared by every data set, then one class per data set."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from omegaconf import MISSING, SI

from trainer.data.capabilities import DECODERS, DEFAULT_DECODER, IN_MEMORY_OPTIONS, SAMPLERS
from trainer.schema.checks import require


@dataclass
class DataConfig:
    """Keys every data set shares; each option's file (configs/data/<option>.yaml) only names its schema below."""

    _target_: str = MISSING
    batch_size: int = 64
    eval_batch_size: int | None = None  # val/test batches; null: 2 x batch_size (no gradients to keep at eval time)
    num_workers: int = 0  # 0 keeps the fast path of tensor-backed sets (whole batches sliced from one tensor)
    prefetch_factor: int | None = None  # batches each loader worker loads ahead; null: torch's default (2)
    pin_memory: bool | None = None  # page-locked batches for faster copies to the GPU; null: on when training on CUDA
    num_classes: int = MISSING
    in_channels: int = MISSING
    image_size: int = MISSING
    in_memory: bool = False  # true: decode once onto the training device; batch and augment there (augment=none|basic)
    sampler: str = "shuffle"  # shuffle: a seeded permutation per epoch; balanced: seeded draws, every class as often
    # Cross-validation: validate on fold `fold` of a seeded, stratified `folds`-fold partition of the train split
    # (instead of val_fraction); -m data.fold=0,1,2,3,4 runs every fold, and the sweep reports mean ± std.
    folds: int | None = None
    fold: int = 0

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size", "> 0", self.batch_size)
        require(self.eval_batch_size is None or self.eval_batch_size > 0, "eval_batch_size", "> 0 or null",
                self.eval_batch_size)
        require(self.prefetch_factor is None or self.prefetch_factor >= 1, "prefetch_factor", ">= 1 or null",
                self.prefetch_factor)
        require(self.prefetch_factor is None or self.num_workers > 0, "prefetch_factor", "null with "
                "data.num_workers=0 (it counts batches each worker process loads ahead; there are none)",
                self.prefetch_factor)
        require(self.folds is None or self.folds >= 2, "folds", ">= 2 or null", self.folds)
        require(0 <= self.fold < (self.folds or 1), "fold", f"in 0..{(self.folds or 1) - 1} (data.folds="
                f"{self.folds})", self.fold)
        require(self.sampler in SAMPLERS, "sampler", f"one of {', '.join(SAMPLERS)}", self.sampler)
        require(self.num_workers >= 0, "num_workers", ">= 0", self.num_workers)
        require(self.num_classes >= 2, "num_classes", ">= 2", self.num_classes)
        require(self.in_channels >= 1, "in_channels", ">= 1", self.in_channels)
        require(self.image_size >= 1, "image_size", ">= 1", self.image_size)


@dataclass
class DigitsConfig(DataConfig):
    _target_: str = "trainer.data.digits.DigitsDataModule"
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 8  # set larger (e.g. 32) to upsample once, for models that need more pixels
    val_fraction: float = 0.2  # held out per class with a fixed seeded split (digits has no test split)
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.val_fraction < 1.0, "val_fraction", "in (0, 1)", self.val_fraction)


@dataclass
class FakeConfig(DataConfig):
    _target_: str = "trainer.data.fake.FakeDataModule"
    batch_size: int = 32
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32
    train_size: int = 256
    val_size: int = 64
    test_size: int = 0  # > 0: a test split of its own random images, scored once after training

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.train_size > 0, "train_size", "> 0", self.train_size)
        require(self.val_size > 0, "val_size", "> 0", self.val_size)
        require(self.test_size >= 0, "test_size", ">= 0", self.test_size)
        require(self.folds is None, "folds", "null for data=fake, whose val split is images of its own", self.folds)


@dataclass
class StoredDataConfig(DataConfig):
    """A fixed data set read from files under `root`; `download` lets torchvision fetch missing ones.

    A seeded, class-stratified `val_fraction` of the official train split is the val set (it picks best.pt);
    the official test split is scored once after training. `val_fraction` 0 validates on the test split.
    """

    known_classes: ClassVar[int] = 10
    allowed_channels: ClassVar[tuple[int, ...]] = (1, 3)
    channels_rule: ClassVar[str] = "1 or 3 (3 repeats the grey channel)"
    root: str = SI("${paths.data_dir}")  # holds the data set's folder (see its option file), e.g. ../shared/data
    download: bool = False  # true: torchvision may fetch missing files
    batch_size: int = 128
    num_classes: int = 10
    val_fraction: float = 0.1  # of each class of the train split, held out for validation; 0: validate on test
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.val_fraction < 1.0, "val_fraction", "in [0, 1) (0 validates on the official test split)",
                self.val_fraction)
        require(self.num_classes == self.known_classes, "num_classes", f"{self.known_classes} for this data set",
                self.num_classes)
        require(self.in_channels in self.allowed_channels, "in_channels", self.channels_rule, self.in_channels)


@dataclass
class MNISTConfig(StoredDataConfig):
    _target_: str = "trainer.data.mnist.MNISTDataModule"
    in_channels: int = 1  # 3 repeats the grey channel
    image_size: int = 28  # other sizes resize once at load time


@dataclass
class FashionMNISTConfig(MNISTConfig):
    _target_: str = "trainer.data.mnist.FashionMNISTDataModule"


@dataclass
class CIFAR10Config(StoredDataConfig):
    _target_: str = "trainer.data.cifar.CIFAR10DataModule"
    allowed_channels: ClassVar[tuple[int, ...]] = (3,)
    channels_rule: ClassVar[str] = "3 (CIFAR images are RGB)"
    in_channels: int = 3
    image_size: int = 32  # other sizes resize once at load time


@dataclass
class CIFAR100Config(CIFAR10Config):
    _target_: str = "trainer.data.cifar.CIFAR100DataModule"
    known_classes: ClassVar[int] = 100
    num_classes: int = 100


@dataclass
class ImageFolderConfig(DataConfig):
    _target_: str = "trainer.data.imagefolder.ImageFolderDataModule"
    batch_size: int = 64
    num_workers: int = 4
    num_classes: int = MISSING  # the number of class folders
    in_channels: int = 3  # 1 decodes as grey (then give one mean and one std)
    image_size: int = 224  # eval: resize to image_size / crop_fraction, centre-crop image_size
    train_dir: str = MISSING  # <train_dir>/<class>/<image>
    val_dir: str | None = None  # same class folders as train_dir; null: hold out val_fraction of each class
    test_dir: str | None = None  # same class folders as train_dir: the test split, scored once after training
    val_fraction: float = 0.1
    split_seed: int = 0
    crop_fraction: float = 0.875
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # ImageNet statistics
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    skip_corrupt: bool = False  # true: drop unreadable images (logged) instead of stopping at the first one
    # torchvision: libjpeg-turbo/libpng straight to tensors in the workers (the same pixels as pil, faster); pil;
    # cuda: workers read bytes, nvjpeg decodes each batch on the GPU, augment=none|basic|standard run there batched
    decoder: str = DEFAULT_DECODER

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.folds is None or self.val_dir is None, "folds", "null when data.val_dir is given (folds split "
                "train_dir)", self.folds)
        require(self.in_channels in (1, 3), "in_channels", "1 (grey) or 3 (RGB)", self.in_channels)
        require(self.decoder in DECODERS, "decoder", f"one of {', '.join(DECODERS)}", self.decoder)
        require(not self.in_memory, "in_memory", "false for imagefolder, whose images are decoded per sample "
                f"(in_memory=true suits {', '.join(IN_MEMORY_OPTIONS)})", self.in_memory)
        require(0.0 < self.val_fraction < 1.0, "val_fraction", "in (0, 1)", self.val_fraction)
        require(0.0 < self.crop_fraction <= 1.0, "crop_fraction", "in (0, 1]", self.crop_fraction)
        for key in ("mean", "std"):
            values = list(getattr(self, key))
            require(len(values) == self.in_channels, key, f"{self.in_channels} values, one per channel", values)
        require(all(s > 0 for s in self.std), "std", "all > 0", list(self.std))


SCHEMAS = {
    "digits": DigitsConfig,
    "fake": FakeConfig,
    "mnist": MNISTConfig,
    "fashion_mnist": FashionMNISTConfig,
    "cifar10": CIFAR10Config,
    "cifar100": CIFAR100Config,
    "imagefolder": ImageFolderConfig,
}
