"""The optimizer's parameter groups: which parameters decay, and each one's lr (layer-wise decay, the head's
multiplier), every group with an explicit `lr`, `weight_decay` and `lr_scale` (its lr over optim.lr).

A model's depths: a timm model (one with `group_matcher`) by timm's own grouping (stem, then each block, then
the head); any other model by walking its top-level children in order, nn.Sequential and nn.ModuleList expanded
into theirs, each module that owns parameters one depth; the parameters held by the model itself (a ViT's
cls_token, pos_embed) share depth 0 with the first module. The deepest depth is the head.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

# Layers whose weights are scales and shifts of normalised activations: decaying them towards 0 only hurts.
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)
CONTAINERS = (nn.Sequential, nn.ModuleList)


@dataclass(frozen=True)
class GroupKey:
    """What sets a parameter's group apart: its lr scale, whether it decays, whether Muon steps it."""

    lr_scale: float
    decays: bool
    muon: bool


def units(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """The modules of `module` in order, containers expanded: each yields (dotted name, module)."""
    for name, child in module.named_children():
        if isinstance(child, CONTAINERS):
            yield from units(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child


def parameter_depths(model: nn.Module) -> dict[str, int]:
    """Each parameter's depth (by name), from 0 (the stem) to the head's, the deepest."""
    if hasattr(model, "group_matcher"):  # a timm model: timm's layer ids, the head (unmatched) last
        from timm.models import group_parameters

        return group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    depths = {name: 0 for name, _ in model.named_parameters(recurse=False)}
    owners = [(name, unit) for name, unit in units(model) if any(True for _ in unit.parameters())]
    seen = {id(p) for _, p in model.named_parameters(recurse=False)}
    for depth, (prefix, unit) in enumerate(owners):
        for name, param in unit.named_parameters():
            if id(param) not in seen:  # a tied weight keeps the depth of its first owner
                seen.add(id(param))
                depths[f"{prefix}.{name}"] = depth
    return depths


def lr_scale(depth: int, last: int, layer_decay: float | None, head_lr_mult: float | None) -> float:
    """The lr, as a multiple of optim.lr, at `depth` of a model whose head is at depth `last`:
    layer_decay^(last - depth), x head_lr_mult on the head."""
    scale = layer_decay ** (last - depth) if layer_decay is not None else 1.0
    return scale * (head_lr_mult if head_lr_mult is not None and depth == last else 1.0)


def no_weight_decay_names(model: nn.Module) -> list[str]:
    """The names (fnmatch patterns) a model's `no_weight_decay()` says never decay (timm's convention)."""
    method = getattr(model, "no_weight_decay", None)
    return sorted(method()) if callable(method) else []


def norm_or_bias(model: nn.Module) -> set[int]:
    """Biases and normalisation weights: every 1-D parameter, and any parameter of a norm layer (by id)."""
    return {id(p) for module in model.modules() for p in module.parameters(recurse=False)
            if p.ndim <= 1 or isinstance(module, NORM_LAYERS)}


def muon_matrices(model: nn.Module, depths: dict[str, int]) -> set[int]:
    """The parameters Muon steps (by id): 2-D weights between the first depth and the head, outside embeddings
    and norm layers (the standard Muon recipe: the input layer, the head, biases, norms and embeddings take AdamW)."""
    last = max(depths.values(), default=0)
    excluded = {id(p) for module in model.modules() if isinstance(module, (nn.Embedding, *NORM_LAYERS))
                for p in module.parameters(recurse=False)}
    return {id(p) for name, p in model.named_parameters()
            if p.ndim == 2 and 0 < depths.get(name, last) < last and id(p) not in excluded}


def parameter_groups(model: nn.Module, lr: float, weight_decay: float, *, no_decay_norm_bias: bool = False,
                     layer_decay: float | None = None, head_lr_mult: float | None = None,
                     split_muon: bool = False) -> list[dict]:
    """The trainable parameters as optimizer groups, each with its `lr` (lr x `lr_scale`) and `weight_decay`.

    Parameters share a group when they share an lr scale and a decay (and, with `split_muon`, whether Muon steps
    them: the group's `use_muon`). Weight decay is 0 on the names of `model.no_weight_decay()` and, with
    `no_decay_norm_bias`, on biases and norm weights. Groups come stem first, decaying before not decaying.
    """
    depths = parameter_depths(model)
    last = max(depths.values(), default=0)
    exempt = norm_or_bias(model) if no_decay_norm_bias else set()
    never_decay = no_weight_decay_names(model)
    muon = muon_matrices(model, depths) if split_muon else set()
    groups: dict[GroupKey, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = id(param) not in exempt and not any(fnmatch.fnmatch(name, pattern) for pattern in never_decay)
        depth = depths.get(name, last)  # a parameter timm's grouping leaves out goes with the head, as in timm
        key = GroupKey(lr_scale(depth, last, layer_decay, head_lr_mult), decays, id(param) in muon)
        group = groups.setdefault(key, {"params": [], "lr": lr * key.lr_scale, "weight_decay":
                                        weight_decay if decays else 0.0, "lr_scale": key.lr_scale, "depth": depth})
        group["params"].append(param)
    ordered = sorted(groups.items(), key=lambda item: (item[1]["depth"], not item[0].decays, not item[0].muon))
    for key, group in ordered:
        del group["depth"]
        if split_muon:
            group["use_muon"] = key.muon
    return [group for _, group in ordered]
