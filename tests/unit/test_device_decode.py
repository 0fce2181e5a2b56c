"""`data.decoder=cuda`: the batched decode-and-augment path, run on the CPU as on the GPU (its every step takes the
device), against the per-sample pipeline: the same eval tensors, the same augmentation distributions, the same
colour ops given the same factors, and batches that a mid-epoch resume replays. The GPU run itself is the last
test, skipped without CUDA."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from tests.unit.test_decoders import write_photos
from trainer.data import device_decode
from trainer.data.augment import autoaugment, basic, standard
from trainer.data.batch_standard import color_jitter, crop_boxes, draw_resized_crops, flip
from trainer.data.device_decode import FolderAugment, PositionDraws
from trainer.data.imagefolder import ImageFolderDataModule
from trainer.errors import ConfigError, DataError

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("single_thread")  # small tensor ops: far faster on one thread of a busy machine


def folder_module(tree: Path, decoder: str, augment=None, device: torch.device = CPU, **keys) -> ImageFolderDataModule:
    """`data=imagefolder` on `tree` (train and val), set up; decoder=cuda decodes on `device` (the CPU here)."""
    datamodule = ImageFolderDataModule(str(tree), str(tree), decoder=decoder, **{
        "batch_size": 4, "num_workers": 0, "num_classes": 3, "in_channels": 3, "image_size": 16} | keys)
    datamodule.decode_device = lambda requested: device  # the GPU check, which the last test exercises
    datamodule.setup(augment)
    return datamodule


@pytest.mark.parametrize("channels", [3, 1])
def test_batched_eval_batches_are_the_per_sample_eval_tensors(tmp_path: Path, channels: int) -> None:
    tree = write_photos(tmp_path / "tree")  # JPEGs (one batched decode_jpeg call) and PNGs (CPU fallback)
    stats = {"mean": [0.5] * channels, "std": [0.25] * channels, "in_channels": channels}
    batched, per_sample = folder_module(tree, "cuda", **stats), folder_module(tree, "torchvision", **stats)
    ours, theirs = list(batched.val_loader()), list(per_sample.val_loader())
    assert len(ours) == len(theirs) == 2 and ours[0][0].shape == (8, channels, 16, 16)  # eval batch 2 x 4
    for (x, y), (x_ref, y_ref) in zip(ours, theirs, strict=True):
        assert torch.equal(y, y_ref) and x.dtype == torch.float32
        torch.testing.assert_close(x, x_ref, atol=1e-5, rtol=0)


def test_a_file_no_decoder_reads_is_one_error_naming_it(tmp_path: Path) -> None:
    tree = write_photos(tmp_path / "tree", per_class=1)
    bad = tree / "bee" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(DataError, match=rf"cannot read image {bad}: .*data.skip_corrupt=true"):
        list(folder_module(tree, "cuda").val_loader())


def test_decoder_cuda_needs_a_gpu_and_a_batched_augment_option(tmp_path: Path) -> None:
    tree = write_photos(tmp_path / "tree", per_class=1)
    datamodule = ImageFolderDataModule(str(tree), decoder="cuda", val_fraction=0.5, batch_size=4, num_workers=0,
                                       num_classes=3, in_channels=3, image_size=16)
    datamodule.setup(None)
    with pytest.raises(ConfigError, match=r"data.decoder=cuda decodes with nvjpeg on a CUDA device, but this run's "
                                          r"device is cpu; set data.decoder=torchvision .* or data.decoder=pil"):
        datamodule.train_loader(seed=0, device=CPU)
    with pytest.raises(ConfigError, match="augment=autoaugment cannot run with data.decoder=cuda, which runs "
                                          "augment=none, basic, standard"):
        FolderAugment.from_augment(autoaugment(16), 16)
    with pytest.raises(ConfigError, match="augment=standard's images to data.image_size=16, but the augment crops "
                                          "to 24"):
        FolderAugment.from_augment(standard(24), 16)


def test_a_mid_epoch_start_replays_the_rest_of_the_epoch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(device_decode, "CHUNK", 5)  # batches that straddle draw chunks
    tree = write_photos(tmp_path / "tree", per_class=2)
    for augment in (basic(16, erasing=0.5), standard(16, erasing=0.5)):
        whole, resumed = folder_module(tree, "cuda", augment), folder_module(tree, "cuda", augment)
        loader, resumed_loader = whole.train_loader(seed=4), resumed.train_loader(seed=4)
        whole.set_train_epoch(1)
        epoch = [x for x, _ in loader]
        resumed.set_train_epoch(1, start_batch=1)
        assert len(epoch) == 3 and all(map(torch.equal, [x for x, _ in resumed_loader], epoch[1:]))
        whole.set_train_epoch(2)
        assert not torch.equal(next(iter(loader))[0], epoch[0])


def test_position_draws_are_the_rows_of_one_whole_epoch_draw(monkeypatch) -> None:
    monkeypatch.setattr(device_decode, "CHUNK", 4)
    augment = FolderAugment.from_augment(standard(8, erasing=0.5), 8)
    draws = PositionDraws(11, augment.draw)
    whole = draws.rows(torch.arange(12))
    scattered = PositionDraws(11, augment.draw).rows(torch.tensor([9, 0, 5, 11]))
    assert set(whole) == {"area", "log_ratio", "corner", "flips", "factors", "order", "erase"}
    for key, values in whole.items():
        assert torch.equal(scattered[key], values[[9, 0, 5, 11]]), key
        assert not torch.equal(PositionDraws(12, augment.draw).rows(torch.arange(12))[key], values)


def box_stats(boxes: torch.Tensor, height: int, width: int) -> list[float]:
    """Mean area share, log aspect ratio, relative corner, and how often the crop is the image's full height."""
    top, left, h, w = boxes.unbind(1)
    return [(h * w).mean().item() / (height * width), (w / h).log().mean().item(),
            (top / (height - h + 1)).mean().item(), (left / (width - w + 1)).mean().item(),
            (h == height).double().mean().item()]


def test_crop_boxes_follow_random_resized_crop() -> None:
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    recipe, n = standard(16).resized_crop, 800
    torch.manual_seed(0)
    for height, width in ((24, 40), (6, 60)):  # 6 x 60: most tries do not fit, the central crop then
        image = [tv_tensors.Image(torch.zeros(3, height, width, dtype=torch.uint8))]
        crop = v2.RandomResizedCrop(16, scale=recipe.scale, ratio=recipe.ratio)
        theirs = torch.tensor([list(crop.make_params(image).values()) for _ in range(n)], dtype=torch.float64)
        draws = draw_resized_crops(n, recipe, torch.Generator().manual_seed(1))
        ours = crop_boxes(torch.full((n,), height), torch.full((n,), width), draws["area"], draws["log_ratio"],
                          draws["corner"], recipe.ratio).double()
        for boxes in (ours, theirs):
            assert (boxes[:, 2:] > 0).all() and (boxes[:, 0] + boxes[:, 2] <= height).all()
            assert (boxes[:, 1] + boxes[:, 3] <= width).all() and (boxes[:, :2] >= 0).all()

        torch.testing.assert_close(box_stats(ours, height, width), box_stats(theirs, height, width), atol=0.03,
                                   rtol=0)


def test_color_jitter_equals_torchvision_kernels_for_the_same_factors_and_order() -> None:
    from torchvision.transforms.v2 import functional as F

    kernels = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    orders = torch.tensor(list(itertools.permutations(range(3))))  # all 6 orders
    generator = torch.Generator().manual_seed(0)
    for channels in (3, 1):
        images = torch.randint(0, 256, (6, channels, 9, 7), dtype=torch.uint8, generator=generator)
        factors = torch.empty(6, 3).uniform_(0.6, 1.4, generator=generator)
        ours = color_jitter(images, factors, orders)
        for image, image_factors, order, got in zip(images, factors, orders, ours, strict=True):
            expected = image
            for op in order.tolist():
                expected = kernels[op](expected, image_factors[op].item())
            assert (got.int() - expected.int()).abs().max() <= 1  # float rounding before the floor, at most
            assert (got != expected).double().mean() < 0.02
    assert torch.equal(flip(images, torch.tensor([True, False] * 3))[0], images[0].flip(-1))


def marker_images(count: int) -> list[torch.Tensor]:
    """Grey-blue images with a bright right third, of different sizes: a flip moves brightness to the left."""
    images = []
    for k in range(count):
        height, width = 20 + 3 * k, 26 - 2 * k
        image = torch.full((3, height, width), 60, dtype=torch.uint8)
        image[2] = 140
        image[:, :, 2 * width // 3:] = 230
        images.append(image)
    return images


@pytest.mark.parametrize("name", ["basic", "standard"])
def test_batched_augmentation_statistics_match_the_per_sample_pipeline(name: str) -> None:
    """Over 256 samples of 4 images: the mean output per column (where crops and flips put the bright side) and per
    row, and each channel's mean and spread (which the colour jitter widens)."""
    from trainer.data.transforms import resize_ops, train_transform

    size, n = 16, 256
    augment = basic(size, padding=3) if name == "basic" else standard(size, scale_min=0.2, color_jitter=0.4)
    fit = resize_ops(round(size / 0.875), size)
    per_sample = train_transform(augment, [0.0] * 3, [1.0] * 3, fit)
    images = marker_images(4) * (n // 4)
    torch.manual_seed(0)
    theirs = torch.stack([per_sample(image) for image in images])
    batched = FolderAugment.from_augment(augment, size)
    rows = PositionDraws(5, batched.draw).rows(torch.arange(n))
    ours = batched.apply(images, rows, lambda found: device_decode.fit(found, round(size / 0.875), size))
    assert ours.dtype == torch.uint8 and ours.shape == theirs.shape == (n, 3, size, size)
    ours = ours.float() / 255

    def stats(batch: torch.Tensor) -> list[torch.Tensor]:
        return [batch.mean((0, 1, 2)), batch.mean((0, 1, 3)), batch.mean((0, 2, 3)), batch.std((0, 2, 3))]

    columns, rows_mean, means, spreads = stats(ours)
    assert (columns - columns.flip(0)).abs().max() < 0.15  # flipped half the time: the bright third on both sides
    for got, expected, tolerance in zip(stats(ours), stats(theirs), (0.12, 0.12, 0.05, 0.025), strict=True):
        torch.testing.assert_close(got, expected, atol=tolerance, rtol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="decoder=cuda's GPU run needs CUDA")
def test_decoder_cuda_on_the_gpu(tmp_path: Path) -> None:
    """nvjpeg's eval batches are libjpeg-turbo's up to decoder rounding; a standard epoch replays on resume."""
    tree = write_photos(tmp_path / "tree", per_class=3)
    gpu = torch.device("cuda")
    stats = {"mean": [0.0] * 3, "std": [1.0] * 3}
    on_gpu, per_sample = folder_module(tree, "cuda", device=gpu, **stats), folder_module(tree, "torchvision", **stats)
    ImageFolderDataModule.decode_device(on_gpu, None)  # the real check passes on a GPU
    ours, theirs = list(on_gpu.val_loader(pin_memory=True, device=gpu)), list(per_sample.val_loader())
    for (x, y), (x_ref, y_ref) in zip(ours, theirs, strict=True):
        assert x.device.type == "cuda" and torch.equal(y.cpu(), y_ref)
        assert (x.cpu() - x_ref).abs().max() <= 8 / 255 and (x.cpu() - x_ref).abs().mean() <= 1 / 255
    augment = standard(16, erasing=0.5)
    whole, resumed = (folder_module(tree, "cuda", augment, device=gpu) for _ in range(2))
    loader, resumed_loader = whole.train_loader(4, True, gpu), resumed.train_loader(4, True, gpu)
    whole.set_train_epoch(1)
    resumed.set_train_epoch(1, start_batch=2)
    epoch = [x for x, _ in loader]
    assert epoch[0].device.type == "cuda" and all(bool(x.isfinite().all()) for x in epoch)
    assert all(map(torch.equal, [x for x, _ in resumed_loader], epoch[2:]))
