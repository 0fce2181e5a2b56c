"""Every augment option runs on every kind of data; flips, crops and erasing do what their keys say."""

from __future__ import annotations

import copy
import re
from functools import cache

import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import TensorDataset

from tests.conftest import CONFIGS, compose, data_overrides
from trainer.build import build_data
from trainer.data.augment import Augment, CropFlip, autoaugment, basic, randaugment, standard, trivialaugment
from trainer.data.transforms import train_transform
from trainer.errors import ConfigError
from trainer.schema import validate

AUGMENTS = sorted(path.stem for path in (CONFIGS / "augment").glob("*.yaml"))
# Each data kind the augment ops meet: float digits (quantised), random PIL images, grey and RGB uint8
# tensors, and variable-size decoded files.
DATA_KINDS = ["digits", "fake", "mnist", "cifar10", "imagefolder"]


@cache
def composed(*overrides: str):
    """Composing costs a fraction of a second: compose each config once, and copy it before changing it."""
    return compose(*overrides)


def with_augment(cfg, option: str):
    """`cfg` with the augment node of `augment=option`; its image_size then follows this cfg's data."""
    cfg = copy.deepcopy(cfg)
    cfg.augment = composed(f"augment={option}").augment
    validate(cfg)
    return cfg


def augment(option: str, *overrides: str) -> Augment | None:
    cfg = compose(f"augment={option}", *overrides)
    validate(cfg)
    return instantiate(cfg.augment)


@pytest.fixture(scope="module")
def data_configs(tmp_path_factory) -> dict:
    """One composed config per data kind, the file-based ones pointed at tiny real-format sets."""
    return {kind: composed(f"data={kind}", *data_overrides(kind, tmp_path_factory.mktemp(kind)))
            for kind in DATA_KINDS}


def is_mirrored(x: torch.Tensor) -> bool:
    """For an image bright on the left and dark on the right: did it come out the other way round?"""
    half = x.shape[-1] // 2
    return bool(x[..., half:].mean() > x[..., :half].mean())


@pytest.mark.parametrize("data", DATA_KINDS)
@pytest.mark.parametrize("option", AUGMENTS)
def test_every_option_runs_on_every_data_kind(option: str, data: str, data_configs: dict) -> None:
    cfg = with_augment(data_configs[data], option)
    datamodule = build_data(cfg)
    if data in ("digits", "mnist", "cifar10"):  # in-memory sets: batched by indexing unless augmented
        assert isinstance(datamodule.train_set, TensorDataset) == (option == "none")
    size, channels = cfg.data.image_size, cfg.data.in_channels
    for index in range(3):
        x, y = datamodule.train_set[index]
        assert x.shape == (channels, size, size) and x.dtype == torch.float32 and torch.isfinite(x).all()
        assert 0 <= int(y) < cfg.data.num_classes
    batch_x, _ = next(iter(datamodule.train_loader(seed=0)))
    assert batch_x.shape[1:] == (channels, size, size)


def test_augmentation_keeps_the_normalisation_of_the_plain_sets() -> None:
    """An augment whose ops are all off gives back the unaugmented digits (up to uint8 quantisation)."""
    plain = build_data(composed("data=digits"))
    identity = build_data(compose("data=digits", "augment=basic", "augment.padding=0", "augment.flip=false"))
    for index in (0, 7, 100):
        torch.testing.assert_close(identity.train_set[index][0], plain.train_set[index][0], atol=0.01, rtol=0)


def test_basic_without_flip_never_flips_and_with_flip_flips_about_half() -> None:
    image = torch.zeros(1, 16, 16, dtype=torch.uint8)
    image[..., :8] = 255
    torch.manual_seed(0)
    no_flip = train_transform(basic(16, flip=False), [0.5], [0.5])
    assert not any(is_mirrored(no_flip(image)) for _ in range(200))
    flip = train_transform(basic(16, flip=True), [0.5], [0.5])
    flips = sum(is_mirrored(flip(image)) for _ in range(400))
    assert 150 < flips < 250  # Binomial(400, 0.5): outside this is > 5 standard deviations away


def test_basic_flip_key_reaches_the_transform() -> None:
    assert not any("Flip" in type(op).__name__ for op in augment("basic", "augment.flip=false").ops)
    assert any("Flip" in type(op).__name__ for op in augment("basic").ops)


def test_random_crop_with_padding_keeps_the_size_and_shifts() -> None:
    image = torch.arange(32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(1, 32, 32)
    transform = train_transform(basic(32, padding=4, flip=False), [0.0], [1.0])
    torch.manual_seed(0)
    outputs = [transform(image) for _ in range(20)]
    assert all(out.shape == (1, 32, 32) for out in outputs)
    original = image.float() / 255
    assert sum(not torch.equal(out, original) for out in outputs) >= 15  # a shift of 0, 0 is 1 in 81
    assert any((out == 0).any() for out in outputs)  # the zero padding shows at the borders


def test_padding_defaults_to_an_eighth_of_the_image() -> None:
    crop = augment("basic", "data=fake", "data.image_size=32").ops[0]
    assert crop.padding == [4, 4, 4, 4]
    assert all("Crop" not in type(op).__name__ for op in augment("basic", "augment.padding=0").ops)


@pytest.mark.parametrize("builder", [basic, autoaugment, randaugment, trivialaugment])
def test_crop_flip_keeps_the_numbers_the_crop_and_flip_ops_were_built_from(builder) -> None:
    built = builder(32, padding=3)
    crop, flip = built.ops[:2]
    assert built.crop_flip == CropFlip(32, 3, 0.5)
    assert (list(crop.size), crop.padding, flip.p) == ([32, 32], [3, 3, 3, 3], 0.5)
    assert builder(24).crop_flip == CropFlip(24, 3, 0.5)  # padding null: image_size // 8
    plain = builder(32, padding=0, flip=False)
    assert plain.crop_flip == CropFlip(32, 0, 0.0)
    assert not any("Crop" in type(op).__name__ or "Flip" in type(op).__name__ for op in plain.ops)


def test_standard_crops_any_input_to_image_size() -> None:
    big = Image.new("RGB", (90, 60), (120, 40, 200))
    transform = train_transform(standard(24), [0.5] * 3, [0.5] * 3, fit=())
    assert transform(big).shape == (3, 24, 24)


def test_random_erasing_runs_after_normalisation() -> None:
    white = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    transform = train_transform(basic(32, padding=0, flip=False, erasing=1.0), [0.5] * 3, [0.25] * 3)
    torch.manual_seed(0)
    out = transform(white)
    assert torch.isclose(out, torch.tensor(2.0)).any()  # normalised white: (1 - 0.5) / 0.25
    assert (out == 0).any()  # the erased patch, filled with 0 = the data set's mean


def test_autoaugment_policies_and_randaugment_keys() -> None:
    assert augment("autoaugment", "augment.policy=svhn").ops[-1].policy.value == "svhn"
    for policy in ("imagenet", "cifar10", "svhn"):
        assert autoaugment(32, policy=policy).ops[-1].policy.value == policy
    rand = augment("randaugment", "augment.num_ops=3", "augment.magnitude=5").ops[-1]
    assert (rand.num_ops, rand.magnitude) == (3, 5)


@pytest.mark.parametrize(("overrides", "message"), [
    (("augment=autoaugment", "augment.policy=mnist"), "augment.policy must be one of imagenet, cifar10, svhn"),
    (("augment=randaugment", "augment.magnitude=31"), "augment.magnitude must be in [0, num_magnitude_bins)"),
    (("augment=basic", "augment.erasing=1.5"), "augment.erasing must be in [0, 1]"),
    (("augment=basic", "augment.padding=-1"), "augment.padding must be >= 0 or null"),
    (("augment=standard", "augment.scale_min=0"), "augment.scale_min must be in (0, 1]"),
])
def test_out_of_range_augment_values_name_the_key(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(*overrides))


@pytest.mark.parametrize("option", ["standard", "autoaugment", "randaugment", "trivialaugment"])
def test_colour_ops_on_other_channel_counts_fail_clearly(option: str) -> None:
    four_channels = composed("data=fake", "data.in_channels=4")
    with pytest.raises(ConfigError, match=f"augment={option} changes colours, which needs 1- or 3-channel"):
        build_data(with_augment(four_channels, option))
    geometry_only = build_data(with_augment(four_channels, "basic"))
    assert geometry_only.train_set[0][0].shape == (4, 32, 32)
