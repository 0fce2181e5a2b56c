"""`data.in_memory=true` (batches made on the device) against the DataLoader path, and per-rank sharding.

The device path must give the DataLoader path's batches (same order, same values without augmentation), the
same crop/flip/erasing distributions as torchvision's per-sample ops, and an exact mid-epoch resume.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from tests.conftest import build, compose, digits_module, write_cifar, write_image_tree, write_mnist_like
from trainer.build import build_data
from trainer.data import augment as augments
from trainer.data.augment import Augment, basic
from trainer.data.base import DataModule
from trainer.data.batch_augment import BatchAugment
from trainer.data.in_memory import DeviceTrainBatches, Normalizer
from trainer.data.sampler import EpochSampler
from trainer.errors import ConfigError
from trainer.schema import validate

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
ON_DEVICES = [pytest.param(device, marks=pytest.mark.cuda) if device == "cuda" else device for device in DEVICES]


def augmented() -> Augment:
    return basic(8, padding=2, erasing=0.25)


def digits(in_memory: bool = False, augment: Augment | None = None, batch_size: int = 64,
           overfit_batches: int = 0) -> DataModule:
    """The digits module as `data=digits` builds it, set up with `augment`."""
    datamodule = digits_module(batch_size=batch_size, in_memory=in_memory)
    datamodule.setup(augment)
    if overfit_batches:
        datamodule.overfit(overfit_batches)
    return datamodule


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.cpu(), y.cpu()) for x, y in loader]


def assert_same_batches(got: list, expected: list, atol: float = 0.0) -> None:
    assert len(got) == len(expected)
    for (x, y), (x_ref, y_ref) in zip(got, expected, strict=True):
        assert torch.equal(y, y_ref)
        torch.testing.assert_close(x, x_ref, atol=atol, rtol=0)


def with_ids(datamodule, count: int) -> None:
    """Keep the first `count` training samples, labelled 0..count-1 so that batches show which samples they hold."""
    images = datamodule.train_set.tensors[0][:count]
    datamodule.train_set = TensorDataset(images, torch.arange(count))


# ---- the device path gives the DataLoader path's batches

def assert_loaders_agree(loader_path: DataModule, device_path: DataModule, device: str) -> None:
    """Same train batches in epochs 0 and 3, and the same val (and test) batches, within 1e-6."""
    reference, on_device = loader_path.train_loader(7), device_path.train_loader(7, device=torch.device(device))
    for epoch in (0, 3):
        loader_path.set_train_epoch(epoch)
        device_path.set_train_epoch(epoch)
        assert len(on_device) == len(reference)
        first_x, first_y = next(iter(on_device))
        assert first_x.device.type == device and first_x.dtype == torch.float32 and first_y.dtype == torch.int64
        assert_same_batches(batches(on_device), batches(reference), atol=1e-6)
    val = batches(device_path.val_loader(device=torch.device(device)))
    assert_same_batches(val, batches(loader_path.val_loader()), atol=1e-6)
    assert (device_path.test_set is None) == (loader_path.test_set is None)
    if loader_path.test_set is not None:
        test = batches(device_path.test_loader(device=torch.device(device)))
        assert_same_batches(test, batches(loader_path.test_loader()), atol=1e-6)


@pytest.mark.parametrize("device", ON_DEVICES)
def test_unaugmented_digits_batches_equal_the_dataloader_batches(device: str) -> None:
    assert_loaders_agree(digits(), digits(in_memory=True), device)


@pytest.mark.parametrize("option", ["mnist", "cifar10", "fake"])
def test_unaugmented_uint8_batches_equal_the_dataloader_batches(option: str, tmp_path: Path) -> None:
    if option == "mnist":
        write_mnist_like(tmp_path, option, num_train=60, num_test=20)
    elif option == "cifar10":
        write_cifar(tmp_path, option, per_batch=12)
    sizes = (["data.train_size=40", "data.val_size=20", "data.test_size=20"] if option == "fake"
             else [f"data.root={tmp_path}"])
    cfg = compose(f"data={option}", "data.batch_size=16", *sizes)
    validate(cfg)
    loader_path = build_data(cfg)
    cfg.data.in_memory = True
    assert_loaders_agree(loader_path, build_data(cfg), DEVICES[-1])


def test_augmented_device_batches_hold_the_dataloader_samples_in_order() -> None:
    loader_path, device_path = digits(augment=augmented()), digits(in_memory=True, augment=augmented())
    reference, on_device = loader_path.train_loader(1), device_path.train_loader(1)
    loader_path.set_train_epoch(2)
    device_path.set_train_epoch(2)
    targets = [y for _, y in batches(on_device)]
    assert [y.tolist() for y in targets] == [y.tolist() for _, y in batches(reference)]


def test_overfit_batches_are_fixed_and_unaugmented_for_val() -> None:
    datamodule = digits(in_memory=True, augment=augmented(), overfit_batches=2)
    reference = digits(overfit_batches=2)
    assert len(datamodule.train_set) == len(datamodule.val_set) == 2 * datamodule.batch_size
    loader = datamodule.train_loader(0)
    datamodule.set_train_epoch(4)
    ids = torch.cat([y for _, y in batches(loader)])
    assert torch.equal(ids, reference.train_set.dataset.tensors[1][:len(ids)])  # the first samples, in order
    val = batches(datamodule.val_loader())
    assert_same_batches(batches(datamodule.val_loader()), val)  # no random augmentation
    # The training pixels, quantised to uint8 for augmentation: within half a level of the float ones.
    quantisation = 0.5 / 255 / datamodule.normalization()[1][0] + 1e-6
    assert_same_batches(val, batches(reference.val_loader()), atol=quantisation)


# ---- exact resume

@pytest.mark.parametrize("device", ON_DEVICES)
def test_a_mid_epoch_start_replays_the_rest_of_the_epoch(device: str) -> None:
    datamodule = digits(in_memory=True, augment=augmented())
    loader = datamodule.train_loader(5, device=torch.device(device))
    datamodule.set_train_epoch(3)
    full = batches(loader)
    datamodule.set_train_epoch(3, start_batch=7)
    assert len(loader) == len(full) - 7
    assert_same_batches(batches(loader), full[7:])

    resumed = digits(in_memory=True, augment=augmented())  # as a new process would
    resumed_loader = resumed.train_loader(5, device=torch.device(device))
    resumed.set_train_epoch(3, start_batch=7)
    assert_same_batches(batches(resumed_loader), full[7:])

    datamodule.set_train_epoch(4)
    other_epoch = batches(loader)
    assert not torch.equal(other_epoch[0][1], full[0][1])  # another order
    again = batches(loader)
    assert_same_batches(again, other_epoch)  # an epoch iterated twice is the same epoch


# ---- augmentation: the distributions of torchvision's per-sample ops

SIZE, PAD = 8, 2
MARK = (3, 3)  # a 200 pixel with a 100 pixel to its right: stays in view for every crop, and shows flips


def marker_image() -> torch.Tensor:
    image = torch.zeros(1, SIZE, SIZE, dtype=torch.uint8)
    image[0, MARK[0], MARK[1]], image[0, MARK[0], MARK[1] + 1] = 200, 100
    return image


def recover(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The crop's (top, left) in the padded image and the flip bit, from where the two marker pixels went."""
    flat = images.flatten(1).float()
    bright, dim = (flat == 200).float().argmax(1), (flat == 100).float().argmax(1)
    row, col, dim_col = bright // SIZE, bright % SIZE, dim % SIZE
    flipped = dim_col < col
    top = MARK[0] + PAD - row
    left = torch.where(flipped, MARK[1] + PAD - (SIZE - 1 - col), MARK[1] + PAD - col)
    return top, left, flipped


def frequencies(values: torch.Tensor) -> torch.Tensor:
    return torch.bincount(values, minlength=2 * PAD + 1).double() / len(values)


@pytest.mark.parametrize("device", ON_DEVICES)
def test_crop_offsets_and_flips_match_torchvision(device: str) -> None:
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    augment = basic(SIZE, padding=PAD)
    ops = v2.Compose(list(augment.ops))
    torch.manual_seed(0)
    image = tv_tensors.Image(marker_image())
    theirs = recover(torch.stack([ops(image) for _ in range(4000)]))

    n = 20_000
    images = marker_image().expand(n, -1, -1, -1).contiguous().to(device)
    sampler = EpochSampler(n, 1000, True, seed=0)
    identity = Normalizer([0.0], [1 / 255], torch.device(device))  # floats that round back to the pixels
    loader = DeviceTrainBatches(images, torch.arange(n, device=device), identity, 1000, sampler,
                                BatchAugment.from_augment(augment, SIZE))
    ours = recover(torch.cat([x.round().to(torch.uint8).cpu() for x, _ in loader]))

    uniform = torch.full((2 * PAD + 1,), 1 / (2 * PAD + 1), dtype=torch.float64)
    for axis in (0, 1):
        ours_freq, theirs_freq = frequencies(ours[axis]), frequencies(theirs[axis])
        assert ours[axis].min() >= 0 and ours[axis].max() <= 2 * PAD
        torch.testing.assert_close(ours_freq, uniform, atol=0.015, rtol=0)
        torch.testing.assert_close(theirs_freq, uniform, atol=0.02, rtol=0)
        torch.testing.assert_close(ours_freq, theirs_freq, atol=0.03, rtol=0)
        chi_square = ((ours_freq - uniform) ** 2 / uniform).sum().item() * n
        assert chi_square < 18.47  # the 0.999 quantile with 4 degrees of freedom
    assert abs(ours[2].double().mean().item() - 0.5) < 0.015
    assert abs(theirs[2].double().mean().item() - 0.5) < 0.03
    # Offsets and flips are independent: the flip rate is even across the crop positions.
    for left in range(2 * PAD + 1):
        assert abs(ours[2][ours[1] == left].double().mean().item() - 0.5) < 0.04


@pytest.mark.parametrize("device", ON_DEVICES)
def test_random_erasing_matches_torchvision(device: str) -> None:
    from torchvision.transforms import v2

    size, p, n = 16, 0.5, 8000
    erasing = v2.RandomErasing(p=p)
    torch.manual_seed(0)
    theirs = torch.stack([erasing(torch.ones(1, size, size)) for _ in range(n)])
    generator = torch.Generator(device=device).manual_seed(0)
    draws = BatchAugment(size, erasing=p).draw(n, generator)
    ours = BatchAugment.erase(torch.ones(n, 1, size, size, device=device), draws.erase).cpu()

    def stats(images: torch.Tensor) -> dict[str, float]:
        erased = (images == 0).view(-1, size, size)
        hit = erased.flatten(1).any(1)
        rows, cols = erased[hit].any(2), erased[hit].any(1)  # the box's rows and columns
        height, width = rows.sum(1).double(), cols.sum(1).double()
        assert height.max() < size and width.max() < size
        assert torch.equal(erased[hit].flatten(1).sum(1).double(), height * width)  # one whole box each
        first_row, first_col = rows.double().argmax(1).double(), cols.double().argmax(1).double()
        return {"rate": hit.double().mean().item(), "area": (height * width).mean().item() / size**2,
                "log_ratio": (height / width).log().mean().item(), "top": first_row.mean().item(),
                "left": first_col.mean().item()}

    ours_stats, theirs_stats = stats(ours), stats(theirs)
    assert abs(ours_stats["rate"] - p) < 0.03 and bool(((ours == 0) | (ours == 1)).all())
    tolerances = {"rate": 0.03, "area": 0.01, "log_ratio": 0.06, "top": 0.3, "left": 0.3}
    for key, tolerance in tolerances.items():
        assert abs(ours_stats[key] - theirs_stats[key]) < tolerance, (key, ours_stats[key], theirs_stats[key])


def test_batch_augment_takes_the_numbers_the_augment_was_built_from() -> None:
    from hydra.utils import instantiate

    assert BatchAugment.from_augment(None, 8) == BatchAugment(8)
    assert BatchAugment.from_augment(basic(8, padding=2, erasing=0.25), 8) == BatchAugment(8, 2, 0.5, 0.25)
    assert BatchAugment.from_augment(basic(32, flip=False), 32) == BatchAugment(32, 4, 0.0)  # padding 32 // 8
    assert not BatchAugment.from_augment(basic(8, padding=0, flip=False), 8).active
    cfg = compose("data=digits", "augment=basic", "augment.padding=1", "augment.flip=false", "augment.erasing=0.5")
    validate(cfg)
    assert BatchAugment.from_augment(instantiate(cfg.augment), 8) == BatchAugment(8, 1, 0.0, 0.5)
    with pytest.raises(ConfigError, match=r"runs augment=basic on the device as a zero-padded 8x8 random crop and "
                                          r"flip, but this augment has a 16x16 crop; set augment.image_size=8"):
        BatchAugment.from_augment(basic(16, padding=2), 8)
    with pytest.raises(ConfigError, match="this augment has no crop parameters"):
        BatchAugment.from_augment(Augment("basic", ()), 8)


# ---- unsupported combinations fail at build time, with the supported options named

def test_other_augment_options_are_refused_with_in_memory() -> None:
    with pytest.raises(ConfigError, match=r"augment=autoaugment cannot run with data.in_memory=true, which "
                                          r"supports augment=none and augment=basic only"):
        build("data=digits", "data.in_memory=true", "augment=autoaugment")
    for refused in (augments.standard(8), augments.randaugment(8), augments.trivialaugment(8)):
        with pytest.raises(ConfigError, match=f"augment={refused.name} cannot run with data.in_memory=true"):
            digits(in_memory=True, augment=refused)


def test_imagefolder_refuses_in_memory(tmp_path: Path) -> None:
    train = write_image_tree(tmp_path / "train")
    with pytest.raises(ConfigError, match=r"data.in_memory must be false for imagefolder, whose images are decoded "
                                          r"per sample \(in_memory=true suits digits, fake, mnist"):
        build("data=imagefolder", f"data.train_dir={train}", "data.num_classes=3", "data.in_memory=true")


def test_the_in_memory_options_are_those_whose_module_implements_tensor_splits() -> None:
    """The torch-free list the schemas name (trainer/data/capabilities.py) against the data modules' code."""
    from hydra.utils import get_class

    from trainer.data.capabilities import IN_MEMORY_OPTIONS
    from trainer.schema.data import SCHEMAS

    implemented = [option for option, schema in SCHEMAS.items()
                   if get_class(schema._target_).tensor_splits is not DataModule.tensor_splits]
    assert implemented == list(IN_MEMORY_OPTIONS)


# ---- data-parallel shards

def test_world_size_one_keeps_the_epoch_order() -> None:
    sampler = EpochSampler(37, 4, True, seed=3)
    sampler.set_epoch(2, start_batch=3)
    order = torch.randperm(37, generator=torch.Generator().manual_seed(3 * 1_000_003 + 2)).tolist()
    assert list(sampler) == order[12:] and len(sampler) == 25


@pytest.mark.parametrize(("length", "world_size"), [(11, 2), (12, 3), (5, 4), (2, 3)])
def test_train_shards_cover_the_epoch_and_overlap_only_in_padding(length: int, world_size: int) -> None:
    shards = []
    for rank in range(world_size):
        sampler = EpochSampler(length, 2, True, seed=1, rank=rank, world_size=world_size)
        sampler.set_epoch(4)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler) == -(-length // world_size)
        sampler.set_epoch(4, start_batch=1)
        assert list(sampler) == shards[-1][2:] and len(sampler) == len(shards[-1][2:])
    single = EpochSampler(length, 2, True, seed=1)
    single.set_epoch(4)
    order = list(single)
    padded = (order * world_size)[:len(shards[0]) * world_size]  # DistributedSampler's padding
    assert [shards[i % world_size][i // world_size] for i in range(len(padded))] == padded
    assert set().union(*shards) == set(range(length))


def test_bad_ranks_are_refused() -> None:
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        EpochSampler(10, 2, True, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        digits().val_loader(rank=0, world_size=0)


@pytest.mark.parametrize("in_memory", [False, True])
def test_rank_batches_together_are_the_single_process_batch(in_memory: bool) -> None:
    per_rank, count = 32, 1280  # a multiple of both ranks' batches together
    augment = augmented() if in_memory else None
    single = digits(in_memory, augment, batch_size=2 * per_rank)
    ranks = [digits(in_memory, augment, batch_size=per_rank) for _ in range(2)]
    for datamodule in (single, *ranks):
        with_ids(datamodule, count)
    single_loader = single.train_loader(9)
    rank_loaders = [dm.train_loader(9, rank=r, world_size=2) for r, dm in enumerate(ranks)]
    for datamodule in (single, *ranks):
        datamodule.set_train_epoch(1)
    whole, parts = batches(single_loader), [batches(loader) for loader in rank_loaders]
    assert len(whole) == len(parts[0]) == len(parts[1]) == count // (2 * per_rank)
    for k, (x, y) in enumerate(whole):
        assert set(y.tolist()) == set(parts[0][k][1].tolist()) | set(parts[1][k][1].tolist())
        assert not set(parts[0][k][1].tolist()) & set(parts[1][k][1].tolist())
        if in_memory:  # augmentation follows the sample's position in the epoch, not the rank
            assert torch.equal(x[0::2], parts[0][k][0]) and torch.equal(x[1::2], parts[1][k][0])


@pytest.mark.parametrize("in_memory", [False, True])
def test_device_train_shards_pad_like_distributed_sampler(in_memory: bool) -> None:
    datamodules = [digits(in_memory) for _ in range(3)]
    for datamodule in datamodules:
        with_ids(datamodule, 1438)
    ids = []
    for rank, datamodule in enumerate(datamodules):
        loader = datamodule.train_loader(2, rank=rank, world_size=3)
        datamodule.set_train_epoch(0)
        ids.append(torch.cat([y for _, y in batches(loader)]))
        assert len(ids[-1]) == 480
    counts = torch.bincount(torch.cat(ids), minlength=1438)
    assert counts.min() == 1 and counts.sum() == 1440 and (counts == 2).sum() == 2


@pytest.mark.parametrize("in_memory", [False, True])
def test_val_shards_partition_the_val_set(in_memory: bool) -> None:
    datamodule = digits(in_memory)
    full = batches(datamodule.val_loader())
    full_x, full_y = torch.cat([x for x, _ in full]), torch.cat([y for _, y in full])
    for world_size in (2, 3):
        for rank in range(world_size):
            shard = batches(datamodule.val_loader(rank=rank, world_size=world_size))
            assert torch.equal(torch.cat([x for x, _ in shard]), full_x[rank::world_size])
            assert torch.equal(torch.cat([y for _, y in shard]), full_y[rank::world_size])
