"""Every data option loads real on-disk formats (tiny sets from tests/helpers/data_files.py, or the shared
subsets) through its real loader; missing or malformed files fail with one line naming the folder."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from tests.conftest import (
    SHARED_DATA,
    STATS,
    TREE_COLOURS,
    build,
    write_cifar,
    write_image_tree,
    write_mnist_like,
)
from trainer.data.files import load_array_pickle, require_files
from trainer.data.splits import stratified_split
from trainer.errors import ConfigError, DataError

# ---- MNIST-like and CIFAR: the official splits, decoded once, normalised with the set's constants; val is a
# stratified part of the train split (data.val_fraction=0.1), test the official test split

@pytest.mark.parametrize("option", ["mnist", "fashion_mnist"])
def test_mnist_like_sets_load_idx_files(option: str, tmp_path: Path) -> None:
    arrays = write_mnist_like(tmp_path, option)
    datamodule = build(f"data={option}", f"data.root={tmp_path}")
    assert isinstance(datamodule.train_set, TensorDataset)  # the loader's fast batched path
    assert (len(datamodule.train_set), len(datamodule.val_set), len(datamodule.test_set)) == (50, 10, 6)
    train_idx, val_idx = stratified_split(torch.from_numpy(arrays["train_y"]), 0.1, 0)
    x, y = datamodule.train_set[5]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and int(y) == arrays["train_y"][train_idx[5]]
    (mean,), (std,) = STATS[option]

    def normalised(pixels: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(pixels).float() / 255 - mean) / std

    torch.testing.assert_close(datamodule.val_set[2][0][0], normalised(arrays["train_x"][val_idx[2]]))
    assert datamodule.val_set.tensors[1].tolist() == arrays["train_y"][val_idx].tolist()
    torch.testing.assert_close(datamodule.test_set[2][0][0], normalised(arrays["test_x"][2]))
    assert datamodule.test_set.tensors[1].tolist() == arrays["test_y"].tolist()
    assert not datamodule.val_is_test
    assert len(datamodule.classes) == 10
    assert datamodule.classes[0] == ("0 - zero" if option == "mnist" else "T-shirt/top")


@pytest.mark.parametrize("option", ["cifar10", "cifar100"])
def test_cifar_sets_load_pickled_batches(option: str, tmp_path: Path) -> None:
    arrays = write_cifar(tmp_path, option)
    datamodule = build(f"data={option}", f"data.root={tmp_path}")
    assert (len(datamodule.train_set), len(datamodule.val_set), len(datamodule.test_set)) == (50, 10, 12)
    train_idx, val_idx = stratified_split(torch.from_numpy(arrays["train_y"]), 0.1, 0)
    x, y = datamodule.train_set[49]
    assert x.shape == (3, 32, 32) and int(y) == arrays["train_y"][train_idx[-1]]
    mean, std = STATS[option]
    # Rows are channel-first: 1024 red values, then green, then blue.
    raw = torch.from_numpy(arrays["train_x"][train_idx[-1]]).float().view(3, 32, 32) / 255
    expected = (raw - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(x, expected)
    assert datamodule.val_set.tensors[1].tolist() == arrays["train_y"][val_idx].tolist()
    assert datamodule.test_set.tensors[1].tolist() == arrays["test_y"].tolist()
    assert datamodule.classes == [f"class_{i}" for i in range(100 if option == "cifar100" else 10)]


def test_image_size_and_channels_are_applied_once_at_load(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, "mnist")
    datamodule = build("data=mnist", f"data.root={tmp_path}", "data.image_size=32", "data.in_channels=3")
    x, _ = datamodule.train_set[0]
    assert x.shape == (3, 32, 32)
    assert torch.equal(x[0], x[2])  # the grey channel, repeated


def test_val_fraction_zero_validates_on_the_official_test_split(tmp_path: Path) -> None:
    arrays = write_cifar(tmp_path, "cifar10")
    for in_memory in ("false", "true"):
        datamodule = build("data=cifar10", f"data.root={tmp_path}", "data.val_fraction=0",
                           f"data.in_memory={in_memory}")
        assert (len(datamodule.train_set), len(datamodule.val_set)) == (60, 12)
        assert datamodule.val_set is datamodule.test_set and datamodule.val_is_test
        assert datamodule.val_set.tensors[1].tolist() == arrays["test_y"].tolist()


def test_a_val_fraction_that_holds_out_nothing_names_the_key(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, "mnist", num_train=20)  # 2 per class: round(2 * 0.1) is 0 for every class
    with pytest.raises(DataError, match=r"^data.val_fraction=0.1 leaves an empty val part of data=mnist's train "
                                        r"split \(20 images; .*\): raise it or add images$"):
        build("data=mnist", f"data.root={tmp_path}")
    with pytest.raises(ConfigError, match=r"data.val_fraction must be in \[0, 1\) \(0 validates on the official"):
        build("data=mnist", f"data.root={tmp_path}", "data.val_fraction=1")


# ---- missing and malformed files: one line, naming the folder and the files expected

@pytest.mark.parametrize(("option", "folder", "a_file"), [
    ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
    ("fashion_mnist", "FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
    ("cifar10", "cifar-10-batches-py", "data_batch_5"),
    ("cifar100", "cifar-100-python", "meta"),
])
def test_missing_files_fail_naming_the_folder(option: str, folder: str, a_file: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        build(f"data={option}", f"data.root={tmp_path / 'nowhere'}")
    message = str(err.value)
    assert str((tmp_path / "nowhere" / folder).resolve()) in message
    assert a_file in message and "data.download=true" in message and "\n" not in message


def test_partly_missing_files_are_listed(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, "mnist")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        build("data=mnist", f"data.root={tmp_path}")


def test_a_truncated_idx_file_is_a_data_error(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, "mnist")
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read the IDX files"):
        build("data=mnist", f"data.root={tmp_path}")


def test_download_runs_only_when_asked_and_its_failure_is_one_line(tmp_path: Path) -> None:
    calls = []

    def fetch() -> None:
        calls.append(1)
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "a").write_text("x")

    assert require_files("demo", tmp_path, "sub", ["a"], fetch) == tmp_path / "sub"
    assert calls == [1]
    assert require_files("demo", tmp_path, "sub", ["a"], fetch) == tmp_path / "sub"  # present: no download
    assert calls == [1]

    def offline() -> None:
        raise RuntimeError("Error downloading b.tar.gz:\nTried https://example.invalid")

    with pytest.raises(DataError, match=r"downloading into .*sub failed: Error downloading b\.tar\.gz: Tried "
                                        r"https://example\.invalid$"):
        require_files("demo", tmp_path, "sub", ["b"], offline)


class RunsCode:
    """Unpickling this would call os.system: a crafted "data batch"."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_data_pickles_cannot_run_code(tmp_path: Path) -> None:
    path, marker = tmp_path / "data_batch_1", tmp_path / "ran"
    with path.open("wb") as handle:
        pickle.dump({"data": RunsCode(marker)}, handle, protocol=2)
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|os)\.system"):
        load_array_pickle(path, "cifar10")
    assert not marker.exists()


def test_pickles_from_before_numpy_2_load(tmp_path: Path) -> None:
    """The real CIFAR files name numpy.core.multiarray, which NumPy 2 calls numpy._core.multiarray."""
    data = np.arange(12, dtype=np.uint8).reshape(2, 6)
    pickled = pickle.dumps({"data": data, "labels": [3, 4]}, protocol=2)
    path = tmp_path / "old_batch"
    path.write_bytes(pickled.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in path.read_bytes()
    loaded = load_array_pickle(path, "cifar10")
    assert np.array_equal(loaded["data"], data) and loaded["labels"] == [3, 4]


def test_a_batch_of_the_wrong_shape_is_a_data_error(tmp_path: Path) -> None:
    write_cifar(tmp_path, "cifar10")
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("wb") as handle:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, handle, protocol=2)
    with pytest.raises(DataError, match="test_batch is not a CIFAR batch"):
        build("data=cifar10", f"data.root={tmp_path}")


# ---- ImageFolder: class folders, resize + centre crop, seeded split, clear errors

def test_imagefolder_reads_train_and_val_dirs(tmp_path: Path) -> None:
    train, val = write_image_tree(tmp_path / "train"), write_image_tree(tmp_path / "val", per_class=1)
    datamodule = build("data=imagefolder", f"data.train_dir={train}", f"data.val_dir={val}", "data.num_classes=3",
                       "data.image_size=16", "data.num_workers=0")
    assert datamodule.classes == ["cat", "dog", "emu"]
    assert (len(datamodule.train_set), len(datamodule.val_set)) == (9, 3)
    for index, name in enumerate(datamodule.classes):
        x, y = datamodule.val_set[index]
        assert x.shape == (3, 16, 16) and y == index
        colour = torch.tensor(TREE_COLOURS[name]).float() / 255
        expected = (colour - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
        torch.testing.assert_close(x.mean(dim=(1, 2)), expected, atol=1e-3, rtol=0)


def test_imagefolder_grey_decoding(tmp_path: Path) -> None:
    train = write_image_tree(tmp_path / "train", per_class=6)
    datamodule = build("data=imagefolder", f"data.train_dir={train}", "data.num_classes=3", "data.image_size=8",
                       "data.in_channels=1", "data.mean=[0.5]", "data.std=[0.5]", "data.num_workers=0")
    assert datamodule.train_set[0][0].shape == (1, 8, 8)


def test_imagefolder_without_val_dir_holds_out_a_seeded_stratified_split(tmp_path: Path) -> None:
    train = write_image_tree(tmp_path / "train", per_class=4)
    args = ("data=imagefolder", f"data.train_dir={train}", "data.num_classes=3", "data.image_size=8",
            "data.val_fraction=0.25", "data.num_workers=0")
    first, again, other = build(*args), build(*args), build(*args, "data.split_seed=1")
    val_idx, train_idx = first.val_set.dataset.indices, first.train_set.dataset.indices
    assert len(val_idx) == 3 and len(train_idx) == 9
    assert sorted(val_idx + train_idx) == list(range(12))
    assert [first.val_set.dataset.dataset.targets[i] for i in val_idx] == [0, 1, 2]  # one image of each class
    assert first.train_labels().tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert again.val_set.dataset.indices == val_idx
    assert other.val_set.dataset.indices != val_idx
    assert first.test_set is None and not first.val_is_test


def test_imagefolder_test_dir_is_a_test_set_with_the_eval_transform(tmp_path: Path) -> None:
    train, test = write_image_tree(tmp_path / "train", per_class=6), write_image_tree(tmp_path / "test", per_class=2)
    args = ("data=imagefolder", f"data.train_dir={train}", "data.num_classes=3", "data.image_size=16",
            "data.num_workers=0", "augment=basic")
    datamodule = build(*args, f"data.test_dir={test}")
    assert (len(datamodule.train_set), len(datamodule.val_set), len(datamodule.test_set)) == (15, 3, 6)
    x, y = datamodule.test_set[2]  # dog/0.png: a flat colour, resized and centre-cropped, never augmented
    colour = torch.tensor(TREE_COLOURS["dog"]).float() / 255
    expected = (colour - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert x.shape == (3, 16, 16) and y == 1
    torch.testing.assert_close(x, expected.view(3, 1, 1).expand(3, 16, 16), atol=1e-3, rtol=0)
    other = write_image_tree(tmp_path / "other", per_class=1, classes=("cat", "dog"))
    with pytest.raises(DataError, match=r"data.test_dir .*other and data.train_dir .* need the same class folders: "
                                        r"missing from test_dir \['emu'\], only in test_dir \[\]"):
        build(*args, f"data.test_dir={other}")


def test_sets_without_a_test_split_have_no_test_loader() -> None:
    digits = build("data=digits")
    assert digits.test_set is None and not digits.val_is_test
    with pytest.raises(RuntimeError, match="DigitsDataModule has no test set"):
        digits.test_loader()


def test_fake_test_size_adds_a_test_split_of_its_own_images() -> None:
    args = ("data=fake", "data.train_size=8", "data.val_size=4", "data.batch_size=4")
    assert build(*args).test_set is None
    datamodule = build(*args, "data.test_size=4")
    from torchvision.datasets import FakeData

    assert isinstance(datamodule.test_set, FakeData) and len(datamodule.test_set) == 4
    assert datamodule.test_set.random_offset == 12  # after the train and val images
    test_x, _ = next(iter(datamodule.test_loader()))
    val_x, _ = next(iter(datamodule.val_loader()))
    assert test_x.shape == val_x.shape == (4, 3, 32, 32) and not torch.equal(test_x, val_x)


def test_imagefolder_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty has no class folders .*<class>/<image>\.png"):
        build("data=imagefolder", f"data.train_dir={tmp_path / 'empty'}", "data.num_classes=3")
    (tmp_path / "empty" / "cat").mkdir()
    with pytest.raises(DataError, match="Found no valid file for the classes cat"):
        build("data=imagefolder", f"data.train_dir={tmp_path / 'empty'}", "data.num_classes=3")
    with pytest.raises(DataError, match="is not a folder"):
        build("data=imagefolder", f"data.train_dir={tmp_path / 'absent'}", "data.num_classes=3")


def test_imagefolder_class_mismatch_is_a_data_error(tmp_path: Path) -> None:
    train = write_image_tree(tmp_path / "train")
    val = write_image_tree(tmp_path / "val", per_class=1, classes=("cat", "dog", "yak"))
    with pytest.raises(DataError) as err:
        build("data=imagefolder", f"data.train_dir={train}", f"data.val_dir={val}", "data.num_classes=3")
    assert "missing from val_dir ['emu'], only in val_dir ['yak']" in str(err.value)
    with pytest.raises(DataError, match="has 3 class folders but data.num_classes=5: set data.num_classes=3"):
        build("data=imagefolder", f"data.train_dir={train}", "data.num_classes=5")


# ---- loaders

def test_loaders_use_workers_and_pinning_when_asked(tmp_path: Path) -> None:
    train = write_image_tree(tmp_path / "train", per_class=6)
    datamodule = build("data=imagefolder", f"data.train_dir={train}", "data.num_classes=3", "data.image_size=8",
                       "data.num_workers=2", "data.batch_size=4")
    loader = datamodule.train_loader(seed=0, pin_memory=True)
    assert loader.num_workers == 2 and loader.persistent_workers and loader.pin_memory
    digits = build("data=digits")
    fast = digits.train_loader(seed=0)
    assert fast.batch_size is None  # whole batches by one tensor index
    assert next(iter(fast))[0].shape == (digits.batch_size, 1, 8, 8)


# ---- the shared subsets normalise with the mean/std their inference_info saves for predict and export

@pytest.mark.parametrize("option", ["mnist", "cifar10"])
def test_shared_sets_normalise_with_their_inference_info(option: str) -> None:
    folder = SHARED_DATA / ("MNIST/raw" if option == "mnist" else "cifar-10-batches-py")
    if not folder.is_dir():
        pytest.skip(f"the shared {option} subset is not at {folder}")
    datamodule = build(f"data={option}", f"data.root={SHARED_DATA}")
    info = datamodule.inference_info()
    assert (info["mean"], info["std"]) == tuple(list(s) for s in STATS[option])
    assert info["classes"] == datamodule.classes and len(info["classes"]) == 10
    images = datamodule.train_set.tensors[0]  # normalised with those: about zero mean, unit std per channel
    per_channel = images.transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 0.1 and (per_channel.std(1) - 1).abs().max() < 0.1
