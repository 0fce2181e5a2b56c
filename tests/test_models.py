"""The models match their reference parameter counts and train end to end on small inputs."""

from __future__ import annotations

import pytest
import torch

from trainer.build import count_parameters
from trainer.models.layers import ConvNormAct
from trainer.models.mlp import MLP
from trainer.models.resnet import ResNet
from trainer.models.simple_cnn import SimpleCNN


@pytest.mark.parametrize(("depth", "expected"), [(18, 11_689_512), (50, 25_557_032)])
def test_resnet_parameter_counts_match_torchvision(depth: int, expected: int) -> None:
    # torchvision.models.resnet18/50(num_classes=1000) at 3 input channels.
    assert count_parameters(ResNet(in_channels=3, num_classes=1000, depth=depth)) == expected


@pytest.mark.parametrize("model", [
    MLP(in_channels=1, num_classes=7, image_size=12, hidden_sizes=[16], act="tanh", dropout=0.1),
    SimpleCNN(in_channels=1, num_classes=7, widths=[4, 8, 8, 8]),
    ResNet(in_channels=1, num_classes=7, depth=18, stem="cifar", width=8),
    ResNet(in_channels=1, num_classes=7, depth=50, stem="imagenet", width=8, zero_init_residual=True),
])
def test_forward_backward_gives_finite_gradients(model: torch.nn.Module) -> None:
    logits = model(torch.randn(2, 1, 12, 12))
    assert logits.shape == (2, 7)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_simple_cnn_survives_8x8_inputs() -> None:
    # Four 2x2 pools would take 8 px to 0 without ceil_mode; the digits default depends on this.
    assert SimpleCNN(1, 10)(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("norm", ["batch", "group", "layer", "none"])
def test_conv_block_has_bias_only_without_norm(norm: str) -> None:
    block = ConvNormAct(3, 16, norm=norm)
    assert (block[0].bias is not None) == (norm == "none")
    assert block(torch.randn(2, 3, 5, 5)).shape == (2, 16, 5, 5)


def test_zero_init_residual_makes_blocks_start_as_identity_branches() -> None:
    model = ResNet(3, 10, depth=18, zero_init_residual=True)
    last_norms = [block.last_norm().weight for stage in model.stages for block in stage]
    assert all(torch.count_nonzero(w) == 0 for w in last_norms)
