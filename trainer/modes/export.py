"""`mode=export ckpt=PATH export.format=torchscript|onnx`: a deployable model file, checked against eager.

The export runs on the CPU in float32; the max abs difference from the eager model on a sample batch is
printed and written to export.json beside the file.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from trainer.errors import TrainerError
from trainer.modes.inference import load_for_inference
from trainer.reporting.console import RunConsole
from trainer.reporting.run_files import write_json

FILE_NAMES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
SAMPLE_BATCH = 4


class ExportError(TrainerError):
    """An export that cannot run here (a missing optional package) or whose output does not load."""


def export(cfg: DictConfig, run_dir: Path) -> Path:
    """Write the checkpoint's model in `export.format` into `run_dir`; returns the file's path."""
    fmt = cfg.export.format
    if fmt == "onnx":
        require_onnx()
    console = RunConsole(cfg.trainer.progress)
    loaded = load_for_inference(cfg.ckpt, torch.device("cpu"))
    info = loaded.info  # the checkpoint's saved preprocessing: its input channels and size
    sample = torch.randn(SAMPLE_BATCH, info["in_channels"], info["image_size"], info["image_size"],
                         generator=torch.Generator().manual_seed(cfg.seed))
    path = run_dir / FILE_NAMES[fmt]
    run_dir.mkdir(parents=True, exist_ok=True)
    exported = export_torchscript(loaded.model, sample, path) if fmt == "torchscript" else \
        export_onnx(loaded.model, sample, path)
    with torch.no_grad():
        eager = loaded.model(sample)
    diff = (exported - eager).abs().max().item() if exported is not None else None
    result = {"ckpt": str(cfg.ckpt), "weights": loaded.weights, "format": fmt, "file": str(path),
              "input_shape": list(sample.shape), "max_abs_diff": diff}
    write_json(run_dir / "export.json", result)
    console.table("export", {**result, "max_abs_diff": "n/a (onnxruntime not installed)" if diff is None
                             else f"{diff:.3g}"})
    console.info(f"wrote {path} and {run_dir / 'export.json'}")
    return path


def require_onnx() -> None:
    """ONNX export needs the optional `onnx` package: say how to get it in one line."""
    if importlib.util.find_spec("onnx") is None:
        raise ExportError("export.format=onnx needs the onnx package: pip install -e '.[onnx]'")


def export_torchscript(model: nn.Module, sample: torch.Tensor, path: Path) -> torch.Tensor:
    """Trace (the models are static graphs), save, reload, and return the reloaded model's outputs.

    torch marks TorchScript deprecated; the user asked for it by name, so that warning is not repeated.
    """
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        traced = torch.jit.trace(model, sample)
        traced.save(str(path))
        reloaded = torch.jit.load(str(path), map_location="cpu")
        return reloaded(sample)


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path) -> torch.Tensor | None:
    """TorchScript-based ONNX export (needs only `onnx`) with a dynamic batch axis; outputs via onnxruntime."""
    torch.onnx.export(model, (sample,), str(path), dynamo=False, input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (outputs,) = session.run(["logits"], {"images": sample.numpy()})
    return torch.from_numpy(outputs)
