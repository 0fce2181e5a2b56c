"""Model selection you can trust, the data side: a seeded, class-stratified val split held out of the train split,
the official test split kept apart for one score after training, and a class-balanced sampler that resumes exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from tests.conftest import SHARED_DATA, build, compose, digits_module, write_mnist_like
from trainer.data.sampler import EpochSampler, class_balance_weights
from trainer.data.splits import dataset_labels, stratified_folds, stratified_split
from trainer.data.transforms import TransformedDataset
from trainer.errors import ConfigError, DataError
from trainer.schema import validate

COUNTS = [50, 23, 7, 1, 12]  # an imbalanced toy set: class c has COUNTS[c] samples


def toy_labels(counts: list[int], seed: int = 0) -> torch.Tensor:
    """Labels with `counts[c]` samples of class c, in a shuffled order."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


# ---- stratified_split

def test_the_split_is_stratified_disjoint_sorted_and_covers_every_index() -> None:
    labels = toy_labels(COUNTS)
    train_idx, val_idx = stratified_split(labels, 0.2, seed=3)
    assert train_idx.dtype == val_idx.dtype == torch.int64
    assert torch.equal(train_idx, train_idx.sort().values) and torch.equal(val_idx, val_idx.sort().values)
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(len(labels)))
    assert torch.bincount(labels[val_idx], minlength=5).tolist() == [round(n * 0.2) for n in COUNTS] == [10, 5, 1, 0, 2]


def test_the_split_is_a_function_of_the_seed() -> None:
    labels = toy_labels(COUNTS)
    first, again, other = (stratified_split(labels, 0.2, seed) for seed in (3, 3, 4))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    assert torch.equal(torch.bincount(labels[first[1]]), torch.bincount(labels[other[1]]))  # the same class mix


def test_fraction_zero_holds_out_nothing_and_empty_parts_name_the_key() -> None:
    labels = toy_labels(COUNTS)
    train_idx, val_idx = stratified_split(labels, 0.0, seed=0)
    assert torch.equal(train_idx, torch.arange(len(labels))) and len(val_idx) == 0
    with pytest.raises(DataError, match=r"^data.val_fraction=0.1 leaves an empty val part of the train split "
                                        r"\(5 images; .*\): raise it or add images$"):
        stratified_split(torch.arange(5), 0.1, seed=0)  # one image per class: round(0.1) is 0
    with pytest.raises(DataError, match=r"^data.val_fraction=0.9 leaves an empty train part of toy .*: lower it$"):
        stratified_split(torch.arange(5), 0.9, seed=0, source="toy")


# ---- dataset_labels

class Drawing(Dataset):
    """A set without .targets whose samples draw from torch's global generator (as random transforms do)."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.rand(2), 3 - index


class WithTargets(Dataset):
    """An ImageFolder-like set: a `.targets` list, and samples too costly to decode for their labels."""

    targets = [2, 0, 1]

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int):
        raise AssertionError("dataset_labels decoded a sample")


def test_dataset_labels_read_every_kind_of_set_in_index_order() -> None:
    tensors = TensorDataset(torch.zeros(5, 1), torch.tensor([4, 3, 2, 1, 0], dtype=torch.int32))
    assert dataset_labels(tensors).dtype == torch.int64
    assert dataset_labels(tensors).tolist() == [4, 3, 2, 1, 0]
    nested = TransformedDataset(Subset(Subset(tensors, [4, 2, 0, 1]), [3, 0]), transform=lambda x: x)
    assert dataset_labels(nested).tolist() == [3, 0]
    assert dataset_labels(Subset(WithTargets(), [2, 1])).tolist() == [1, 0]
    state = torch.get_rng_state()
    assert dataset_labels(Drawing()).tolist() == [3, 2, 1, 0]
    assert torch.equal(torch.get_rng_state(), state)  # iterating the set left the global generator as it was


def test_train_labels_follow_the_train_set_in_memory_and_after_overfit() -> None:
    for in_memory in (False, True):
        datamodule = digits_module(in_memory=in_memory)
        datamodule.setup()
        _, labels, train_idx, _ = datamodule.split()
        assert torch.equal(datamodule.train_labels(), labels[train_idx])
        datamodule.overfit(2)
        assert torch.equal(datamodule.train_labels(), labels[train_idx][:128])


# ---- the shared MNIST subset: val from the official train split, the official test split apart

@pytest.fixture(scope="module")
def shared_mnist():
    """The shared subset as data=mnist builds it by default, and with data.val_fraction=0 (decoded uint8)."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"the shared MNIST subset is not at {SHARED_DATA / 'MNIST' / 'raw'}")
    common = ("data=mnist", f"data.root={SHARED_DATA}", "data.in_memory=true")
    return build(*common), build(*common, "data.val_fraction=0")


def test_shared_mnist_validates_on_a_held_out_part_of_the_train_split(shared_mnist) -> None:
    held_out, on_test = shared_mnist
    official_train, official_test = on_test.train_set.tensors, on_test.test_set.tensors
    assert (len(held_out.train_set), len(held_out.val_set), len(held_out.test_set)) == (7200, 800, 2000)
    train_idx, val_idx = stratified_split(official_train[1], 0.1, seed=0)
    assert torch.equal(held_out.val_set.tensors[0], official_train[0][val_idx])  # official train images
    assert torch.equal(held_out.train_set.tensors[0], official_train[0][train_idx])
    train_counts = torch.bincount(official_train[1]).tolist()
    assert train_counts == [801, 902, 793, 826, 784, 690, 811, 856, 755, 782]  # shared/data/README.md
    assert torch.bincount(held_out.val_set.tensors[1]).tolist() == [round(n * 0.1) for n in train_counts]
    # The official test split, whole: shared/data/README.md's class counts.
    assert torch.bincount(held_out.test_set.tensors[1]).tolist() == [200, 225, 198, 206, 196, 173, 203, 214,
                                                                      189, 196]
    assert torch.equal(held_out.test_set.tensors[0], official_test[0]) and not held_out.val_is_test


def test_shared_mnist_val_fraction_zero_validates_on_the_test_split(shared_mnist) -> None:
    _, on_test = shared_mnist
    assert (len(on_test.train_set), len(on_test.val_set)) == (8000, 2000)
    assert on_test.val_is_test and on_test.val_set is on_test.test_set


# ---- the test loader: the same batches on the DataLoader and in-memory paths

def test_in_memory_and_dataloader_test_batches_agree_per_shard(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, "mnist", num_test=11)
    loader_path, device_path = (build("data=mnist", f"data.root={tmp_path}", "data.batch_size=4",
                                      "data.eval_batch_size=4", f"data.in_memory={flag}") for flag in ("false", "true"))
    for rank, world_size in ((0, 1), (1, 2)):
        ours = list(device_path.test_loader(rank=rank, world_size=world_size))
        theirs = list(loader_path.test_loader(rank=rank, world_size=world_size))
        assert len(ours) == len(theirs) == (3 if world_size == 1 else 2)
        for (x, y), (x_ref, y_ref) in zip(ours, theirs, strict=True):
            assert torch.equal(y, y_ref)
            torch.testing.assert_close(x, x_ref, atol=1e-6, rtol=0)
    labels = torch.cat([y for _, y in loader_path.test_loader(rank=1, world_size=2)])
    assert torch.equal(labels, loader_path.test_set.tensors[1][1::2])


# ---- data.sampler=balanced

def balanced_sampler(epoch: int, start_batch: int = 0, rank: int = 0, world_size: int = 1) -> EpochSampler:
    labels = toy_labels([900, 90, 10])
    sampler = EpochSampler(len(labels), 50, True, seed=5, rank=rank, world_size=world_size,
                           weights=class_balance_weights(labels))
    sampler.set_epoch(epoch, start_batch)
    return sampler


def test_the_balanced_sampler_draws_every_class_about_equally() -> None:
    labels = toy_labels([900, 90, 10])
    order = list(balanced_sampler(0))
    assert len(order) == 1000 and min(order) >= 0 and max(order) < 1000
    counts = torch.bincount(labels[order], minlength=3)
    assert (counts - 333).abs().max() < 60, counts  # about 15 is one standard deviation; shuffle gives 900/90/10


def test_the_balanced_order_is_a_function_of_seed_and_epoch_and_resumes_exactly() -> None:
    full = list(balanced_sampler(2))
    assert list(balanced_sampler(2)) == full
    assert list(balanced_sampler(3)) != full
    resumed = balanced_sampler(2, start_batch=7)
    assert list(resumed) == full[7 * 50:] and len(resumed) == len(full) - 7 * 50
    shards = [list(balanced_sampler(2, rank=r, world_size=3)) for r in range(3)]
    padded = (full * 3)[:3 * len(shards[0])]
    assert [shards[i % 3][i // 3] for i in range(len(padded))] == padded  # sharded like the shuffled order


def test_weights_must_give_one_per_sample() -> None:
    with pytest.raises(ValueError, match=r"need one weight per sample \(4\)"):
        EpochSampler(4, 2, True, seed=0, weights=torch.ones(3))


def test_both_loader_paths_draw_the_same_balanced_batches() -> None:
    labels = toy_labels([300, 30, 6])
    modules = []
    for in_memory in (False, True):
        datamodule = digits_module(sampler="balanced", in_memory=in_memory, batch_size=48)
        datamodule.setup()
        images = datamodule.train_set.tensors[0][:len(labels)]
        datamodule.train_set = TensorDataset(images, labels)  # an imbalanced train set
        loader = datamodule.train_loader(seed=1)
        datamodule.set_train_epoch(4, start_batch=2)
        modules.append([y for _, y in loader])
    assert len(modules[0]) == len(modules[1]) == 5  # 7 batches of 48 (336 draws), from batch 2 on
    assert all(torch.equal(a, b) for a, b in zip(*modules, strict=True))
    counts = torch.bincount(torch.cat(modules[0]), minlength=3)
    assert counts.min() > 40, counts  # 240 draws: shuffling would give the 6-sample class about 4


def test_folds_partition_each_class_and_every_fold_is_the_val_split_once() -> None:
    labels = torch.tensor([0] * 23 + [1] * 11 + [2] * 7)
    vals = [stratified_folds(labels, 5, fold, seed=3)[1] for fold in range(5)]
    assert torch.equal(torch.cat(vals).sort().values, torch.arange(len(labels)))  # disjoint, covering all
    for fold, val in enumerate(vals):
        train, _ = stratified_folds(labels, 5, fold, seed=3)
        assert not set(train.tolist()) & set(val.tolist()) and len(train) + len(val) == len(labels)
        for label, count in ((0, 23), (1, 11), (2, 7)):  # each class's count / 5, within one
            assert abs(int((labels[val] == label).sum()) - count / 5) < 1
    assert not torch.equal(stratified_folds(labels, 5, 0, seed=4)[1], vals[0])  # the seed decides the deal


def test_data_folds_choose_the_val_split_of_a_data_module() -> None:
    first, second = build("data.folds=5", "data.fold=0"), build("data.folds=5", "data.fold=1")
    first_val, second_val = (set(map(tuple, m.val_set.tensors[0].flatten(1).tolist())) for m in (first, second))
    assert not first_val & second_val  # different folds hold out different digits
    assert len(first.train_set) + len(first.val_set) == 1797
    with pytest.raises(ConfigError, match="data.folds must be null when data.val_dir is given"):
        validate(compose("data=imagefolder", "data.train_dir=x", "data.val_dir=y", "data.num_classes=2",
                         "data.folds=3"))
