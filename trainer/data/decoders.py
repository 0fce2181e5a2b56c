"""`data.decoder`: how an image file of `data=imagefolder` becomes pixels, per sample in the loader workers.

`pil` decodes with Pillow (`Image.open(...).convert("RGB" or "L")`). `torchvision` reads the file's bytes and
decodes JPEG and 8-bit PNG with torchvision.io (libjpeg-turbo, libpng) straight into a uint8 C x H x W tensor,
which the v2 transforms take as they take a PIL image (their first op turns a PIL image into that tensor anyway);
other formats (BMP, TIFF, GIF, WebP, 16-bit PNG) and files it cannot decode go through Pillow, so both decoders
accept the same files, fail on the same ones, and give the same pixels (JPEG: the same libjpeg-turbo, up to its
rounding). Grey (`data.in_channels=1`) is Pillow's own conversion, L = (19595 R + 38470 G + 7471 B + 2^15) >> 16,
on both.
"""

from __future__ import annotations

import io

import torch
from PIL import Image

from trainer.errors import DataError

JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_BIT_DEPTH = 24  # the IHDR chunk's bit-depth byte: after the signature, the chunk's length, type, width, height
PIL_ERRORS = (OSError, SyntaxError, ValueError)  # PIL's UnidentifiedImageError is an OSError


def unreadable(path: str, err: BaseException) -> DataError:
    """The one-line error for a file no decoder reads."""
    return DataError(f"cannot read image {path}: {err}; fix or remove it, or set data.skip_corrupt=true")


def pil_mode(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


def load_image(path: str, mode: str) -> Image.Image:
    """Decode one file as RGB or grey ("L"), whatever mode it was saved in; a DataError names a bad file."""
    try:
        with open(path, "rb") as handle:
            return Image.open(handle).convert(mode)
    except PIL_ERRORS as err:
        raise unreadable(path, err) from None


def read_bytes(path: str) -> bytearray:
    """The file's bytes (a DataError naming the file when it cannot be read at all)."""
    try:
        with open(path, "rb", buffering=0) as handle:  # one read of the whole file: no buffer to copy through
            return bytearray(handle.read())
    except OSError as err:
        raise unreadable(path, err) from None


def is_jpeg(data: bytes | bytearray) -> bool:
    return data[:3] == JPEG_SIGNATURE


def torchvision_reads(data: bytes | bytearray) -> bool:
    """JPEG, and PNG of up to 8 bits per channel: what torchvision.io decodes to the pixels Pillow gives."""
    return is_jpeg(data) or (data[:8] == PNG_SIGNATURE and len(data) > PNG_BIT_DEPTH and data[PNG_BIT_DEPTH] <= 8)


def to_grey(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB images (... x 3 x H x W, any device) as Pillow's "L": one channel, with Pillow's integer weights."""
    red, green, blue = images.to(torch.int32).unbind(-3)
    return ((red * 19595 + green * 38470 + blue * 7471 + 0x8000) >> 16).to(torch.uint8).unsqueeze(-3)


def decode_bytes(data: bytearray, path: str, channels: int) -> torch.Tensor:
    """One file's bytes as a uint8 `channels` x H x W tensor: torchvision.io for JPEG and 8-bit PNG, else Pillow."""
    if torchvision_reads(data):
        from torchvision.io import ImageReadMode, decode_image

        try:
            image = decode_image(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:  # damaged: Pillow decides whether it can be read, and says why not
            pass
        else:
            return image if channels == 3 else to_grey(image)
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(io.BytesIO(data)) as opened:
            return pil_to_tensor(opened.convert(pil_mode(channels)))
    except PIL_ERRORS as err:
        raise unreadable(path, err) from None


def load_tensor(path: str, channels: int) -> torch.Tensor:
    """`data.decoder=torchvision`'s loader: the file at `path` as a uint8 `channels` x H x W tensor."""
    return decode_bytes(read_bytes(path), path, channels)
