"""Schemas of the `data` group: loader settings shared by every data set, then one class per data set."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from trainer.schema.checks import require


@dataclass
class DataConfig:
    _target_: str = MISSING
    batch_size: int = 64
    num_workers: int = 0
    num_classes: int = MISSING
    in_channels: int = MISSING
    image_size: int = MISSING

    def __post_init__(self) -> None:
        require(self.batch_size > 0, "batch_size", "> 0", self.batch_size)
        require(self.num_workers >= 0, "num_workers", ">= 0", self.num_workers)
        require(self.num_classes >= 2, "num_classes", ">= 2", self.num_classes)
        require(self.in_channels >= 1, "in_channels", ">= 1", self.in_channels)
        require(self.image_size >= 1, "image_size", ">= 1", self.image_size)


@dataclass
class DigitsConfig(DataConfig):
    _target_: str = "trainer.data.digits.DigitsDataModule"
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 8
    val_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.val_fraction < 1.0, "val_fraction", "in (0, 1)", self.val_fraction)


@dataclass
class FakeConfig(DataConfig):
    _target_: str = "trainer.data.fake.FakeDataModule"
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32
    train_size: int = 256
    val_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.train_size > 0, "train_size", "> 0", self.train_size)
        require(self.val_size > 0, "val_size", "> 0", self.val_size)


SCHEMAS = {"digits": DigitsConfig, "fake": FakeConfig}
