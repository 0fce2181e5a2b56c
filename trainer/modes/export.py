"""`mode=export ckpt=PATH export.format=torchscript|onnx|torch_export`: a deployable model file, checked against
eager, and export.json: what a deployment needs to feed it (preprocessing, input layout, class names).

The export runs on the CPU in float32. The exported file is reloaded and run on a sample batch and on a batch of
one; the largest difference from the eager model is printed and written to export.json. Everything is written into
a temporary folder beside the run dir first and moved into place only when the export has succeeded, so a failed
export leaves nothing behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from trainer.errors import TrainerError, described
from trainer.modes.inference import LoadedCheckpoint, load_for_inference
from trainer.reporting.console import RunConsole
from trainer.reporting.run_files import write_json

FILE_NAMES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx", "torch_export": "model.pt2"}
SAMPLE_BATCH = 4
INFO_NAME = "export.json"

Runner = Callable[[torch.Tensor], torch.Tensor]  # the reloaded export: images in, logits out


class ExportError(TrainerError):
    """An export that cannot run here (a missing optional package), fails, or whose output does not load."""


def export(cfg: DictConfig, run_dir: Path) -> Path:
    """Write the checkpoint's model in `export.format` and export.json into `run_dir`; returns the model file."""
    fmt = cfg.export.format
    if fmt == "onnx":
        require_onnx()
    console = RunConsole(cfg.trainer.progress)
    loaded = load_for_inference(cfg.ckpt, torch.device("cpu"))
    info = loaded.info  # the checkpoint's saved preprocessing: its input channels and size
    sample = torch.randn(SAMPLE_BATCH, info["in_channels"], info["image_size"], info["image_size"],
                         generator=torch.Generator().manual_seed(cfg.seed))
    name = FILE_NAMES[fmt]
    with staged_into(run_dir) as staging:
        try:  # the export, and running what it wrote
            runner = EXPORTERS[fmt](loaded.model, sample, staging / name)
            diff, dynamic = compare_with_eager(runner, loaded.model, sample)
        except Exception as err:  # the library's reason in one line (HYDRA_FULL_ERROR=1 shows its traceback)
            others = ", ".join(f for f in FILE_NAMES if f != fmt)
            raise ExportError(f"export.format={fmt} failed for {cfg.ckpt}: {described(err)}; another format may "
                              f"work ({others})") from err
        result = deployment_info(cfg, loaded, fmt, name, list(sample.shape), diff, dynamic)
        write_json(staging / INFO_NAME, result)
    console.table("export", {**result, "classes": f"{len(loaded.classes)} ({', '.join(loaded.classes[:5])}"
                             f"{', ...' if len(loaded.classes) > 5 else ''})",
                             "max_abs_diff": "n/a (onnxruntime not installed)" if diff is None else f"{diff:.3g}"})
    console.info(f"wrote {run_dir / name} and {run_dir / INFO_NAME}")
    return run_dir / name


def deployment_info(cfg: DictConfig, loaded: LoadedCheckpoint, fmt: str, name: str, input_shape: list[int],
                    diff: float | None, dynamic: bool | None) -> dict[str, Any]:
    """export.json: the file and how to feed it. An image becomes the model's input as mode=predict prepares it:
    converted to `channel_order` (L: grey, repeated when in_channels > 1), resized (`resize`: the short side, or
    [h, w]) and centre-cropped (`center_crop`) to `input_size`, scaled to 0..1, then (x - mean) / std per channel,
    in NCHW layout; the outputs are logits over `classes`, in order."""
    info = loaded.info
    size = info["image_size"]
    return {
        "ckpt": str(cfg.ckpt), "weights": loaded.weights, "format": fmt, "file": name,
        "input_shape": input_shape, "dynamic_batch": dynamic, "max_abs_diff": diff,
        "layout": "NCHW", "dtype": "float32", "channel_order": "RGB" if info["in_channels"] == 3 else "L",
        "in_channels": info["in_channels"], "input_size": [size, size], "resize": info["resize"],
        "center_crop": info["center_crop"], "scale": "pixel values / 255 (0..1)", "mean": list(info["mean"]),
        "std": list(info["std"]), "classes": list(loaded.classes), "output": "logits (softmax for probabilities)",
        "torch_version": torch.__version__,
    }


def compare_with_eager(runner: Runner | None, model: nn.Module, sample: torch.Tensor) -> tuple[float | None,
                                                                                             bool | None]:
    """The largest difference from the eager model on `sample` (and on a batch of one when the export runs at
    another batch size), and whether it does; (None, None) when nothing here can run the export."""
    if runner is None:
        return None, None
    with torch.no_grad():
        diff = (runner(sample) - model(sample)).abs().max().item()
        one = sample[:1]
        try:
            single = runner(one)
        except Exception:  # an export fixed to the sample's batch size refuses others
            return diff, False
        return max(diff, (single - model(one)).abs().max().item()), True


@contextmanager
def staged_into(folder: Path) -> Iterator[Path]:
    """A temporary folder beside `folder` to write into. When the block succeeds its files move into `folder`
    (export.json last), which the rename itself creates when it does not exist; otherwise it is removed."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".export", dir=folder.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would make the run dir private to its writer
        yield staging
        if not folder.exists():
            staging.rename(folder)
            return
        for path in sorted(staging.iterdir(), key=lambda p: p.name == INFO_NAME):
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def require_onnx() -> None:
    """ONNX export needs the optional `onnx` package: say how to get it in one line."""
    if importlib.util.find_spec("onnx") is None:
        raise ExportError("export.format=onnx needs the onnx package: pip install -e '.[onnx]'")


def export_torchscript(model: nn.Module, sample: torch.Tensor, path: Path) -> Runner:
    """Trace (the models are static graphs), save, and reload.

    torch marks TorchScript deprecated; the user asked for it by name, so that warning is not repeated.
    """
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        traced = torch.jit.trace(model, sample)
        traced.save(str(path))
        return torch.jit.load(str(path), map_location="cpu")


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path) -> Runner | None:
    """TorchScript-based ONNX export (needs only `onnx`) with a dynamic batch axis; run by onnxruntime when it
    is installed (None otherwise)."""
    torch.onnx.export(model, (sample,), str(path), dynamo=False, input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(images: torch.Tensor) -> torch.Tensor:
        (outputs,) = session.run(["logits"], {"images": images.numpy()})
        return torch.from_numpy(outputs)

    return run


def export_program(model: nn.Module, sample: torch.Tensor, path: Path) -> Runner:
    """`torch.export`: an ExportedProgram with a dynamic batch dimension (fixed to the sample's batch size for a
    model whose graph depends on it), saved with `torch.export.save` and reloaded with `torch.export.load`.

    Load it with `torch.export.load("model.pt2").module()`: the returned module takes NCHW float32 images.
    """
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
    except Exception:  # a graph that specialises on the batch size: export it for the sample's size alone
        program = torch.export.export(model, (sample,))
    torch.export.save(program, str(path))
    return torch.export.load(str(path)).module()


EXPORTERS: dict[str, Callable[[nn.Module, torch.Tensor, Path], Runner | None]] = {
    "torchscript": export_torchscript, "onnx": export_onnx, "torch_export": export_program,
}
