"""Vision Transformer (Dosovitskiy et al., 2021): image patches as tokens, pre-norm transformer blocks.

The layout and parameter names follow timm's `VisionTransformer` (`patch_embed.proj`, `cls_token`, `pos_embed`,
`blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`, `head`); ViTConfig's defaults
(trainer/schema/model.py) are timm's vit_tiny with 4-px patches for 32-px images: about 5.4M parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from trainer.models.catalog import VIT_POOLS


class PatchEmbed(nn.Module):
    """Cut the image into `patch_size` squares and project each to `dim` (one conv with kernel = stride)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, dim, H/p, W/p) -> (B, tokens, dim)


class Attention(nn.Module):
    """Multi-head self-attention: one linear for queries, keys and values, PyTorch's fused attention kernel."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (batch, heads, tokens, dim / heads)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(batch, tokens, dim)))


class Mlp(nn.Sequential):
    """Linear -> GELU -> dropout -> linear -> dropout, `mlp_ratio` times wider in the middle."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(dropout)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)); each branch dropped per sample
    with probability `drop_prob` while training (stochastic depth)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, drop_prob: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        self.drop_path = StochasticDepth(drop_prob, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """Patch embedding, a learned position embedding (and a class token with `pool="cls"`), `depth` blocks,
    a final LayerNorm and a linear head on the class token or on the mean of the patch tokens.

    Stochastic depth grows linearly over the blocks, from 0 in the first to `stochastic_depth` in the last.
    No argument has a default of its own: the config supplies each (ViTConfig in trainer/schema/model.py).
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int, patch_size: int, dim: int, depth: int,
                 heads: int, mlp_ratio: float, pool: str, stochastic_depth: float, dropout: float) -> None:
        super().__init__()
        if pool not in VIT_POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose from {', '.join(VIT_POOLS)}")
        if image_size % patch_size or dim % heads:
            raise ValueError(f"patch_size {patch_size} must divide image_size {image_size} and heads {heads} "
                             f"must divide dim {dim}")
        self.pool = pool
        tokens = (image_size // patch_size) ** 2 + (pool == "cls")
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.pos_drop = nn.Dropout(dropout)
        rates = [stochastic_depth * i / max(depth - 1, 1) for i in range(depth)]  # 0 ... stochastic_depth
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, dropout, rate) for rate in rates))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """timm's initialisation: truncated normal (std 0.02) for the embeddings and every linear layer, zero
        biases; LayerNorms at weight 1, bias 0; the patch conv keeps PyTorch's default."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameter names weight decay must not touch (timm's convention): the position embedding, the class
        token and every LayerNorm's weight and bias."""
        norms = {f"{name}.{param}" for name, module in self.named_modules() if isinstance(module, nn.LayerNorm)
                 for param, _ in module.named_parameters(recurse=False)}
        return {"pos_embed", *(["cls_token"] if self.cls_token is not None else []), *norms}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.blocks(self.pos_drop(x + self.pos_embed)))
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))
