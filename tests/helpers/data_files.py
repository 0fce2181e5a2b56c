"""Tiny data sets written in the real on-disk formats: MNIST's IDX files, CIFAR's pickled batches, image trees.

Their train splits hold 6 images of each of 10 classes by default: enough for the default data.val_fraction
(0.1 of each class, rounded) to hold out one image per class.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
# The normalisation constants each set's loader must use (its published mean and std per channel).
STATS = {"mnist": ((0.1307,), (0.3081,)), "fashion_mnist": ((0.2860,), (0.3530,)),
         "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
         "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
TREE_COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_like(root: Path, option: str, num_train: int = 60, num_test: int = 6) -> dict[str, np.ndarray]:
    """`<root>/<MNIST|FashionMNIST>/raw/` with random 28x28 images and labels 0..9 in turn; returns the arrays."""
    rng = np.random.default_rng(0)
    raw = root / FOLDERS[option] / "raw"
    raw.mkdir(parents=True)
    arrays = {"train_x": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
              "train_y": np.arange(num_train, dtype=np.uint8) % 10,
              "test_x": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
              "test_y": (np.arange(num_test, dtype=np.uint8) + 3) % 10}
    for name, key in zip(MNIST_FILES, ("train_x", "train_y", "test_x", "test_y"), strict=True):
        write_idx(raw / name, arrays[key])
    return arrays


def write_cifar(root: Path, option: str, per_batch: int = 12) -> dict[str, np.ndarray]:
    """CIFAR's "python version": protocol-2 pickled dicts with N x 3072 uint8 rows; returns the arrays.

    5 * `per_batch` train images (CIFAR-10's five batches, CIFAR-100's one file) labelled 0..9 in turn, and
    `per_batch` test images with random labels of all the classes.
    """
    rng = np.random.default_rng(1)
    hundred = option == "cifar100"
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    label_key, num_classes = ("fine_labels", 100) if hundred else ("labels", 10)
    train_names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    train_size = 5 * per_batch // len(train_names)
    batches = {}
    for index, name in enumerate([*train_names, "test" if hundred else "test_batch"]):
        test = index == len(train_names)
        size = per_batch if test else train_size
        data = rng.integers(0, 256, (size, 3072), dtype=np.uint8)
        labels = [int(v) for v in (rng.integers(0, num_classes, size) if test
                                   else (np.arange(size) + index * size) % 10)]
        batch = {"batch_label": name, "data": data, label_key: labels, "filenames": [f"{i}.png" for i in labels]}
        with (folder / name).open("wb") as handle:
            pickle.dump(batch, handle, protocol=2)
        batches[name] = batch
    meta_name, names_key = ("meta", "fine_label_names") if hundred else ("batches.meta", "label_names")
    with (folder / meta_name).open("wb") as handle:
        pickle.dump({names_key: [f"class_{i}" for i in range(num_classes)]}, handle, protocol=2)
    train = [batches[name] for name in train_names]
    test = batches["test" if hundred else "test_batch"]
    return {"train_x": np.concatenate([b["data"] for b in train]),
            "train_y": np.concatenate([b[label_key] for b in train]),
            "test_x": test["data"], "test_y": np.asarray(test[label_key])}


def write_image_tree(root: Path, per_class: int = 3, classes: tuple[str, ...] = tuple(TREE_COLOURS)) -> Path:
    """`root/<class>/<i>.png`: one flat colour per class, in sizes that are neither square nor equal."""
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (20 + 4 * i, 14 + 2 * i), TREE_COLOURS.get(name, (90, 90, 90))).save(
                root / name / f"{i}.png")
    return root


def data_overrides(option: str, root: Path) -> list[str]:
    """Overrides that point `option` at a tiny real-format set written under `root` (digits, fake: none)."""
    if option in FOLDERS:
        write_mnist_like(root, option)
    elif option in ("cifar10", "cifar100"):
        write_cifar(root, option)
    elif option == "imagefolder":
        write_image_tree(root / "train", per_class=6)  # one val image per class at data.val_fraction=0.1
        return [f"data.train_dir={root / 'train'}", "data.num_classes=3", "data.image_size=16",
                "data.num_workers=0", "data.batch_size=4"]
    elif option not in ("digits", "fake"):
        raise KeyError(f"no tiny set for data={option}: add one to tests/helpers/data_files.py")
    return [f"data.root={root}"] if option not in ("digits", "fake") else []
