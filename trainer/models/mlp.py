"""A multi-layer perceptron over flattened pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from trainer.models.layers import make_activation

RELU_FAMILY = {"relu", "leaky_relu", "elu"}


class MLP(nn.Module):
    """Flatten -> [Linear -> act -> dropout] x len(hidden_sizes) -> Linear.

    Weights use He (Kaiming) init for ReLU-family activations and Xavier init otherwise. No argument has a
    default of its own: the config supplies each (MLPConfig in trainer/schema/model.py).
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, hidden_sizes: Sequence[int], act: str,
                 dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * image_size * image_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), make_activation(act), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        for module in self.net:
            if isinstance(module, nn.Linear):
                if act in RELU_FAMILY:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                else:
                    nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
