"""The data side of the augment contract: uint8 images -> [augment ops] -> float -> normalise -> [erasing].

Also the one-off tensor helpers that in-memory data sets use to decode once and then batch by indexing.
torchvision is imported inside the functions that need it, so unaugmented digits runs never load it.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch.utils.data import Dataset, TensorDataset

if TYPE_CHECKING:
    from torchvision.transforms import v2

    from trainer.data.augment import Augment

Stats = Sequence[float]


@functools.cache
def native_uint8_resize() -> bool:
    """Whether torch resizes uint8 images itself (antialiased bilinear), as v2 decides: AVX2/AVX-512 or ARM CPUs."""
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or \
        platform.machine() in ("aarch64", "arm64")


class TransformedDataset(Dataset):
    """Apply `transform` to the input of each (input, target) sample of `dataset`."""

    def __init__(self, dataset: Dataset, transform: Callable) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        return self.transform(x), y


def eval_transform(mean: Stats, std: Stats, fit: Sequence[v2.Transform] = ()) -> Callable:
    """Image (PIL or uint8 tensor) -> `fit` (resize, centre crop) -> float in [0, 1] -> normalised."""
    from torchvision.transforms import v2

    return fast_or_compose([v2.ToImage(), *fit, v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(list(mean), list(std))])


def resize_ops(resize: int | Sequence[int], center_crop: int | None = None) -> list[v2.Transform]:
    """`DataModule.eval_resize()` as v2 ops: resize (one side: the short side; [h, w]: exactly), then an
    optional centre crop."""
    from torchvision.transforms import v2

    ops: list[v2.Transform] = [v2.Resize(resize if isinstance(resize, int) else list(resize), antialias=True)]
    if center_crop is not None:
        ops.append(v2.CenterCrop(center_crop))
    return ops


def train_transform(augment: Augment | None, mean: Stats, std: Stats,
                    fit: Sequence[v2.Transform] = ()) -> Callable:
    """The eval pipeline with the augment ops on uint8 images and random erasing after normalisation.

    `fit` brings an image of any size to image_size; augment ops that crop to size themselves replace it.
    """
    from torchvision.transforms import v2

    if augment is None:
        return eval_transform(mean, std, fit)
    augment.check_channels(len(mean))
    steps: list[v2.Transform] = [v2.ToImage(), *([] if augment.sizes_itself else fit), *augment.ops,
                                 v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if augment.erasing > 0:
        steps.append(v2.RandomErasing(p=augment.erasing))
    return fast_or_compose(steps)


def fast_or_compose(steps: list[v2.Transform]) -> Callable:
    """`FastTransform(steps)` where it knows every step, else `v2.Compose(steps)`: the same pixels either way."""
    from torchvision.transforms import v2

    compose = v2.Compose(steps)
    return FastTransform(compose) if FastTransform.handles(steps) else compose


class FastTransform:
    """A v2 pipeline of ToImage, Resize, CenterCrop, RandomCrop, RandomHorizontalFlip, ToDtype(float, scale),
    Normalize and RandomErasing run on a PIL image or uint8 tensor through v2's own kernels, without the per-op
    dispatch (pytree flattening, type checks) that costs more than the pixels on small images. Crops are views, a
    padded crop copies only the pixels it keeps into a zero canvas, and Normalize's mean and std are tensors made
    once. Each random op draws from torch's generator exactly as v2's does, in the same order, so the output is
    v2's, pixel for pixel, for the same generator state; any other input goes through the v2 `compose` itself."""

    def __init__(self, compose: v2.Compose) -> None:
        self.compose = compose
        self.ops = [FAST_OPS[type(step).__name__](step) for step in compose.transforms]  # each kernel, chosen once

    @classmethod
    def handles(cls, steps: Sequence[v2.Transform]) -> bool:
        """Whether every step is one of FAST_OPS, with the settings this class runs (float32 output, zero padding)."""
        from torchvision.transforms import v2

        def known(step: v2.Transform) -> bool:
            if type(step).__name__ not in FAST_OPS or not type(step).__module__.startswith("torchvision."):
                return False
            if isinstance(step, v2.ToDtype):
                return step.dtype == torch.float32 and step.scale
            if isinstance(step, v2.RandomCrop):
                return not step.pad_if_needed and step.padding_mode == "constant" and step.fill == 0
            return True

        return all(known(step) for step in steps)

    def __call__(self, image: object) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.v2 import functional as F

        if isinstance(image, Image.Image) and image.mode in ("L", "RGB"):  # 8-bit: ToDtype scales by 1/255
            x = F.pil_to_tensor(image)
        elif isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3:
            x = image.as_subclass(torch.Tensor)
        else:
            return self.compose(image)
        for op in self.ops:
            x = op(x)
        return x


def _unchanged(image: torch.Tensor) -> torch.Tensor:
    return image


def _flip(image: torch.Tensor, p: float) -> torch.Tensor:
    """v2's horizontal flip: it skips the op when torch.rand(1) >= p (a float32 compare)."""
    return image.flip(-1) if torch.rand(1) < p else image


def _to_float(image: torch.Tensor) -> torch.Tensor:
    """ToDtype(float32, scale=True) of an 8-bit image: a new tensor, so the steps after it may work in place."""
    return image.to(torch.float32).mul_(1.0 / 255)


def _normalize(image: torch.Tensor, step: v2.Normalize,
               stats: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """v2.Normalize in place with the mean and std tensors made once; v2's kernel for what they do not cover."""
    if stats and image.dtype == torch.float32:
        return image.sub_(stats[0]).div_(stats[1])
    from torchvision.transforms.v2 import functional as F

    return F.normalize(image, step.mean, step.std, inplace=True)


def _stat_tensors(step: v2.Normalize) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Normalize's mean and std as C x 1 x 1 float32 tensors, as v2's kernel makes them on every call (None when a
    std is 0: v2's kernel then raises its own error)."""
    if any(value == 0 for value in step.std):
        return None
    return torch.tensor(step.mean, dtype=torch.float32).view(-1, 1, 1), \
        torch.tensor(step.std, dtype=torch.float32).view(-1, 1, 1)


def _resize_op(step: v2.Resize) -> Callable[[torch.Tensor], torch.Tensor]:
    """v2.Resize as a function of a C x H x W image: an antialiased bilinear resize of the short side goes straight
    to torch's native uint8 kernel where it can (`_short_side_resize`); any other resize is v2's kernel."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    kernel = functools.partial(F.resize_image, size=step.size, interpolation=step.interpolation,
                               max_size=step.max_size, antialias=step.antialias)
    size = [step.size] if isinstance(step.size, int) else step.size
    bilinear = step.interpolation in (InterpolationMode.BILINEAR, InterpolationMode.BILINEAR.value)  # v2 keeps either
    if bilinear and step.antialias and step.max_size is None and size is not None and len(size) == 1:
        return functools.partial(_short_side_resize, short=size[0], kernel=kernel)
    return kernel


def _short_side_resize(image: torch.Tensor, short: int, kernel: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """A uint8 CPU image's short side antialiased to `short` by torch's native uint8 kernel (the one v2 calls, with
    v2's output size and batch stride); other images go to v2's `kernel`."""
    if not (image.dtype == torch.uint8 and image.device.type == "cpu" and native_uint8_resize()):
        return kernel(image)
    channels, height, width = image.shape
    short_side, long = (width, height) if width <= height else (height, width)
    new_short, new_long = short, int(short * long / short_side)
    new_h, new_w = (new_long, new_short) if width <= height else (new_short, new_long)
    if (new_h, new_w) == (height, width):
        return image
    batch = image.as_strided((1, channels, height, width), (image.numel(), *image.stride()))
    return torch.nn.functional.interpolate(batch, size=[new_h, new_w], mode="bilinear", align_corners=False,
                                           antialias=True)[0]


def _center_crop(image: torch.Tensor, crop_h: int, crop_w: int) -> torch.Tensor:
    """v2's centre crop as a view (its anchor rounding); an image smaller than the crop goes to v2's kernel."""
    height, width = image.shape[-2:]
    if crop_h > height or crop_w > width:
        from torchvision.transforms.v2 import functional as F

        return F.center_crop_image(image, [crop_h, crop_w])
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return image[..., top:top + crop_h, left:left + crop_w]


def _random_crop(image: torch.Tensor, step: v2.RandomCrop) -> torch.Tensor:
    """v2.RandomCrop (zero padding, no pad_if_needed) with its draws, the top offset then the left one, into the
    padded image; only the pixels the crop keeps are copied onto zeros."""
    pad_left, pad_right, pad_top, pad_bottom = step.padding if step.padding is not None else (0, 0, 0, 0)
    height, width = image.shape[-2:]
    padded_h, padded_w = height + pad_top + pad_bottom, width + pad_left + pad_right
    crop_h, crop_w = step.size
    if padded_h < crop_h or padded_w < crop_w:
        raise ValueError(f"Required crop size {(crop_h, crop_w)} is larger than input image size "
                         f"{(padded_h, padded_w)}.")
    top = int(torch.randint(0, padded_h - crop_h + 1, size=())) - pad_top if padded_h > crop_h else -pad_top
    left = int(torch.randint(0, padded_w - crop_w + 1, size=())) - pad_left if padded_w > crop_w else -pad_left
    if top >= 0 and left >= 0 and top + crop_h <= height and left + crop_w <= width:
        return image[..., top:top + crop_h, left:left + crop_w]
    out = image.new_zeros((*image.shape[:-2], crop_h, crop_w))
    rows, cols = slice(max(top, 0), min(top + crop_h, height)), slice(max(left, 0), min(left + crop_w, width))
    if rows.start < rows.stop and cols.start < cols.stop:
        out[..., rows.start - top:rows.stop - top, cols.start - left:cols.stop - left] = image[..., rows, cols]
    return out


# The steps FastTransform runs, by v2 class name: each makes the function of a C x H x W tensor for one step.
FAST_OPS: dict[str, Callable[[v2.Transform], Callable[[torch.Tensor], torch.Tensor]]] = {
    "ToImage": lambda step: _unchanged,  # the input is a tensor already
    "Resize": _resize_op,
    "CenterCrop": lambda step: functools.partial(_center_crop, crop_h=step.size[0], crop_w=step.size[1]),
    "RandomCrop": lambda step: functools.partial(_random_crop, step=step),
    "RandomHorizontalFlip": lambda step: functools.partial(_flip, p=step.p),
    "ToDtype": lambda step: _to_float,
    "Normalize": lambda step: functools.partial(_normalize, step=step, stats=_stat_tensors(step)),
    "RandomErasing": lambda step: step,
}


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """N x C x H x W uint8 images resized once (antialiased) to size x size; unchanged when already there."""
    from torchvision.transforms import v2

    if images.shape[-2:] == (size, size):
        return images
    return v2.functional.resize(images, [size, size], antialias=True)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey N x 1 x H x W images repeated to `channels`; other counts must already match (schemas check)."""
    if images.shape[1] == channels:
        return images
    if images.shape[1] != 1:
        raise ValueError(f"cannot turn {images.shape[1]}-channel images into {channels} channels")
    return images.expand(-1, channels, -1, -1).contiguous()


def normalized_tensors(images: torch.Tensor, labels: torch.Tensor, mean: Stats, std: Stats) -> TensorDataset:
    """uint8 images as one normalised float tensor: the loader then slices whole batches without Python."""
    floats = images.to(torch.float32).div_(255)
    floats.sub_(torch.tensor(mean).view(1, -1, 1, 1)).div_(torch.tensor(std).view(1, -1, 1, 1))
    return TensorDataset(floats, labels)


def image_tensor_sets(train_images: torch.Tensor, train_labels: torch.Tensor, val_images: torch.Tensor,
                      val_labels: torch.Tensor, mean: Stats, std: Stats,
                      augment: Augment | None) -> tuple[Dataset, Dataset]:
    """Train/val sets from uint8 tensors: normalised tensors, or per-sample v2 augmentation for training."""
    val = normalized_tensors(val_images, val_labels, mean, std)
    if augment is None:
        return normalized_tensors(train_images, train_labels, mean, std), val
    transform = train_transform(augment, mean, std)
    return TransformedDataset(TensorDataset(train_images, train_labels), transform), val

