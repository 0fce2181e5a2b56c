"""The optimizer's parameter groups: which parameters decay, and each one's lr (layer-wise decay, the head's
multiplier), every group with an explicit `lr`, `weight_decay` and `lr_scale` (its lr over optim.lr).

A model's depths: a timm model (one with `group_matcher`) by timm's own grouping (stem, then each block, then
the head); any other model by `units`, a walk of its children in order where the depth unit is a block, not a
layer: a ResNet's stem, each residual block, the head (10 depths for resnet18); a ViT's patch embedding (with the
cls token and position embedding), each transformer block, the final norm, the head. The parameters a walked
module holds itself (a ViT's cls_token, pos_embed) go with the unit before them, the first unit when none.
The deepest depth is the head.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

# Layers whose weights are scales and shifts of normalised activations: decaying them towards 0 only hurts.
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# A container of at least this many blocks of one class is a stack (a transformer's layers): a module holding one
# (torchvision's ViT encoder) is walked into, not taken as one block. Fewer would open blocks built of a few
# same-class sub-blocks (an inverted residual's three conv-norm-acts, an Inception branch's two convs).
STACK_MIN = 4


@dataclass(frozen=True)
class GroupKey:
    """What sets a parameter's group apart: its lr scale, whether it decays, whether Muon steps it, and the
    norm-bias boost that scales its lr up and its decay down."""

    lr_scale: float
    decays: bool
    muon: bool
    boost: float = 1.0


def is_leaf(module: nn.Module) -> bool:
    return next(module.children(), None) is None


def is_weight_layer(module: nn.Module) -> bool:
    """A leaf layer with parameters other than a norm's: a conv, a linear layer, an embedding."""
    return is_leaf(module) and not isinstance(module, NORM_LAYERS) and next(module.parameters(), None) is not None


def is_stack(module: nn.Module) -> bool:
    """A container of STACK_MIN or more blocks (modules with children) of one class."""
    children = list(module.children())
    return (isinstance(module, CONTAINERS) and len(children) >= STACK_MIN and not is_leaf(children[0])
            and len({type(child) for child in children}) == 1)


def holds_stack(module: nn.Module) -> bool:
    return any(is_stack(child) or holds_stack(child) for child in module.children())


def opens(module: nn.Module) -> bool:
    """Whether the walk goes into `module` (its children are units, or are walked in turn) rather than taking it
    as one unit: a container unless it is one layer (leaf children with at most one weight layer: a conv-norm-act,
    a stem, a head); any other module (a block) only when it holds a stack."""
    if isinstance(module, CONTAINERS):
        children = list(module.children())
        return not all(is_leaf(child) for child in children) or sum(map(is_weight_layer, children)) > 1
    return holds_stack(module)


def units(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module, bool]]:
    """The depth units of `module` in order, as (dotted name, module, own): with `own`, the parameters of a walked
    module itself (recurse=False); otherwise a unit, all its parameters at one depth."""
    yield prefix.removesuffix("."), module, True
    for name, child in module.named_children():
        if opens(child):
            yield from units(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child, False


def parameter_depths(model: nn.Module) -> dict[str, int]:
    """Each parameter's depth (by name), from 0 (the stem) to the head's, the deepest. A norm layer right after a
    weight layer (a flat Sequential's conv, bn) shares its depth; a tied weight keeps its first owner's."""
    if hasattr(model, "group_matcher"):  # a timm model: timm's layer ids, the head (unmatched) last
        from timm.models import group_parameters

        return group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    depths: dict[str, int] = {}
    seen: set[int] = set()
    depth, previous = 0, None  # previous: the last unit placed
    for name, unit, own in units(model):
        params = [(f"{name}.{key}" if name else key, param) for key, param in unit.named_parameters(recurse=not own)
                  if id(param) not in seen]
        if not params:
            continue
        joins = own or (isinstance(unit, NORM_LAYERS) and previous is not None and is_weight_layer(previous))
        if previous is not None and not joins:
            depth += 1
        if not own:
            previous = unit
        for key, param in params:
            seen.add(id(param))
            depths[key] = depth
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


def norm_biases(model: nn.Module) -> set[int]:
    """The biases of normalisation layers (by id): what `norm_bias_lr_mult` scales."""
    return {id(module.bias) for module in model.modules()
            if isinstance(module, NORM_LAYERS) and isinstance(getattr(module, "bias", None), nn.Parameter)}


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
                     norm_bias_lr_mult: float | None = None, split_muon: bool = False) -> list[dict]:
    """The trainable parameters as optimizer groups, each with its `lr` (lr x `lr_scale`) and `weight_decay`.

    Parameters share a group when they share an lr scale and a decay (and, with `split_muon`, whether Muon steps
    them: the group's `use_muon`). With `norm_bias_lr_mult`, norm-layer biases train at that multiple of their
    lr and decay by `weight_decay` divided by it (BatchNorm bias scaling: lr x decay unchanged). Weight decay is 0
    on the names of `model.no_weight_decay()` and, with `no_decay_norm_bias`, on biases and norm weights. Groups
    come stem first, decaying before not decaying.
    """
    depths = parameter_depths(model)
    last = max(depths.values(), default=0)
    exempt = norm_or_bias(model) if no_decay_norm_bias else set()
    never_decay = no_weight_decay_names(model)
    muon = muon_matrices(model, depths) if split_muon else set()
    boosted = norm_biases(model) if norm_bias_lr_mult is not None else set()
    groups: dict[GroupKey, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decays = id(param) not in exempt and not any(fnmatch.fnmatch(name, pattern) for pattern in never_decay)
        depth = depths.get(name, last)  # a parameter timm's grouping leaves out goes with the head, as in timm
        boost = norm_bias_lr_mult if id(param) in boosted else 1.0
        key = GroupKey(lr_scale(depth, last, layer_decay, head_lr_mult) * boost, decays, id(param) in muon, boost)
        group = groups.setdefault(key, {"params": [], "lr": lr * key.lr_scale, "weight_decay":
                                        weight_decay / boost if decays else 0.0, "lr_scale": key.lr_scale,
                                        "depth": depth})
        group["params"].append(param)
    ordered = sorted(groups.items(), key=lambda item: (item[1]["depth"], not item[0].decays, not item[0].muon))
    for key, group in ordered:
        del group["depth"]
        if split_muon:
            group["use_muon"] = key.muon
    return [group for _, group in ordered]
