"""Seeded, class-stratified val splits, and the labels of any data set in index order.

`stratified_split` holds out the same fraction of every class, chosen by a generator seeded with
`data.split_seed` alone: the split is the same on every machine and in every run with that seed, and the
val set's class mix is the train split's. `stratified_folds` deals every class's samples, in a seeded order,
into K folds (`data.folds`) and holds out fold `data.fold`: the K runs of `-m data.fold=0,...,K-1` validate on
disjoint sets that together cover the train split (cross-validation).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from trainer.data.transforms import TransformedDataset
from trainer.errors import DataError


def stratified_split(labels: torch.Tensor, fraction: float, seed: int,
                     source: str = "the train split") -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, val_idx): int64 indices into `labels`, each sorted, disjoint, together all of them.

    Of each class's n samples, round(n * fraction) (Python's rounding) go to val, drawn by a torch.Generator
    seeded with `seed`. `fraction` 0 gives an empty val part. With `fraction` > 0 an empty val or train part
    is a DataError naming data.val_fraction and `source` (what `labels` label, for the message).
    """
    labels = torch.as_tensor(labels).to(torch.int64).flatten()
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1) (got {fraction!r})")
    generator = torch.Generator().manual_seed(seed)
    held_out = [torch.empty(0, dtype=torch.int64)]
    for label in torch.unique(labels).tolist():  # ascending, so the draws follow a fixed order
        members = (labels == label).nonzero().flatten()
        count = round(len(members) * fraction)
        held_out.append(members[torch.randperm(len(members), generator=generator)[:count]])
    val_idx = torch.cat(held_out).sort().values
    in_val = torch.zeros(len(labels), dtype=torch.bool)
    in_val[val_idx] = True
    train_idx = (~in_val).nonzero().flatten()
    if fraction > 0 and (len(val_idx) == 0 or len(train_idx) == 0):
        part, fix = ("val", "raise it or add images") if len(val_idx) == 0 else ("train", "lower it")
        raise DataError(f"data.val_fraction={fraction} leaves an empty {part} part of {source} ({len(labels)} "
                        f"images; each class holds out round(count * {fraction})): {fix}")
    return train_idx, val_idx


def stratified_folds(labels: torch.Tensor, folds: int, fold: int, seed: int,
                     source: str = "the train split") -> tuple[torch.Tensor, torch.Tensor]:
    """(train_idx, val_idx) for fold `fold` of `folds`: each class's samples, in an order drawn by a generator
    seeded with `seed`, go to folds 0, 1, ..., folds-1, 0, 1, ... in turn, so every fold holds each class's
    count / folds (within one) and the folds partition `labels`. A DataError when a fold would be empty."""
    labels = torch.as_tensor(labels).to(torch.int64).flatten()
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"need folds >= 2 and 0 <= fold < folds (got folds={folds}, fold={fold})")
    generator = torch.Generator().manual_seed(seed)
    assigned = torch.empty(len(labels), dtype=torch.int64)
    for label in torch.unique(labels).tolist():
        members = (labels == label).nonzero().flatten()
        order = members[torch.randperm(len(members), generator=generator)]
        assigned[order] = torch.arange(len(order)) % folds
    val_idx, train_idx = (assigned == fold).nonzero().flatten(), (assigned != fold).nonzero().flatten()
    if len(val_idx) == 0:
        raise DataError(f"data.folds={folds} leaves fold {fold} of {source} empty ({len(labels)} images): "
                        "lower data.folds")
    return train_idx, val_idx


def held_out(labels: torch.Tensor, fraction: float, seed: int, folds: int | None, fold: int,
             source: str = "the train split") -> tuple[torch.Tensor, torch.Tensor]:
    """The val split of `labels`: fold `fold` of `folds` when folds are set, else a stratified `fraction`."""
    if folds is not None:
        return stratified_folds(labels, folds, fold, seed, source)
    return stratified_split(labels, fraction, seed, source)


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The int64 labels of `dataset`, in index order, read without decoding images where the set allows.

    Reads a TensorDataset's second tensor, looks through TransformedDataset and Subset (recursively), and takes
    `.targets` (torchvision's ImageFolder, MNIST); any other set is iterated once, with torch's global random
    state kept as it was (its transforms may draw from it).
    """
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].to(torch.int64)
    if isinstance(dataset, TransformedDataset):
        return dataset_labels(dataset.dataset)
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.int64)]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets).to(torch.int64).flatten()
    with torch.random.fork_rng(devices=[]):
        return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)
