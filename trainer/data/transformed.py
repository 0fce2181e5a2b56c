"""Apply a transform to the input of each (input, target) sample of a data set."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.data import Dataset


class TransformedDataset(Dataset):
    def __init__(self, dataset: Dataset, transform: Callable) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        return self.transform(x), y
