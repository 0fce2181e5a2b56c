"""Test-time augmentation: flip and flip_translate average the logits of the views the formulas name."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainer.schema.run import TTA_MODES
from trainer.training.tta import TRANSLATE_PX, TTAModel, with_tta


class PooledLinear(nn.Module):
    """logits = linear(mean of x over H and W): blind to mirroring and shifts."""

    def __init__(self, channels: int = 3, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(-2, -1)))


class FlattenLinear(nn.Module):
    """logits = linear(every pixel): sees where things are."""

    def __init__(self, shape: tuple[int, int, int] = (3, 6, 6), classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.head = nn.Linear(shape[0] * shape[1] * shape[2], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


def images() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.randn(5, 3, 6, 6)


def test_none_is_the_model_itself() -> None:
    model = PooledLinear()
    assert with_tta(model, "none") is model
    assert TTA_MODES == ("none", "flip", "flip_translate")


def test_flip_leaves_a_flip_invariant_model_alone() -> None:
    model, x = PooledLinear(), images()
    torch.testing.assert_close(with_tta(model, "flip")(x), model(x))


def test_flip_averages_the_mirror_images_of_a_model_that_sees_positions() -> None:
    model, x = FlattenLinear(), images()
    out = with_tta(model, "flip")(x)
    assert not torch.allclose(out, model(x))
    torch.testing.assert_close(out, (model(x) + model(x.flip(-1))) / 2)


def test_flip_translate_matches_the_formula() -> None:
    model, x, p = FlattenLinear(), images(), TRANSLATE_PX
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    # Shifted down-right by p: pixel (i, j) shows x[i - p, j - p], i.e. padded[i, j]; up-left: padded[i + 2p, j + 2p].
    down_right, up_left = padded[..., :6, :6], padded[..., 2 * p:, 2 * p:]
    assert torch.equal(down_right[..., p:, p:], x[..., :-p, :-p])

    def flip(v: torch.Tensor) -> torch.Tensor:
        return (model(v) + model(v.flip(-1))) / 2

    expected = 0.5 * flip(x) + 0.5 * (flip(down_right) + flip(up_left)) / 2
    out = with_tta(model, "flip_translate")(x)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, flip(x))
    assert out.shape == (5, 4) and out.dtype == torch.float32


def test_logits_are_averaged_in_float() -> None:
    model = PooledLinear().to(torch.bfloat16)
    out = with_tta(model, "flip")(images().to(torch.bfloat16))
    assert out.dtype == torch.float32


def test_the_wrapper_passes_train_eval_and_to_through() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten())
    wrapped = with_tta(model, "flip")
    assert isinstance(wrapped, TTAModel)
    wrapped.eval()
    assert not model.training and not model[1].training
    wrapped.train()
    assert model[1].training
    wrapped.to(torch.float64)
    assert model[0].weight.dtype == torch.float64


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="none, flip, flip_translate"):
        with_tta(PooledLinear(), "rotate")
