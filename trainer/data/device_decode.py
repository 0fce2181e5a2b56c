"""`data.decoder=cuda`: the loader workers only read files; each batch is decoded and augmented on the device.

A worker reads each file's bytes (`read_raw`) and `collate_raw` packs a batch's files into one uint8 buffer (one
shared-memory block per batch, not one per image). In the main process `FolderPipeline` splits it into one 1-D
tensor per file, decodes the JPEGs with one `torchvision.io.decode_jpeg(list, device=...)` call (nvjpeg on a CUDA
device) and any other file on the CPU (torchvision.io or Pillow, as `data.decoder=torchvision`), then, as batched
tensor ops on the device: the eval resize and centre crop (images grouped by size), or the training augmentation
(`augment=basic`: that fit, then trainer/data/batch_augment.py's crop and flip; `augment=standard`:
trainer/data/batch_standard.py's crop-resize, flip and colour jitter), the normalisation and random erasing.
Every step takes the `device`, so the same code runs on the CPU in the tests.

The training draws come from `PositionDraws`: one row per position of the epoch's order, drawn in chunks from
generators seeded by (seed, epoch, chunk), so a resume at any batch, on any number of processes, replays them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from trainer.data.batch_augment import BatchAugment
from trainer.data.batch_standard import color_jitter, crop_boxes, draw_resized_crops, flip, resized_crops
from trainer.data.decoders import decode_bytes, is_jpeg, read_bytes, to_grey
from trainer.errors import ConfigError

if TYPE_CHECKING:
    from trainer.data.augment import Augment, ResizedCrop
    from trainer.data.in_memory import Normalizer
    from trainer.data.sampler import EpochSampler

CHUNK = 4096  # positions per draw chunk
SUPPORTED = ("none", "basic", "standard")
HOST_DRAWS = ("area", "log_ratio", "corner")  # standard's crop draws: the crop boxes are computed on the host
Batch = tuple[torch.Tensor, torch.Tensor]


class RawBatch(NamedTuple):
    """A batch of files as read: `data` holds their bytes back to back (`lengths` each), `jpeg` which are JPEGs."""

    data: torch.Tensor
    lengths: torch.Tensor
    jpeg: torch.Tensor
    labels: torch.Tensor
    paths: list[str]


def read_raw(path: str) -> tuple[str, bytearray]:
    """The ImageFolder loader of `data.decoder=cuda`: the file's path and bytes, undecoded."""
    return path, read_bytes(path)


def collate_raw(samples: list[tuple[tuple[str, bytearray], int]]) -> RawBatch:
    """A batch of `read_raw` samples as one `RawBatch`."""
    blobs = [blob for (_, blob), _ in samples]
    packed = bytearray().join(blobs)
    data = torch.frombuffer(packed, dtype=torch.uint8) if packed else torch.zeros(0, dtype=torch.uint8)
    return RawBatch(data, torch.tensor([len(blob) for blob in blobs], dtype=torch.int64),
                    torch.tensor([is_jpeg(blob) for blob in blobs]), torch.tensor([label for _, label in samples]),
                    [path for (path, _), _ in samples])


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`: from page-locked memory without waiting, on CUDA (a pinned tensor is not re-pinned)."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def decode_batch(raw: RawBatch, channels: int, device: torch.device) -> list[torch.Tensor]:
    """Each file of `raw` as a uint8 `channels` x H x W tensor on `device`: the JPEGs by one batched decode_jpeg
    call (nvjpeg on CUDA), the rest (and every JPEG, when that call fails on one of them) one by one on the CPU; a
    DataError names a file no decoder reads."""
    from torchvision.io import ImageReadMode, decode_jpeg

    blobs = list(torch.split(raw.data, raw.lengths.tolist()))
    images: list[torch.Tensor | None] = [None] * len(blobs)
    jpegs = [k for k, flag in enumerate(raw.jpeg.tolist()) if flag]
    if jpegs:
        try:
            decoded = decode_jpeg([blobs[k] for k in jpegs], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # damaged, or a kind nvjpeg refuses (CMYK...): below, each with the CPU decoders
            decoded = [None] * len(jpegs)
        for k, image in zip(jpegs, decoded, strict=True):
            images[k] = image
    for k, image in enumerate(images):
        if image is None:
            images[k] = to_device(decode_bytes(bytearray(blobs[k].numpy().tobytes()), raw.paths[k], 3), device)
    return [to_grey(image) for image in images] if channels == 1 else images


def fit(images: list[torch.Tensor], resize: int | list[int], crop: int | None) -> torch.Tensor:
    """`DataModule.eval_resize()` (resize, then an optional centre crop) on every image, as the per-sample eval
    transform does it, but with the images of one size resized as one batch; stacked in their order."""
    from torchvision.transforms.v2 import functional as F

    size = [resize] if isinstance(resize, int) else list(resize)
    groups: dict[tuple[int, ...], list[int]] = {}
    for k, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(k)
    fitted: list[torch.Tensor | None] = [None] * len(images)
    for members in groups.values():
        batch = F.resize(torch.stack([images[k] for k in members]), size, antialias=True)
        if crop is not None:
            batch = F.center_crop(batch, [crop, crop])
        for k, image in zip(members, batch.unbind(0), strict=True):
            fitted[k] = image
    return torch.stack(fitted)


@dataclass(frozen=True)
class FolderAugment:
    """The training augmentation decoder=cuda runs as batched ops: `augment=basic`'s crop, flip and erasing
    (`crop_flip`), or `augment=standard`'s crop-resize, flip and jitter (`resized_crop`) and erasing."""

    crop_flip: BatchAugment
    resized_crop: ResizedCrop | None = None

    @classmethod
    def from_augment(cls, augment: Augment | None, image_size: int) -> FolderAugment:
        """A ConfigError for the options it cannot batch (the policy-driven ones)."""
        if augment is None or augment.name == "basic":
            return cls(BatchAugment.from_augment(augment, image_size, "data.decoder=cuda", "data.decoder=torchvision"))
        if augment.name != "standard" or augment.resized_crop is None:
            raise ConfigError(f"augment={augment.name} cannot run with data.decoder=cuda, which runs "
                              f"augment={', '.join(SUPPORTED)} as batched ops on the GPU; choose one of those, or "
                              "set data.decoder=torchvision (or pil), which runs any augment option in the workers")
        if augment.resized_crop.size != image_size:
            raise ConfigError(f"data.decoder=cuda crops augment=standard's images to data.image_size={image_size}, "
                              f"but the augment crops to {augment.resized_crop.size}: set augment.image_size="
                              f"{image_size}, or data.decoder=torchvision")
        return cls(BatchAugment(image_size, erasing=float(augment.erasing)), augment.resized_crop)

    @property
    def active(self) -> bool:
        return self.resized_crop is not None or self.crop_flip.active

    def draw(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The random numbers of `n` positions, always drawn in the same order from `generator`."""
        if self.resized_crop is None:
            basic = self.crop_flip.draw(n, generator)
            draws = {"offsets": basic.offsets, "flips": basic.flips, "erase": basic.erase}
        else:
            draws = draw_resized_crops(n, self.resized_crop, generator)
            draws["erase"] = self.crop_flip.draw(n, generator).erase  # padding and flip 0: erasing's alone
        return {key: value for key, value in draws.items() if value is not None}

    def apply(self, images: list[torch.Tensor], rows: dict[str, torch.Tensor],
              fit_all: Callable[[list[torch.Tensor]], torch.Tensor]) -> torch.Tensor:
        """uint8 images (any sizes, on the device) -> one augmented uint8 batch of image_size, before normalising.

        `rows` are this batch's draws: standard's crop draws on the host, the others on the images' device."""
        if self.resized_crop is None:
            return self.crop_flip.crop_flip(fit_all(images), rows.get("offsets"), rows.get("flips"))
        heights = torch.tensor([image.shape[-2] for image in images])
        widths = torch.tensor([image.shape[-1] for image in images])
        boxes = crop_boxes(heights, widths, *(rows[key] for key in HOST_DRAWS), self.resized_crop.ratio)
        batch = resized_crops(images, boxes.tolist(), self.resized_crop.size)
        if "flips" in rows:
            batch = flip(batch, rows["flips"])
        if "factors" in rows:
            batch = color_jitter(batch, rows["factors"], rows["order"])
        return batch


class PositionDraws:
    """`draw(n, generator)`'s rows for any positions of an epoch's order, drawn CHUNK positions at a time from a
    CPU generator seeded by (`seed`, chunk): a batch anywhere in the epoch gets the rows the whole epoch would give
    it, without drawing (or holding) a whole epoch of ImageNet at once."""

    def __init__(self, seed: int, draw: Callable[[int, torch.Generator], dict[str, torch.Tensor]]) -> None:
        self.seed = seed
        self.draw = draw
        self.chunks: dict[int, dict[str, torch.Tensor]] = {}

    def chunk(self, index: int) -> dict[str, torch.Tensor]:
        if index not in self.chunks:
            if len(self.chunks) >= 4:  # batches move forward through the epoch: drop the chunks behind
                self.chunks.clear()
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % 2**63)
            self.chunks[index] = self.draw(CHUNK, generator)
        return self.chunks[index]

    def rows(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """The draws of `positions` (an int64 CPU tensor), on the CPU."""
        which, local = positions // CHUNK, positions % CHUNK
        indices = which.unique().tolist()
        if len(indices) == 1:
            return {key: value[local] for key, value in self.chunk(indices[0]).items()}
        out = {key: value.new_empty((len(positions), *value.shape[1:]))
               for key, value in self.chunk(indices[0]).items()}
        for index in indices:
            mask = which == index
            for key, value in self.chunk(index).items():
                out[key][mask] = value[local[mask]]
        return out


@dataclass(frozen=True)
class FolderPipeline:
    """What decoder=cuda does to a `RawBatch` on `device`: decode, then the eval fit (`eval_batch`) or the training
    augmentation (`train_batch`), then normalise (and erase); inputs float32, labels int64, both on `device`."""

    augment: FolderAugment
    normalize: Normalizer
    channels: int
    resize: int | list[int]  # DataModule.eval_resize()'s resize and centre crop
    center_crop: int | None
    device: torch.device

    def fit_all(self, images: list[torch.Tensor]) -> torch.Tensor:
        return fit(images, self.resize, self.center_crop)

    def labels(self, raw: RawBatch) -> torch.Tensor:
        return to_device(raw.labels, self.device)

    def eval_batch(self, raw: RawBatch) -> Batch:
        return self.normalize(self.fit_all(decode_batch(raw, self.channels, self.device))), self.labels(raw)

    def train_batch(self, raw: RawBatch, rows: dict[str, torch.Tensor] | None) -> Batch:
        """`rows`: the batch's draws (`PositionDraws.rows`), None without augmentation."""
        if rows is None:
            return self.eval_batch(raw)
        rows = {key: value if key in HOST_DRAWS else to_device(value, self.device) for key, value in rows.items()}
        inputs = self.normalize(self.augment.apply(decode_batch(raw, self.channels, self.device), rows, self.fit_all))
        if "erase" in rows:
            inputs = self.augment.crop_flip.erase(inputs, rows["erase"])
        return inputs, self.labels(raw)


class FolderTrainBatches:
    """Training batches of decoder=cuda: `loader`'s raw batches (in `sampler`'s order), decoded and augmented on the
    device. Call `set_epoch()` after `sampler.set_epoch(epoch, start_batch)`: it draws that epoch's augmentation
    from (seed, epoch), one row per position of the epoch's order, as `DeviceTrainBatches` does."""

    def __init__(self, loader: Iterable[RawBatch], sampler: EpochSampler, pipeline: FolderPipeline) -> None:
        self.loader = loader
        self.sampler = sampler
        self.pipeline = pipeline
        self.set_epoch()

    def set_epoch(self) -> None:
        self.positions = self.sampler.global_positions()
        self.draws = None
        if self.pipeline.augment.active:
            seed = self.sampler.stream_seed("device augmentation")
            self.draws = PositionDraws(seed, self.pipeline.augment.draw)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        start = self.sampler.start_batch * self.sampler.batch_size
        for raw in self.loader:
            positions = self.positions[start:start + len(raw.labels)]
            start += len(raw.labels)
            yield self.pipeline.train_batch(raw, None if self.draws is None else self.draws.rows(positions))


class FolderEvalBatches:
    """Val or test batches of decoder=cuda: `loader`'s raw batches, in order, decoded and fitted on the device."""

    def __init__(self, loader: Any, pipeline: FolderPipeline) -> None:
        self.loader = loader
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for raw in self.loader:
            yield self.pipeline.eval_batch(raw)


def require_cuda(device: torch.device | None) -> torch.device:
    """The device decoder=cuda decodes on: `device` (None: the first GPU); a ConfigError unless it is a GPU."""
    found = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                          else "cpu")
    if found.type != "cuda":
        raise ConfigError(f"data.decoder=cuda decodes with nvjpeg on a CUDA device, but this run's device is "
                          f"{found}; set data.decoder=torchvision (libjpeg-turbo in the loader workers, the default) "
                          "or data.decoder=pil")
    return found
