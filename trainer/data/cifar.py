"""CIFAR-10 and CIFAR-100 from their pickled "python version" batches in `<root>/cifar-10-batches-py` and
`<root>/cifar-100-python`.

The batches are read here, through a restricted unpickler, rather than by torchvision's classes: those check
each file's md5 and so refuse anything but the full official files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainer.data.decoded import DecodedSplits, InMemoryDataModule
from trainer.data.files import load_array_pickle, require_files
from trainer.errors import DataError


class CIFAR10DataModule(InMemoryDataModule):
    option = "cifar10"
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    folder = "cifar-10-batches-py"
    train_files: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files: tuple[str, ...] = ("test_batch",)
    meta_file = "batches.meta"
    label_key = "labels"
    names_key = "label_names"

    def download_now(self) -> None:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(self.root), train=True, download=True)

    def decode(self) -> DecodedSplits:
        folder = require_files(self.option, self.root, self.folder,
                               (*self.train_files, *self.test_files, self.meta_file),
                               self.download_now if self.download else None)
        train_images, train_labels = self.read_batches(folder, self.train_files)
        test_images, test_labels = self.read_batches(folder, self.test_files)
        meta = load_array_pickle(folder / self.meta_file, self.option)
        if self.names_key not in meta:
            raise DataError(f"data={self.option}: {folder / self.meta_file} has no {self.names_key!r} entry")
        return DecodedSplits(train_images, train_labels, test_images, test_labels, list(meta[self.names_key]))

    def read_batches(self, folder: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenate batches of N x 3072 rows (3 x 32 x 32, channel first) into images and labels."""
        images, labels = [], []
        for name in names:
            batch = load_array_pickle(folder / name, self.option)
            data = np.asarray(batch.get("data"))
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 \
                    or len(batch.get(self.label_key, ())) != len(data):
                raise DataError(f"data={self.option}: {folder / name} is not a CIFAR batch (expected uint8 "
                                f"'data' of N x 3072 and N {self.label_key!r})")
            images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
            labels.append(torch.as_tensor(np.asarray(batch[self.label_key]), dtype=torch.int64))
        return torch.cat(images), torch.cat(labels)


class CIFAR100DataModule(CIFAR10DataModule):
    option = "cifar100"
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    meta_file = "meta"
    label_key = "fine_labels"
    names_key = "fine_label_names"

    def download_now(self) -> None:
        from torchvision.datasets import CIFAR100

        CIFAR100(str(self.root), train=True, download=True)
