"""mode=summary in-process: parameter totals, MACs, receptive field, and the guide's receptive-field example."""

from __future__ import annotations

import pytest
from torch import nn

from trainer.models.resnet import ResNet
from trainer.models.vgg import VGG
from trainer.modes.model_summary import model_receptive_field, profile, receptive_field


def test_the_guides_receptive_field_example() -> None:
    # conv3, conv3, pool2, conv3, conv3 -> 14: the guide's answer, at the output of the last conv.
    through_last_conv = [(3, 1), (3, 1), (2, 2), (3, 1), (3, 1)]
    assert receptive_field(through_last_conv) == 14
    # The trailing pool2 widens each unit by (2 - 1) * 2 more input pixels.
    assert receptive_field([*through_last_conv, (2, 2)]) == 16
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3),
                          nn.Conv2d(4, 4, 3))
    assert model_receptive_field(model) == (14, "graph")


@pytest.mark.parametrize(("model", "expected"), [(VGG(3, 10, 16), 212), (ResNet(3, 10, 50), 427)])
def test_receptive_fields_of_reference_networks(model: nn.Module, expected: int) -> None:
    # Published values: VGG-16 pool5 212 px; ResNet-50 (stride on the 3x3 conv) 427 px.
    assert model_receptive_field(model)[0] == expected


def test_profile_counts_macs_of_convs_and_linears() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    rows, macs, activations = profile(model, (3, 4, 4))
    assert macs == (8 * 4 * 4) * (3 * 3 * 3) + 128 * 5
    assert activations == 128 + 128 + 128 + 5
    assert [r.name for r in rows] == ["0", "1", "2", "3"]
