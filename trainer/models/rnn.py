"""A recurrent classifier that reads an image one row at a time (the sequential-MNIST setup).

An image of C x H x W is a sequence of H steps, each step the row's W pixels of every channel (W x C features).
An LSTM or GRU of `num_layers` reads it; the linear head takes the last layer's final state: the state after
the last row, and with `bidirectional` also the backward direction's state after the first row, concatenated.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.catalog import RNN_CELLS

CELLS: dict[str, type[nn.RNNBase]] = {name: getattr(nn, name.upper()) for name in RNN_CELLS}  # nn.LSTM, nn.GRU


class RowRNN(nn.Module):
    """`cell` (lstm or gru) over the image's rows, then a linear head on the final state of each direction.

    `dropout` applies between stacked layers (so only with num_layers > 1). An LSTM's forget-gate bias
    starts at 1 (Jozefowicz et al., 2015), so that early in training its cell state is kept rather than reset.
    No argument has a default of its own: the config supplies each (RNNConfig in trainer/schema/model.py).
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, cell: str, hidden_size: int,
                 num_layers: int, bidirectional: bool, dropout: float) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose from {', '.join(CELLS)}")
        self.rnn = CELLS[cell](image_size * in_channels, hidden_size, num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.directions = 2 if bidirectional else 1
        self.head = nn.Linear(hidden_size * self.directions, num_classes)
        if cell == "lstm":
            self._init_forget_gate_bias(hidden_size)

    def _init_forget_gate_bias(self, hidden_size: int) -> None:
        """Biases at 0 except the forget gate's input bias at 1 (PyTorch orders the gates i, f, g, o)."""
        with torch.no_grad():
            for name, param in self.rnn.named_parameters():
                if name.startswith("bias"):
                    param.zero_()
                    if name.startswith("bias_ih"):
                        param[hidden_size:2 * hidden_size] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(batch, height, width * channels)  # step t: row t, pixels x channels
        _, state = self.rnn(rows)
        hidden = state[0] if isinstance(state, tuple) else state  # an LSTM returns (h_n, c_n)
        final = hidden[-self.directions:].transpose(0, 1).reshape(batch, -1)  # last layer, every direction
        return self.head(final)
