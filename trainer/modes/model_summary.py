"""`mode=summary`: a model's layers, parameters, multiply-accumulates, receptive field and activation memory.

Nothing is trained and no data is loaded: the input shape comes from the data config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.table import Table
from torch import nn

from trainer.build import build_model, count_parameters
from trainer.reporting.console import RunConsole
from trainer.reporting.run_files import write_json


def receptive_field(layers: list[tuple[int, int]]) -> int:
    """The guide's formula over (kernel, stride) pairs in order: r += (k - 1) * product of earlier strides."""
    r, jump = 1, 1
    for kernel, stride in layers:
        r += (kernel - 1) * jump
        jump *= stride
    return r


def _kernel_stride(module: nn.Module) -> tuple[int, int] | None:
    """(kernel, stride) along the height of a conv or fixed-size pool; None for other modules."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        first = lambda v: v[0] if isinstance(v, tuple) else v  # noqa: E731
        dilation = first(getattr(module, "dilation", 1))
        return dilation * (first(module.kernel_size) - 1) + 1, first(module.stride)
    return None


def model_receptive_field(model: nn.Module) -> tuple[int, str]:
    """The receptive field of the last spatial feature map, following the model's graph.

    Parallel branches (inception, residual shortcuts) take the widest branch. Models that torch.fx cannot
    trace fall back to the formula over all conv and pool layers in registration order.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:
        layers = [ks for m in model.modules() if (ks := _kernel_stride(m)) is not None]
        return receptive_field(layers), "sequential"
    modules = dict(model.named_modules())
    state: dict[str, tuple[int, int]] = {}
    best = 1
    for node in graph.nodes:
        inputs = [state[a.name] for a in node.all_input_nodes if a.name in state]
        r, jump = max(inputs) if inputs else (1, 1)
        ks = _kernel_stride(modules[node.target]) if node.op == "call_module" else None
        if ks is not None:
            r, jump = r + (ks[0] - 1) * jump, jump * ks[1]
            best = max(best, r)
        state[node.name] = (r, jump)
    return best, "graph"


@dataclass
class LayerRow:
    name: str
    kind: str
    shape: tuple[int, ...]
    params: int


def profile(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[LayerRow], int, int]:
    """Per-module output shapes, total multiply-accumulates and output elements of leaf modules (batch 1)."""
    rows: list[LayerRow] = []
    totals = {"macs": 0, "activations": 0}
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, inputs, output) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(out, torch.Tensor):
            return
        rows.append(LayerRow(names[module], type(module).__name__, tuple(out.shape[1:]), count_parameters(module)))
        if not any(module.children()):
            totals["activations"] += out.numel()
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                totals["macs"] += out.numel() * (module.in_channels // module.groups) * kh * kw
            elif isinstance(module, nn.Linear):
                totals["macs"] += out.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for handle in handles:
            handle.remove()
    order = {name: index for index, name in enumerate(names.values())}
    rows.sort(key=lambda row: order[row.name])  # hooks fire children-first; list parents first
    return rows, totals["macs"], totals["activations"]


def summarize(cfg: DictConfig, run_dir: Path) -> int:
    """Print the summary table; returns the parameter count."""
    console = RunConsole(cfg.trainer.progress)
    model = build_model(cfg.model)
    input_shape = (cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    rows, macs, activations = profile(model, input_shape)
    rf, rf_method = model_receptive_field(model)
    total = count_parameters(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    bytes_per_value = 4 if cfg.trainer.precision == "32" else 2
    batch = cfg.data.batch_size
    activation_mib = activations * batch * bytes_per_value / 2**20

    depth = cfg.summary.depth
    table = Table(title=f"{type(model).__name__} at {'x'.join(map(str, input_shape))}", title_justify="left")
    for column, justify in (("layer", "left"), ("type", "left"), ("output shape", "right"), ("params", "right")):
        table.add_column(column, justify=justify)
    for row in rows:
        if row.name.count(".") < depth:
            table.add_row(row.name, row.kind, str(list(row.shape)), f"{row.params:,}")
    facts = {
        "total params": f"{total:,}",
        "trainable params": f"{trainable:,}",
        "multiply-accumulates": f"{macs:,} ({macs / 1e9:.2f} GMACs per image)",
        "receptive field": f"{rf} px ({rf_method})",
        "activation memory": f"{activation_mib:,.1f} MiB for a training batch of {batch} "
                             f"({bytes_per_value}-byte values; estimate)",
    }
    if not console.quiet:
        console.console.print(table)
    console.table("model summary", facts)
    write_json(run_dir / "model_summary.json", {
        "model": type(model).__name__, "input_shape": list(input_shape), "total_params": total,
        "trainable_params": trainable, "macs": macs, "receptive_field": rf, "activation_mib": activation_mib})
    console.info(f"wrote {run_dir / 'model_summary.json'}")
    return total
