"""Matplotlib figures for run reports: learning curves, the confusion matrix, labelled sample images.

matplotlib is imported inside each function with the file-only Agg backend, so nothing opens a window and
importing this module costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.figure import Figure

DPI = 100
MAX_ANNOTATED_CLASSES = 20
MAX_TICK_CHARS = 24  # class names on the confusion matrix's axes are shortened past this
TICK_CHAR_INCHES = 0.085  # the width of an average character of a 10 pt tick label, with some room to spare
TILE_INCHES = 1.8  # the longer side of a validation sample's tile
MAX_SAMPLE_NAME_CHARS = 10  # each class name in a tile's "predicted / true" label


def new_figure(width: float, height: float, columns: int = 1, rows: int = 1):
    """A figure and its axes, made without pyplot (no global state, no GUI backend).

    No layout engine: constrained layout re-solves on every draw and costs more than the drawing itself, so
    each figure sets fixed margins (see `inches`).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def shorten(text: str, limit: int) -> str:
    """`text` in at most `limit` characters: its start and its end around an ellipsis when it is longer
    (class names often share a prefix, so the end is what tells them apart)."""
    if len(text) <= limit:
        return text
    head = limit // 2
    return text[:head] + "\u2026" + text[len(text) - (limit - head - 1):]


def inches(figure: Figure, *, left: float = 0.0, right: float = 0.0, bottom: float = 0.0, top: float = 0.0,
           **spacing: float) -> dict:
    """Margins given in inches (room for tick labels, axis labels and titles), as figure fractions."""
    width, height = figure.get_size_inches()
    return {"left": left / width, "right": 1 - right / width, "bottom": bottom / height, "top": 1 - top / height,
            **spacing}


def render(figure: Figure) -> np.ndarray:
    """The figure drawn once by Agg, as H x W x 4 uint8 RGBA pixels (for a PNG file and TensorBoard alike)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def save_figure(figure: Figure, path: Path) -> Path:
    save_pixels(render(figure), path)
    return path


def save_pixels(pixels: np.ndarray, path: Path) -> Path:
    """Write rendered RGBA pixels as a PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def curves_figure(history: Sequence[dict], title: str = "learning curves") -> Figure:
    """Loss, accuracy and learning rate per epoch, train beside val, from metrics.csv-style rows."""
    figure, axes = new_figure(13, 4, columns=3)
    figure.subplots_adjust(**inches(figure, left=0.75, right=0.2, bottom=0.55, top=0.75, wspace=0.3))
    epochs = [row["epoch"] for row in history]
    panels = (("loss", ("train_loss", "val_loss")), ("accuracy", ("train_acc", "val_acc")), ("learning rate", ("lr",)))
    for ax, (label, keys) in zip(axes[0], panels, strict=True):
        for key in keys:
            values = [row.get(key) for row in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [float("nan") if v is None else float(v) for v in values], marker="o",
                        label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(title)
    return figure


def confusion_figure(matrix: torch.Tensor, classes: Sequence[str], title: str = "confusion matrix") -> Figure:
    """Counts as a heat map, true class down, predicted class across; numbers in cells up to 20 classes."""
    n = len(classes)
    side = min(max(6.0, 0.45 * n + 2.5), 30.0)
    figure, axes = new_figure(side, side)
    names = [shorten(str(c), MAX_TICK_CHARS) for c in classes]
    room = max((len(name) for name in names), default=1) * TICK_CHAR_INCHES + 0.15  # the longest name
    rotate = n > 10 or room > 0.5
    figure.subplots_adjust(**inches(figure, left=room + 0.45, right=0.8, top=0.45,
                                    bottom=(room if rotate else 0.25) + 0.4))
    ax = axes[0][0]
    counts = matrix.cpu().numpy()
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="count")
    ticks = range(n)
    ax.set_xticks(ticks, labels=names, rotation=90 if rotate else 0)
    ax.set_yticks(ticks, labels=names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if n <= MAX_ANNOTATED_CLASSES:
        threshold = counts.max() / 2 if counts.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if counts[i, j] > threshold else "black")
    return figure


def samples_figure(images: torch.Tensor, predicted: Sequence[str], true: Sequence[str],
                   title: str = "validation samples (predicted / true)") -> Figure:
    """Images (N x C x H x W, any range: each is min-max scaled) labelled `pred / true`, wrong ones in red.

    The images are tiled into one picture on one axes (a grid of small axes would cost seconds to draw): up
    to 8 a row, the longer side of each 1.8 inches, columns at least 2 inches apart and a 0.25-inch band
    above each tile for its label. One channel is shown in grey, three or more as RGB (the first three).
    """
    import torch

    n = len(images)
    columns = min(8, max(n, 1))
    rows = max(1, -(-n // columns))
    height, width = images.shape[2:] if n else (1, 1)
    scale = TILE_INCHES / max(height, width)  # inches per image pixel
    label_px = math.ceil(0.25 / scale)
    gap_px = max(math.ceil(0.2 / scale), math.ceil((TILE_INCHES + 0.2) / scale) - width)  # room for the label
    figure, axes = new_figure(max(6.0, columns * (width + gap_px) * scale + 0.2),
                              rows * (height + label_px) * scale + 0.6)
    figure.subplots_adjust(**inches(figure, left=0.1, right=0.1, bottom=0.1, top=0.45))
    figure.suptitle(title)
    ax = axes[0][0]
    ax.axis("off")
    if n == 0:
        return figure
    tiles = images.detach().float().cpu()
    low = tiles.amin(dim=(1, 2, 3), keepdim=True)
    high = tiles.amax(dim=(1, 2, 3), keepdim=True)
    tiles = (tiles - low) / (high - low).clamp(min=1e-8)
    tiles = tiles[:, :3] if tiles.shape[1] >= 3 else tiles[:, :1].expand(-1, 3, -1, -1)
    mosaic = torch.ones(3, rows * (height + label_px), columns * (width + gap_px) - gap_px)
    for index in range(n):
        row, column = divmod(index, columns)
        top, left = row * (height + label_px) + label_px, column * (width + gap_px)
        mosaic[:, top:top + height, left:left + width] = tiles[index]
        label = f"{shorten(predicted[index], MAX_SAMPLE_NAME_CHARS)} / {shorten(true[index], MAX_SAMPLE_NAME_CHARS)}"
        ax.text(left + (width - 1) / 2, top - 0.5 - label_px * 0.15, label, ha="center", va="bottom", fontsize=9,
                color="black" if predicted[index] == true[index] else "red")
    ax.imshow(mosaic.permute(1, 2, 0).numpy(), interpolation="nearest")
    return figure


def lr_find_figure(lrs: Sequence[float], losses: Sequence[float], raw: Sequence[float] | None = None,
                   suggestion: float | None = None, title: str = "lr_find") -> Figure:
    """`mode=lr_find`'s curve: the smoothed loss (and faintly each step's own) against the lr on a log axis,
    the suggested lr marked."""
    figure, axes = new_figure(7, 4.5)
    figure.subplots_adjust(**inches(figure, left=0.8, right=0.25, bottom=0.6, top=0.45))
    ax = axes[0][0]
    finite = [value for value in losses if math.isfinite(value)]
    if raw is not None:
        ax.plot(lrs, raw, color="tab:blue", alpha=0.25, linewidth=1, label="loss per step")
    ax.plot(lrs, losses, color="tab:blue", label="smoothed loss")
    if finite:  # the smoothed curve's range: a raw loss far above it would flatten the rest
        low, high = min(finite), max(finite)
        margin = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
        ax.set_ylim(low - margin, high + 2 * margin)
    if suggestion is not None:
        ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested lr {suggestion:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (optim.lr)")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return figure
