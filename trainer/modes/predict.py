"""`mode=predict ckpt=PATH predict.input=FILE_OR_DIR`: top-k classes for image files, as predictions.csv.

The checkpoint's own weights classify (a best.pt's are those it was selected with, EMA or not), with the
test-time augmentation `eval.tta`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.table import Table

from trainer.errors import DataError
from trainer.modes.inference import image_transform, load_for_inference
from trainer.reporting.console import RunConsole
from trainer.reporting.run_files import write_csv
from trainer.training.runtime import Precision, select_device
from trainer.training.tta import with_tta

log = logging.getLogger("trainer")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
BATCH_SIZE = 64
SHOWN_ROWS = 10


def predict(cfg: DictConfig, run_dir: Path) -> Path:
    """Classify every image under `predict.input` and write `run_dir/predictions.csv`; returns its path."""
    from PIL import Image

    console = RunConsole(cfg.trainer.progress)
    files, root = image_files(Path(cfg.predict.input).expanduser())
    device = select_device(cfg.trainer.device)
    precision = Precision(cfg.trainer.precision, device)
    loaded = load_for_inference(cfg.ckpt, device)
    model = with_tta(loaded.model, cfg.eval.tta)
    transform = image_transform(loaded.info)
    k = min(cfg.predict.topk, len(loaded.classes))

    rows: list[dict] = []
    for start in range(0, len(files), BATCH_SIZE):
        chunk = files[start:start + BATCH_SIZE]
        batch = []
        for path in chunk:
            try:
                with Image.open(path) as image:
                    batch.append(transform(image))
            except OSError as err:
                raise DataError(f"cannot read image {path}: {err}") from None
        with torch.no_grad(), precision.autocast():
            logits = model(torch.stack(batch).to(device))
        probs, indices = logits.float().softmax(dim=1).topk(k, dim=1)
        for path, p, i in zip(chunk, probs.tolist(), indices.tolist(), strict=True):
            row = {"file": path.relative_to(root).as_posix()}
            for rank, (prob, index) in enumerate(zip(p, i, strict=True), start=1):
                row |= {f"top{rank}_class": loaded.classes[index], f"top{rank}_prob": round(prob, 6)}
            rows.append(row)

    out = run_dir / "predictions.csv"
    write_csv(out, rows)
    log.info("wrote %d predictions to %s", len(rows), out)
    if not console.quiet:
        console.console.print(predictions_table(rows[:SHOWN_ROWS], k, len(rows)))
    tta = "" if cfg.eval.tta == "none" else f", eval.tta={cfg.eval.tta}"
    console.info(f"{len(rows)} predictions (top {k}) from {cfg.ckpt} ({loaded.weights}{tta}) written to {out}")
    return out


def image_files(path: Path) -> tuple[list[Path], Path]:
    """The PNG/JPEG files to classify (a folder's, sorted, searched recursively) and the folder they are under."""
    if path.is_file():
        return [path], path.parent
    if not path.is_dir():
        raise DataError(f"predict.input {path} does not exist (give an image file or a folder of images)")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"predict.input {path} holds no {', '.join(IMAGE_SUFFIXES)} files")
    return files, path


def predictions_table(rows: list[dict], k: int, total: int) -> Table:
    shown = min(k, 3)
    table = Table(title=f"predictions (first {len(rows)} of {total})", title_justify="left")
    table.add_column("file", style="bold cyan")
    for rank in range(1, shown + 1):
        table.add_column(f"top{rank}")
    for row in rows:
        table.add_row(row["file"], *(f"{row[f'top{r}_class']} ({row[f'top{r}_prob']:.3f})"
                                     for r in range(1, shown + 1)))
    return table
