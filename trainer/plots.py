"""Matplotlib figures for run reports: learning curves, the confusion matrix, labelled sample images.

matplotlib is imported inside each function with the file-only Agg backend, so nothing opens a window and
importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.figure import Figure

DPI = 100
MAX_ANNOTATED_CLASSES = 20


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
    names = max((len(c) for c in classes), default=1) * 0.075 + 0.15  # inches of the longest class name
    rotate = n > 10 or names > 0.5
    figure.subplots_adjust(**inches(figure, left=min(names, 3.0) + 0.45, right=0.8, top=0.45,
                                    bottom=(min(names, 3.0) if rotate else 0.25) + 0.4))
    ax = axes[0][0]
    counts = matrix.cpu().numpy()
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="count")
    ticks = range(n)
    ax.set_xticks(ticks, labels=list(classes), rotation=90 if rotate else 0)
    ax.set_yticks(ticks, labels=list(classes))
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
    """Images (N x C x H x W, any range: each is min-max scaled) titled `pred / true`, wrong ones in red.

    The images are tiled into one picture on one axes: a grid of small axes would cost seconds to draw.
    """
    import torch

    n = len(images)
    columns = min(8, max(n, 1))
    rows = max(1, -(-n // columns))
    figure, axes = new_figure(2.0 * columns, 2.2 * rows + 0.4)
    figure.subplots_adjust(**inches(figure, left=0.1, right=0.1, bottom=0.1, top=0.45))
    ax = axes[0][0]
    ax.axis("off")
    figure.suptitle(title)
    if n == 0:
        return figure
    tiles = images.detach().float().cpu()
    low = tiles.amin(dim=(1, 2, 3), keepdim=True)
    high = tiles.amax(dim=(1, 2, 3), keepdim=True)
    tiles = (tiles - low) / (high - low).clamp(min=1e-8)
    tiles = tiles[:, :3] if tiles.shape[1] >= 3 else tiles[:, :1].expand(-1, 3, -1, -1)
    height, width = tiles.shape[2:]
    gap_x, gap_y = max(1, width // 8), max(2, height // 4)  # gap_y: room above each tile for its title
    mosaic = torch.ones(3, rows * (height + gap_y), columns * (width + gap_x) - gap_x)
    for index in range(n):
        row, column = divmod(index, columns)
        top, left = row * (height + gap_y) + gap_y, column * (width + gap_x)
        mosaic[:, top:top + height, left:left + width] = tiles[index]
        ok = predicted[index] == true[index]
        ax.text(left + (width - 1) / 2, top - 0.6, f"{predicted[index]} / {true[index]}", ha="center",
                va="bottom", fontsize=9, color="black" if ok else "red")
    ax.imshow(mosaic.permute(1, 2, 0).numpy(), interpolation="nearest")
    return figure
