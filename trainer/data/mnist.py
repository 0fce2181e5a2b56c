"""MNIST and Fashion-MNIST from torchvision's raw IDX files in `<root>/MNIST/raw` and `<root>/FashionMNIST/raw`."""

from __future__ import annotations

import torch

from trainer.data.decoded import DecodedSplits, InMemoryDataModule
from trainer.data.files import require_files
from trainer.errors import DataError

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


class MNISTDataModule(InMemoryDataModule):
    option = "mnist"
    mean = (0.1307,)
    std = (0.3081,)

    @staticmethod
    def dataset_class() -> type:
        from torchvision.datasets import MNIST

        return MNIST

    def decode(self) -> DecodedSplits:
        dataset_class = self.dataset_class()

        def download() -> None:
            dataset_class(str(self.root), train=True, download=True)

        folder = require_files(self.option, self.root, f"{dataset_class.__name__}/raw", RAW_FILES,
                               download if self.download else None)
        try:
            train = dataset_class(str(self.root), train=True, download=False)
            test = dataset_class(str(self.root), train=False, download=False)
        except (AssertionError, RuntimeError, ValueError) as err:  # a truncated or non-IDX file
            raise DataError(f"data={self.option}: cannot read the IDX files in {folder.resolve()}: "
                            f"{str(err) or type(err).__name__}") from None
        return DecodedSplits(train.data.unsqueeze(1), train.targets.to(torch.int64), test.data.unsqueeze(1),
                             test.targets.to(torch.int64), list(dataset_class.classes))


class FashionMNISTDataModule(MNISTDataModule):
    option = "fashion_mnist"
    mean = (0.2860,)
    std = (0.3530,)

    @staticmethod
    def dataset_class() -> type:
        from torchvision.datasets import FashionMNIST

        return FashionMNIST
