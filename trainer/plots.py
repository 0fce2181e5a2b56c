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
    """A figure and its axes, made without pyplot (no global state, no GUI backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


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
    ax = axes[0][0]
    counts = matrix.cpu().numpy()
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="count")
    ticks = range(n)
    ax.set_xticks(ticks, labels=list(classes), rotation=90 if n > 10 else 0)
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
    """Images (N x C x H x W, any range: each is min-max scaled) titled `pred / true`, wrong ones in red."""
    n = len(images)
    columns = min(8, n)
    rows = max(1, -(-n // columns))
    figure, axes = new_figure(2.0 * columns, 2.2 * rows + 0.4, columns=columns, rows=rows)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= n:
            continue
        image = images[index].detach().float().cpu()
        image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-8)
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", interpolation="nearest")
        else:
            ax.imshow(image[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
        ok = predicted[index] == true[index]
        ax.set_title(f"{predicted[index]} / {true[index]}", fontsize=9, color="black" if ok else "red")
    figure.suptitle(title)
    return figure
