"""`model=airbench`: the CIFAR-10 speed-record network (Keller Jordan's airbench94 layout).

A 2x2 patch-whitening conv (frozen; `init_whitening` sets it from training images, `model.whiten_init=true`),
then three conv groups (3x3 conv, 2x2 max-pool, BatchNorm, GELU, 3x3 conv, BatchNorm, GELU) of widths
64/256/256, a global max-pool, a bias-free linear head and a fixed logit scale. The BatchNorms train their
biases only (weights stay 1), and each 3x3 conv starts as the identity on its first input channels.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.layers import make_activation

WHITEN_EPS = 5e-4  # added to the patch covariance's eigenvalues before they scale the whitening filters


class Conv3x3(nn.Conv2d):
    """A bias-free 3x3 'same' conv whose first `in_channels` filters start as the identity (Dirac)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1, bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        weight = self.weight.data
        nn.init.dirac_(weight[:min(weight.size(0), weight.size(1))])


def bias_only_norm(channels: int, momentum: float) -> nn.BatchNorm2d:
    """BatchNorm whose weight stays 1 (frozen) and whose bias trains."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=momentum)
    norm.weight.requires_grad_(False)
    return norm


class ConvGroup(nn.Module):
    """3x3 conv, 2x2 max-pool, BatchNorm, activation, 3x3 conv, BatchNorm, activation."""

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float, act: str) -> None:
        super().__init__()
        self.conv1 = Conv3x3(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = bias_only_norm(out_channels, bn_momentum)
        self.act1 = make_activation(act)
        self.conv2 = Conv3x3(out_channels, out_channels)
        self.norm2 = bias_only_norm(out_channels, bn_momentum)
        self.act2 = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.pool(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(x)))


class Airbench(nn.Module):
    """Whitening conv, conv groups of `widths`, global max-pool, bias-free linear head times `logit_scale`.

    `bn_momentum` is torch's (the weight of each new batch's statistics; airbench's 0.6 is torch's 0.4). The
    defaults of every argument are AirbenchConfig's (trainer/schema/model.py).
    """

    def __init__(self, in_channels: int, num_classes: int, *, widths: list[int], whiten_kernel: int,
                 bn_momentum: float, logit_scale: float, act: str) -> None:
        super().__init__()
        whiten_width = 2 * in_channels * whiten_kernel**2  # each eigenvector and its negative
        self.whiten = nn.Conv2d(in_channels, whiten_width, whiten_kernel, bias=True)
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)  # it trains; the filters stay as init_whitening sets them
        self.whiten_act = make_activation(act)
        channels = [whiten_width, *widths]
        self.stages = nn.Sequential(*(ConvGroup(channels[i], channels[i + 1], bn_momentum, act)
                                      for i in range(len(widths))))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(channels[-1], num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.whiten_act(self.whiten(x)))
        return self.head(torch.flatten(self.pool(x), 1)) * self.logit_scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = WHITEN_EPS, chunk: int = 256) -> None:
        """Set the whitening filters from normalised images (N x C x H x W): the eigenvectors of the covariance
        of their k x k patches, each scaled by 1 / sqrt(eigenvalue + eps), and their negatives."""
        weight = self.whiten.weight
        channels, (kh, kw) = weight.shape[1], weight.shape[2:]
        size = channels * kh * kw
        moments, count = torch.zeros(size, size, dtype=torch.float64), 0
        for start in range(0, len(images), chunk):  # patches of a few images at a time: bounded memory
            patches = images[start:start + chunk].float().cpu().unfold(2, kh, 1).unfold(3, kw, 1)
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, size).double()
            moments += patches.T @ patches
            count += len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(moments / max(count, 1))  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # largest first, one per row
        filters = (eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).view(-1, channels, kh, kw)
        weight.copy_(torch.cat([filters, -filters]).to(weight))
