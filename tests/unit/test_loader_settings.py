"""Loader settings: the eval batch, pinning, prefetching, persistent workers, and per-sample augmentation draws
that a resume replays whatever the loader workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import digits_module, write_image_tree
from trainer.data.augment import basic
from trainer.data.imagefolder import ImageFolderDataModule
from trainer.schema.data import DigitsConfig


def test_val_and_test_batches_hold_eval_batch_size_samples_twice_the_batch_by_default() -> None:
    for in_memory in (False, True):
        default, set_to = (digits_module(batch_size=40, in_memory=in_memory, **keys)
                           for keys in ({}, {"eval_batch_size": 100}))
        for datamodule in (default, set_to):
            datamodule.setup()
        assert default.eval_batch_size == 80 and set_to.eval_batch_size == 100
        sizes = [len(y) for _, y in default.val_loader()]
        assert sizes[:-1] == [80] * (len(sizes) - 1) and sum(sizes) == len(default.val_set) > 160
        assert [len(y) for _, y in set_to.val_loader()][:3] == [100, 100, 100]
        assert len(next(iter(default.train_loader(seed=0)))[1]) == 40  # training keeps data.batch_size


def test_pin_memory_follows_the_device_unless_set_and_workers_persist_but_for_the_test_pass() -> None:
    auto, off, on = (digits_module(num_workers=1, prefetch_factor=3, **keys)
                     for keys in ({}, {"pin_memory": False}, {"pin_memory": True}))
    for datamodule in (auto, off, on):
        datamodule.setup()
    assert auto.pins(True) and not auto.pins(False) and not off.pins(True) and on.pins(False)
    val = off.val_loader(pin_memory=True)
    assert not val.pin_memory and val.persistent_workers and val.prefetch_factor == 3 and val.num_workers == 1
    assert auto.train_loader(seed=0, pin_memory=True).pin_memory and auto.val_loader(pin_memory=True).pin_memory
    off.test_set = off.val_set  # the test split is read once, at the end: its workers do not outlive that pass
    assert not off.test_loader().persistent_workers


def test_prefetch_factor_needs_workers_and_eval_batch_size_must_be_positive() -> None:
    assert DigitsConfig(num_workers=2, prefetch_factor=4).prefetch_factor == 4
    with pytest.raises(ValueError, match=r"prefetch_factor must be null with data.num_workers=0"):
        DigitsConfig(prefetch_factor=4)
    with pytest.raises(ValueError, match=r"eval_batch_size must be > 0 or null \(got 0\)"):
        DigitsConfig(eval_batch_size=0)


def folder(tree: Path, workers: int) -> ImageFolderDataModule:
    datamodule = ImageFolderDataModule(str(tree), val_fraction=0.25, batch_size=2, num_workers=workers,
                                       num_classes=3, in_channels=3, image_size=8)
    datamodule.setup(basic(8, padding=2))
    return datamodule


def epoch_inputs(datamodule: ImageFolderDataModule, loader, epoch: int, start_batch: int = 0) -> list[torch.Tensor]:
    datamodule.set_train_epoch(epoch, start_batch)
    return [x for x, _ in loader]


def test_a_resumed_image_folder_epoch_replays_the_augmentation_with_any_workers(tmp_path: Path) -> None:
    """Each sample's crop and flip come from its position's seed: a resume with fresh workers (mid-epoch or at
    the epoch's start), or in the main process, makes the uninterrupted run's batches."""
    tree = write_image_tree(tmp_path / "tree", per_class=4)
    whole = folder(tree, workers=2)
    loader = whole.train_loader(seed=3)
    first = epoch_inputs(whole, loader, 0)
    second = epoch_inputs(whole, loader, 1)  # the same persistent workers as epoch 0
    assert len(second) == 5 and not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    resumed = folder(tree, workers=2)
    assert all(map(torch.equal, epoch_inputs(resumed, resumed.train_loader(seed=3), 1, start_batch=2), second[2:]))
    in_process = folder(tree, workers=0)
    main_loader = in_process.train_loader(seed=3)
    rng = torch.get_rng_state()
    assert all(map(torch.equal, epoch_inputs(in_process, main_loader, 1), second))
    assert torch.equal(torch.get_rng_state(), rng)  # dropout and mixup draw as if no augmentation ran


def test_a_resume_may_change_the_loader_settings_and_the_decoder() -> None:
    """They change how fast the same batches come, not which: a resume takes them as requested."""
    from omegaconf import OmegaConf

    from tests.conftest import compose
    from trainer.errors import CheckpointError
    from trainer.training.resume_config import check_resume_config

    saved = OmegaConf.to_container(compose("data=imagefolder", "data.train_dir=/x", "data.num_classes=3",
                                           "data.decoder=pil"), resolve=True)
    faster = {"decoder": "cuda", "eval_batch_size": 512, "pin_memory": False, "prefetch_factor": 4}
    check_resume_config({"config": saved, "epoch": 1}, saved | {"data": saved["data"] | faster}, "last.pt", 1)
    with pytest.raises(CheckpointError, match="data.batch_size: checkpoint 64 vs requested 8"):
        check_resume_config({"config": saved, "epoch": 1}, saved | {"data": saved["data"] | {"batch_size": 8}},
                            "last.pt", 1)


def test_each_random_stream_of_an_epoch_is_apart_from_every_epochs_order() -> None:
    """The per-sample augmentation seeds and decoder=cuda's draws are seeded apart from every epoch's order
    generator and from each other (an offset from the epoch's seed would be a later epoch's order)."""
    from trainer.data.sampler import EpochSampler

    sampler = EpochSampler(10, 2, True, seed=7)
    seeds = []
    for epoch in range(5):
        sampler.set_epoch(epoch)
        seeds += [sampler.epoch_generator().initial_seed(), sampler.stream_seed("sample augmentation"),
                  sampler.stream_seed("device augmentation")]
    assert len(set(seeds)) == len(seeds)
    sampler.set_epoch(1)
    first = sampler.sample_seeds()
    sampler.set_epoch(1)
    assert torch.equal(sampler.sample_seeds(), first)  # a function of (seed, epoch) alone
