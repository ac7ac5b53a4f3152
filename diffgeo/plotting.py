"""Figures: image grids and line plots (matplotlib, Agg-safe).

>>> import torch
>>> grid = image_grid(torch.zeros(6, 3, 4, 4), nrow=3)
>>> grid.shape
(11, 16, 3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .io import atomic_path

__all__ = ["image_grid", "save_image_grid", "labelled_grid"]


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1, marks: Sequence[bool] | None = None) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] into an RGB array (rows*H, cols*W, 3) in [0, 1].

    ``marks``: optional per-image flags; flagged images get a red frame.
    """
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, _, h, w = x.shape
    rows = (n + nrow - 1) // nrow
    grid = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        grid[y0:y0 + h, x0:x0 + w] = x[i].permute(1, 2, 0).numpy()
        if marks is not None and marks[i]:
            grid[y0 - pad:y0 + h + pad, x0 - pad:x0 + w + pad][[0, -1], :] = (1, 0, 0)
            grid[y0 - pad:y0 + h + pad, x0 - pad:x0 + w + pad][:, [0, -1]] = (1, 0, 0)
    return grid


def labelled_grid(images: torch.Tensor, row_labels: Sequence[str], *, nrow: int, title: str | None = None,
                  marks: Sequence[bool] | None = None):
    """A matplotlib Figure of images (N, C, H, W) in [-1, 1], ``nrow`` per row, each row labelled
    on the left by its entry of ``row_labels`` (one per row); ``marks`` as in :func:`image_grid`.

    >>> fig = labelled_grid(torch.zeros(4, 1, 8, 8), ["a", "b"], nrow=2, title="two rows")
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['a', 'b']
    """
    import matplotlib.pyplot as plt

    labels = list(row_labels)
    rows = (images.shape[0] + nrow - 1) // nrow
    if len(labels) != rows:
        raise ValueError(f"{len(labels)} row labels for {rows} rows of {nrow} images")
    grid = image_grid(images, nrow=nrow, marks=marks)
    h, pad = images.shape[-2], 1
    scale = max(2, 96 // h)
    width = grid.shape[1] * scale / 100 + 0.5 + 0.09 * max(len(s) for s in labels)  # room for the labels
    fig, ax = plt.subplots(figsize=(width, grid.shape[0] * scale / 100 + 0.5), dpi=100)
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(rows)], labels, fontsize=8)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def save_image_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 8, scale: int = 4, title: str | None = None,
                    marks: Sequence[bool] | None = None) -> Path:
    """Save a grid of images as a PNG (atomic write); each pixel drawn ``scale`` times larger."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    grid = image_grid(images, nrow=nrow, marks=marks)
    fig = plt.figure(figsize=(grid.shape[1] * scale / 100, grid.shape[0] * scale / 100 + (0.35 if title else 0)), dpi=100)
    ax = fig.add_axes((0, 0, 1, grid.shape[0] * scale / 100 / fig.get_figheight()))
    ax.imshow(grid, interpolation="nearest")
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9, y=0.995)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
