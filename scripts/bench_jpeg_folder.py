"""The image-folder benchmark's data (scripts/bench_imagefolder.py): the shared CIFAR-10 subset's pickled batches
written once as JPEGs (PIL, quality 95), `<folder>/train/<class>/<index>.jpg` and `<folder>/test/<class>/...`,
into the git-ignored outputs/benchmark/, and reused while complete (never written into ../shared).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_measure import REPO, Say

if TYPE_CHECKING:
    import numpy as np

CACHE_ROOT = REPO / "outputs" / "benchmark"
JPEG_QUALITY = 95
CIFAR_SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def read_cifar(folder: Path) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The class names and, per split, the N x 32 x 32 x 3 uint8 images and their labels of a CIFAR-10 folder."""
    import numpy as np

    from trainer.data.files import load_array_pickle

    classes = [str(name) for name in load_array_pickle(folder / "batches.meta", "cifar10")["label_names"]]
    splits = {}
    for split, names in CIFAR_SPLITS.items():
        batches = [load_array_pickle(folder / name, "cifar10") for name in names]
        images = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
        splits[split] = images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels
    return classes, splits


def first_per_class(labels: np.ndarray, limit: int | None) -> list[int]:
    """Indices of the first `limit` images of each class (all of them with None), in file order."""
    taken: dict[int, int] = {}
    kept = []
    for i, label in enumerate(labels.tolist()):
        if limit is None or taken.get(label, 0) < limit:
            taken[label] = taken.get(label, 0) + 1
            kept.append(i)
    return kept


def write_jpeg_folder(cifar_dir: Path, out: Path, per_class: dict[str, int | None]) -> dict[str, Any]:
    """`out/<split>/<class>/<index>.jpg` for CIFAR's train and test splits (at most `per_class[split]` images a
    class), written under a temporary name and renamed when complete; returns the manifest saved beside them."""
    from PIL import Image

    classes, splits = read_cifar(cifar_dir)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    counts = {}
    for split, (images, labels) in splits.items():
        kept = first_per_class(labels, per_class[split])
        for name in classes:
            (partial / split / name).mkdir(parents=True)
        for i in kept:
            path = partial / split / classes[labels[i]] / f"{i:05d}.jpg"
            Image.fromarray(images[i]).save(path, quality=JPEG_QUALITY)
        counts[split] = len(kept)
    manifest = folder_manifest(cifar_dir, per_class) | {"images": counts}
    (partial / "complete.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return manifest


def folder_manifest(cifar_dir: Path, per_class: dict[str, int | None]) -> dict[str, Any]:
    return {"source": str(cifar_dir.resolve()), "quality": JPEG_QUALITY, "per_class": per_class}


def jpeg_folder(cifar_dir: Path, per_class: dict[str, int | None], say: Say,
                cache_root: Path = CACHE_ROOT) -> tuple[Path, dict]:
    """The JPEG folder of at most `per_class[split]` images a class under `cache_root`, written unless a complete
    one from the same source is there; returns it and its manifest (with the image counts)."""
    subset = "" if all(limit is None for limit in per_class.values()) else \
        "-" + "+".join(str(per_class[split] or "all") for split in CIFAR_SPLITS) + "-per-class"
    out = cache_root / f"cifar10-jpeg-q{JPEG_QUALITY}{subset}"
    marker = out / "complete.json"
    if marker.is_file():
        manifest = json.loads(marker.read_text())
        if {k: manifest.get(k) for k in ("source", "quality", "per_class")} == folder_manifest(cifar_dir, per_class):
            say(f"imagefolder: reusing {out} ({manifest['images']['train']:,} train, {manifest['images']['test']:,} "
                "test JPEGs)")
            return out, manifest
    say(f"imagefolder: writing JPEGs (quality {JPEG_QUALITY}) from {cifar_dir} into {out}")
    return out, write_jpeg_folder(cifar_dir, out, per_class)
