"""`augment=standard` as batched tensor ops, for `data.decoder=cuda`: the same semantics as its per-sample v2 ops.

RandomResizedCrop: up to 10 tries of (area share uniform on `scale`, aspect ratio log-uniform on `ratio`), the
first whose rounded size fits the image, at a uniform corner; else the central crop at the nearest allowed ratio;
then an antialiased bilinear resize to size x size. RandomHorizontalFlip(p). ColorJitter(b, c, s): brightness,
contrast and saturation factors uniform on [max(0, 1 - x), 1 + x], applied in a random order, each rounding down
to whole uint8 levels as torchvision's uint8 kernels do. The crop boxes are computed on the CPU from the images'
sizes (which the host knows without waiting for the device); the pixels never leave the device.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from trainer.data.augment import ResizedCrop

TRIES = 10
GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale


def draw_resized_crops(n: int, recipe: ResizedCrop, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The random numbers of `n` crops, flips and jitters, always drawn in the same order from `generator`."""
    device = generator.device
    low, high = math.log(recipe.ratio[0]), math.log(recipe.ratio[1])
    draws = {"area": torch.empty(n, TRIES, device=device).uniform_(*recipe.scale, generator=generator),
             "log_ratio": torch.empty(n, TRIES, device=device).uniform_(low, high, generator=generator),
             "corner": torch.rand(n, 2, generator=generator, device=device)}
    if recipe.flip:
        draws["flips"] = torch.rand(n, generator=generator, device=device) < recipe.flip
    if recipe.jitter:
        lowest = max(0.0, 1.0 - recipe.jitter)
        draws["factors"] = torch.empty(n, 3, device=device).uniform_(lowest, 1.0 + recipe.jitter, generator=generator)
        draws["order"] = torch.rand(n, 3, generator=generator, device=device).argsort(dim=1)
    return draws


def crop_boxes(heights: torch.Tensor, widths: torch.Tensor, area: torch.Tensor, log_ratio: torch.Tensor,
               corner: torch.Tensor, ratio: tuple[float, float]) -> torch.Tensor:
    """RandomResizedCrop's (top, left, height, width) per image (int64 B x 4, on the CPU) from its draws."""
    heights, widths = heights.to(torch.float64)[:, None], widths.to(torch.float64)[:, None]
    target = heights * widths * area.to(torch.float64)
    aspect = log_ratio.to(torch.float64).exp()
    crop_w = torch.sqrt(target * aspect).round()
    crop_h = torch.sqrt(target / aspect).round()
    fits = (crop_w > 0) & (crop_w <= widths) & (crop_h > 0) & (crop_h <= heights)
    first = fits.to(torch.int64).argmax(dim=1, keepdim=True)
    found = fits.any(dim=1)
    crop_h, crop_w = crop_h.gather(1, first).squeeze(1), crop_w.gather(1, first).squeeze(1)
    heights, widths = heights.squeeze(1), widths.squeeze(1)
    top = (corner[:, 0].to(torch.float64) * (heights - crop_h + 1)).floor().clamp(max=heights - crop_h)
    left = (corner[:, 1].to(torch.float64) * (widths - crop_w + 1)).floor().clamp(max=widths - crop_w)
    # No try fits: the central crop, its aspect ratio clamped to `ratio`.
    in_ratio = widths / heights
    centre_w = torch.where(in_ratio > ratio[1], (heights * ratio[1]).round(), widths)
    centre_h = torch.where(in_ratio < ratio[0], (widths / ratio[0]).round(), heights)
    centre_top, centre_left = ((heights - centre_h) / 2).floor(), ((widths - centre_w) / 2).floor()
    boxes = torch.stack([torch.where(found, top, centre_top), torch.where(found, left, centre_left),
                         torch.where(found, crop_h, centre_h), torch.where(found, crop_w, centre_w)], dim=1)
    return boxes.to(torch.int64)


def resized_crops(images: list[torch.Tensor], boxes: list[list[int]], size: int) -> torch.Tensor:
    """Each C x H x W image cropped to its (top, left, height, width) box and resized to size x size (antialiased
    bilinear, as RandomResizedCrop), stacked into one B x C x size x size batch on the images' device."""
    from torchvision.transforms.v2 import functional as F

    return torch.stack([F.resized_crop(image, *box, [size, size], antialias=True)
                        for image, box in zip(images, boxes, strict=True)])


def flip(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """B x C x H x W images mirrored left-right where `flips` (B bool, on their device) is set."""
    return torch.where(flips.view(-1, 1, 1, 1), images.flip(-1), images)


def _grey(levels: torch.Tensor) -> torch.Tensor:
    """B x 1 x H x W luma of float RGB levels, floored as torchvision's uint8 kernels floor it."""
    red, green, blue = levels.unbind(1)
    return (red * GREY_WEIGHTS[0] + green * GREY_WEIGHTS[1] + blue * GREY_WEIGHTS[2]).floor_().unsqueeze(1)


def _blend(levels: torch.Tensor, other: torch.Tensor | float, factor: torch.Tensor) -> torch.Tensor:
    return (levels * factor + other * (1 - factor)).clamp_(0, 255).floor_()


def color_jitter(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """uint8 B x C x H x W images (C 1 or 3) with per-image brightness, contrast and saturation `factors` (B x 3)
    applied in per-image `order` (B x 3, a permutation of 0, 1, 2 per row), all on the images' device."""
    levels = images.to(torch.float32)
    factors = factors.to(torch.float32).view(-1, 3, 1, 1, 1)
    colour = images.shape[1] == 3
    for step in range(3):
        for op in range(3):
            if op == 2 and not colour:  # saturation leaves grey images as they are
                continue
            factor = factors[:, op]
            if op == 0:
                changed = _blend(levels, 0.0, factor)
            elif op == 1:
                grey = _grey(levels) if colour else levels
                changed = _blend(levels, grey.mean(dim=(1, 2, 3), keepdim=True), factor)
            else:
                changed = _blend(levels, _grey(levels), factor)
            levels = torch.where((order[:, step] == op).view(-1, 1, 1, 1), changed, levels)
    return levels.to(torch.uint8)
