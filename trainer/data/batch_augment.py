"""`augment=basic` as batched tensor ops, for `data.in_memory=true`: crop, flip and erase whole batches at once.

Same semantics as the per-sample v2 pipeline: `RandomCrop(size, padding=p)` with zero padding (offsets uniform
on 0..2p per axis), then `RandomHorizontalFlip(p)`, then conversion and normalisation, then `RandomErasing`
(torchvision's defaults: scale 0.02..0.33, ratio 0.3..3.3, up to 10 tries, value 0). The random numbers for a
whole epoch are drawn up front from one generator, one row per position in the epoch's order. With
`alternating_flip` a flip belongs to the image, not the position: drawn once per image for the first epoch, then
inverted in every odd one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from trainer.errors import ConfigError

if TYPE_CHECKING:
    from trainer.data.augment import Augment

SUPPORTED = ("none", "basic")
ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)
ERASE_TRIES = 10


@dataclass(frozen=True)
class EpochDraws:
    """One epoch's random numbers, row p for position p of the epoch's order (None: that op is off)."""

    offsets: torch.Tensor | None  # n x 2 int64: crop (top, left) in the padded image, each in 0..2p
    flips: torch.Tensor | None  # n bool
    erase: torch.Tensor | None  # n x 4 int64: (top, left, height, width) of the erased box; height 0: none


@dataclass(frozen=True)
class BatchAugment:
    """Crop padding, flip probability and erasing probability; all zero means no augmentation."""

    image_size: int
    padding: int = 0
    flip: float = 0.0
    erasing: float = 0.0
    alternating_flip: bool = False

    @classmethod
    def from_augment(cls, augment: Augment | None, image_size: int, setting: str = "data.in_memory=true",
                     instead: str = "data.in_memory=false") -> BatchAugment:
        """The batched form of `augment=none` or `augment=basic`, from the numbers its ops were built from
        (`Augment.crop_flip`, `Augment.erasing`); a ConfigError for any other option. `setting` is the key that
        asks for batched augmentation, `instead` the one that does without, as the errors name them."""
        if augment is None:
            return cls(image_size)
        if augment.name not in SUPPORTED:
            raise ConfigError(f"augment={augment.name} cannot run with {setting}, which supports "
                              f"augment={' and augment='.join(SUPPORTED)} only; choose one of those, or set {instead}")
        geometry = augment.crop_flip
        if geometry is None or (geometry.padding and geometry.size != image_size):
            crop = "no crop parameters" if geometry is None else f"a {geometry.size}x{geometry.size} crop"
            raise ConfigError(f"{setting} runs augment={augment.name} on the device as a zero-padded "
                              f"{image_size}x{image_size} random crop and flip, but this augment has {crop}; "
                              f"set augment.image_size={image_size}, or {instead}")
        return cls(image_size, geometry.padding, geometry.flip, float(augment.erasing), geometry.alternating)

    @property
    def active(self) -> bool:
        return bool(self.padding or self.flip or self.erasing)

    def draw(self, n: int, generator: torch.Generator) -> EpochDraws:
        """Random numbers for `n` positions, on the generator's device, always drawn in the same order."""
        device = generator.device
        offsets = flips = erase = None
        if self.padding:
            offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator, device=device)
        if self.flip and not self.alternating_flip:  # alternating flips come from `image_flips`
            flips = torch.rand(n, generator=generator, device=device) < self.flip
        if self.erasing:
            erase = self._draw_erasing(n, generator)
        return EpochDraws(offsets, flips, erase)

    def image_flips(self, images: int, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """`alternating_flip`'s flip of each image in `epoch`: a draw per image from `generator` (seeded the same for
        every epoch), inverted in odd epochs."""
        first = torch.rand(images, generator=generator, device=generator.device) < self.flip
        return first ^ bool(epoch % 2)

    def _draw_erasing(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """RandomErasing's box per position: the first of 10 tries (area, aspect ratio) that fits, if any."""
        device, size = generator.device, self.image_size
        apply = torch.rand(n, generator=generator, device=device) < self.erasing
        area = size * size * torch.empty(n, ERASE_TRIES, device=device).uniform_(*ERASE_SCALE, generator=generator)
        log_ratio = torch.empty(n, ERASE_TRIES, device=device).uniform_(
            math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), generator=generator)
        heights = torch.sqrt(area * log_ratio.exp()).round().long()
        widths = torch.sqrt(area / log_ratio.exp()).round().long()
        fits = (heights < size) & (widths < size)
        first = fits.long().argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does)
        found = apply & fits.any(dim=1)
        height = heights.gather(1, first).squeeze(1) * found
        width = widths.gather(1, first).squeeze(1) * found
        corner = torch.rand(n, 2, generator=generator, device=device)
        top = (corner[:, 0] * (size - height + 1)).floor().long().clamp_(max=size - height)
        left = (corner[:, 1] * (size - width + 1)).floor().long().clamp_(max=size - width)
        return torch.stack([top, left, height, width], dim=1)

    def crop_flip(self, images: torch.Tensor, offsets: torch.Tensor | None, flips: torch.Tensor | None
                  ) -> torch.Tensor:
        """B x C x H x W images (any dtype) padded with zeros once, then gathered at per-sample offsets."""
        if offsets is None and flips is None:
            return images
        batch, channels, height, width = images.shape
        device = images.device
        rows = torch.arange(height, device=device).expand(batch, height)
        cols = torch.arange(width, device=device).expand(batch, width)
        if offsets is not None:
            images = F.pad(images, (self.padding,) * 4)
            rows = rows + offsets[:, :1]
            cols = cols + offsets[:, 1:]
        if flips is not None:
            cols = torch.where(flips[:, None], cols.flip(1), cols)
        index_b = torch.arange(batch, device=device).view(-1, 1, 1, 1)
        index_c = torch.arange(channels, device=device).view(1, -1, 1, 1)
        return images[index_b, index_c, rows[:, None, :, None], cols[:, None, None, :]]

    @staticmethod
    def erase(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Zero each sample's (top, left, height, width) box of normalised B x C x H x W images, in place."""
        height, width = images.shape[-2:]
        rows = torch.arange(height, device=images.device)
        cols = torch.arange(width, device=images.device)
        top, left, box_h, box_w = boxes.unbind(1)
        in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])
        in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])
        return images.masked_fill_((in_rows[:, :, None] & in_cols[:, None, :])[:, None], 0.0)

