"""`data.decoder`: torchvision's decoders give Pillow's pixels (JPEG up to libjpeg rounding, PNG exactly), the same
labels and classes, and the same errors for files neither can read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.data.decoders import load_image, load_tensor, to_grey
from trainer.data.imagefolder import ImageFolderDataModule
from trainer.errors import DataError


def write_photos(root: Path, per_class: int = 2) -> Path:
    """`root/<class>/<i>.jpg|png`: smooth colour fields with noise, in sizes neither square nor equal."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(("ant", "bee", "cow")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            height, width = 18 + 5 * i + label, 26 - 3 * i
            ramp = np.linspace(0, 200, width)[None, :, None] + np.linspace(0, 50, height)[:, None, None]
            pixels = np.clip(ramp + rng.normal(0, 20, (height, width, 3)) + 30 * label, 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            image.save(root / name / f"{i}.jpg", quality=85)
            image.save(root / name / f"{i}.png")
    return root


def folder_module(tree: Path, channels: int = 3, **keys) -> ImageFolderDataModule:
    """`data=imagefolder` on `tree` (train and val), un-normalised (mean 0, std 1), set up without augmentation."""
    datamodule = ImageFolderDataModule(str(tree), str(tree), mean=[0.0] * channels, std=[1.0] * channels,
                                       **{"batch_size": 4, "num_workers": 0, "num_classes": 3,
                                          "in_channels": channels, "image_size": 16} | keys)
    datamodule.setup()
    return datamodule


def eval_images(tree: Path, decoder: str, channels: int) -> tuple[torch.Tensor, list[int], list[str], list[str]]:
    """Every image of `tree` after the eval transform, with its label and path, and the classes."""
    datamodule = folder_module(tree, channels, decoder=decoder)
    val = datamodule.val_set
    images = torch.stack([val[i][0] for i in range(len(val))])
    return images, [label for _, label in val.samples], [path for path, _ in val.samples], datamodule.classes


@pytest.mark.parametrize("grey", [False, True])
def test_torchvision_decodes_the_pixels_pil_decodes(tmp_path: Path, grey: bool) -> None:
    tree = write_photos(tmp_path / "tree")
    pil, pil_labels, paths, pil_classes = eval_images(tree, "pil", 1 if grey else 3)
    fast, labels, fast_paths, classes = eval_images(tree, "torchvision", 1 if grey else 3)
    assert (labels, fast_paths, classes) == (pil_labels, paths, pil_classes) and classes == ["ant", "bee", "cow"]
    assert pil.shape == fast.shape == (12, 1 if grey else 3, 16, 16)
    png = torch.tensor([path.endswith(".png") for path in paths])
    assert png.sum() == 6
    assert torch.equal(fast[png], pil[png])  # PNG: the very same pixels
    assert (fast[~png] - pil[~png]).abs().max() <= 2 / 255  # JPEG: libjpeg-turbo's rounding at most


def test_files_torchvision_does_not_read_go_through_pillow_and_bad_files_fail_alike(tmp_path: Path) -> None:
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    Image.fromarray(pixels).save(tmp_path / "a.bmp")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "g.png")  # a grey PNG, read as RGB and as grey
    decoded = load_tensor(str(tmp_path / "a.bmp"), channels=3)
    assert decoded.dtype == torch.uint8 and torch.equal(decoded, torch.from_numpy(pixels).permute(2, 0, 1))
    grey_as_rgb = load_tensor(str(tmp_path / "g.png"), channels=3)
    assert torch.equal(grey_as_rgb, torch.from_numpy(pixels[..., 0]).expand(3, 5, 7))
    assert torch.equal(load_tensor(str(tmp_path / "g.png"), channels=1)[0], torch.from_numpy(pixels[..., 0]))
    pil_grey = np.array(load_image(str(tmp_path / "a.bmp"), "L"))
    assert torch.equal(to_grey(decoded)[0], torch.from_numpy(pil_grey))  # Pillow's own RGB -> L weights
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for read in (lambda p: load_tensor(p, channels=3), lambda p: load_image(p, "RGB")):
        with pytest.raises(DataError, match=rf"cannot read image {bad}: .*set data.skip_corrupt=true"):
            read(str(bad))


def test_the_decoder_key_names_its_choices_and_defaults_to_torchvision() -> None:
    from trainer.schema.data import ImageFolderConfig

    assert ImageFolderConfig(train_dir="t", num_classes=3).decoder == "torchvision"
    with pytest.raises(ValueError, match="decoder must be one of torchvision, pil, cuda "):
        ImageFolderConfig(train_dir="t", num_classes=3, decoder="nvjpeg")


@pytest.mark.parametrize("inputs", ["pil", "tensor", "contiguous"])
def test_the_fast_per_sample_pipeline_is_v2s_for_the_same_generator_state(inputs: str) -> None:
    """eval and augment=basic (with erasing) skip v2's per-op dispatch, not its kernels or its draws: the same
    pixels for PIL images and for uint8 tensors laid out as decoders give them (channels last) or contiguous."""
    from trainer.data.augment import basic, standard
    from trainer.data.transforms import FastTransform, eval_transform, resize_ops, train_transform

    fit, stats = resize_ops(19, 16), ([0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    transforms = [eval_transform(*stats, fit), train_transform(basic(16, padding=3), *stats, fit),
                  train_transform(basic(16, erasing=0.5), *stats, fit),
                  train_transform(basic(12, padding=1), *stats, fit)]  # crops inside the image as well
    assert all(isinstance(transform, FastTransform) for transform in transforms)
    assert not isinstance(train_transform(standard(16), *stats, fit), FastTransform)
    rng = np.random.default_rng(1)
    for k in range(12):
        pixels = rng.integers(0, 256, (14 + 2 * k, 24 - k, 3), dtype=np.uint8)
        image = Image.fromarray(pixels) if inputs == "pil" else torch.from_numpy(pixels).permute(2, 0, 1)
        if inputs == "contiguous":
            image = image.contiguous()
        for transform in transforms:
            torch.manual_seed(k)
            fast = transform(image)
            torch.manual_seed(k)
            assert torch.equal(fast, transform.compose(image)) and fast.shape in ((3, 16, 16), (3, 12, 12))


def test_a_16_bit_image_takes_v2s_own_scaling() -> None:
    """The fast per-sample path scales 8-bit images by 1/255; a 16-bit one goes through v2, which scales by its
    dtype's maximum (a 1/255 scaling would give values up to 257)."""
    import numpy as np
    from PIL import Image

    from trainer.data.transforms import eval_transform

    image = Image.fromarray(np.array([[0, 65535], [1000, 30000]], dtype=np.uint16))
    out = eval_transform([0.0], [1.0])(image)
    assert out.max().item() == 1.0 and abs(out[0, 1, 0].item() - 1000 / 65535) < 1e-6


def test_the_fast_flip_compares_its_draw_as_v2_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """v2 flips when torch.rand(1) < p in float32: a draw of exactly float32(0.7) is not below p=0.7 there, though
    it is below 0.7 as a Python float."""
    from torchvision.transforms import v2

    from trainer.data.transforms import FastTransform

    draw = torch.tensor([0.7], dtype=torch.float32)
    monkeypatch.setattr(torch, "rand", lambda *size, **options: draw.clone())
    image = torch.arange(12, dtype=torch.uint8).reshape(1, 3, 4)
    compose = v2.Compose([v2.RandomHorizontalFlip(p=0.7)])
    assert torch.equal(FastTransform(compose)(image), compose(image))
    assert torch.equal(FastTransform(compose)(image), image)  # float32(0.7) >= float32(0.7): no flip


def test_a_uint8_bilinear_resize_skips_v2s_kernel_wrapper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where torch resizes uint8 itself, the fast path calls its kernel straight (v2.Resize keeps its interpolation
    as a string or as the enum: both take it), with v2's pixels; any other interpolation goes through v2."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as F

    from trainer.data import transforms

    monkeypatch.setattr(transforms, "native_uint8_resize", lambda: True)
    calls = []
    real = F.resize_image
    monkeypatch.setattr(F, "resize_image", lambda *args, **options: calls.append(1) or real(*args, **options))
    image = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 20, 27), dtype=np.uint8))
    for interpolation in ("bilinear", v2.InterpolationMode.BILINEAR):
        step = v2.Resize(13, interpolation=interpolation, antialias=True)
        assert torch.equal(transforms.FAST_OPS["Resize"](step)(image), real(image, [13], antialias=True)) and not calls
    transforms.FAST_OPS["Resize"](v2.Resize(13, interpolation=v2.InterpolationMode.NEAREST))(image)
    assert calls == [1]
