"""Figures, part two: the one path from ``draw_*`` functions to a Figure, a file or PNG bytes.

:func:`figure` builds a plain ``matplotlib.figure.Figure`` with its own Agg canvas (no pyplot, so a
notebook's backend is never touched) and lets a ``draw(fig)`` callable fill it; :func:`save_figure`
writes a Figure to a file atomically (a failed write leaves no partial file) and
:func:`figure_bytes` encodes it to bytes (the dashboards' PNGs); both go through the same writer.
The figure builders of the package (:func:`labelled_grid`, :func:`h_statistics_figure`,
:func:`save_image_grid`, the quality plots, the report's figures, the dashboards' and the edit
property figure) all use these.

>>> from diffgeo.viz.draw import draw_curves
>>> fig = figure(lambda f: draw_curves(f.subplots(), [0, 1], {"a": [0, 1]}, xlabel="x", ylabel="y"), size=(2, 2))
>>> figure_bytes(fig)[:4]
b'\\x89PNG'
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import torch

from diffgeo.core.io import atomic_path
from diffgeo.viz.draw import draw_h_statistics, draw_images, draw_labelled_grid, image_grid

__all__ = ["figure", "save_figure", "figure_bytes", "labelled_grid", "h_statistics_figure", "save_image_grid"]


def figure(draw: Callable[[Any], None] | None = None, *, size: tuple[float, float] = (6.0, 3.0), dpi: int = 100,
           title: str | None = None, layout: str | None = "tight"):
    """A fresh ``matplotlib.figure.Figure`` of ``size`` inches (W, H) on an Agg canvas, filled by ``draw(fig)``.

    ``title``: a suptitle (fontsize 9). ``layout``: ``"tight"`` (``tight_layout`` after drawing),
    ``"constrained"`` (the constrained layout engine) or None (as drawn).

    >>> fig = figure(lambda f: f.subplots(1, 2), size=(4, 2), title="two panels")
    >>> len(fig.axes), fig.get_size_inches().tolist()
    (2, [4.0, 2.0])
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if layout not in ("tight", "constrained", None):
        raise ValueError(f"layout must be 'tight', 'constrained' or None, got {layout!r}")
    fig = Figure(figsize=size, dpi=dpi, layout="constrained" if layout == "constrained" else None)
    FigureCanvasAgg(fig)
    if draw is not None:
        draw(fig)
    if title:
        fig.suptitle(title, fontsize=9)
    if layout == "tight":
        fig.tight_layout()
    return fig


def _write(fig: Any, target: str | Path | IO[bytes], fmt: str, dpi: float | None) -> None:
    """The one writer: ``fig.savefig`` in ``fmt``; a PNG carries no software stamp (same bytes each run)."""
    metadata = {"Software": None} if fmt == "png" else None
    fig.savefig(target, format=fmt, dpi=dpi, metadata=metadata)


def save_figure(fig: Any, path: str | Path, *, dpi: float | None = None) -> Path:
    """Write a matplotlib Figure as an image (format from the suffix, default PNG), atomically:
    a failed write leaves no partial file. Returns the path.

    >>> import tempfile, pathlib
    >>> from diffgeo.viz.draw import draw_curves
    >>> fig = figure(lambda f: draw_curves(f.subplots(), [0, 1], {"a": [0, 1]}, xlabel="x", ylabel="y"), size=(1, 1))
    >>> save_figure(fig, pathlib.Path(tempfile.mkdtemp()) / "f.png").stat().st_size > 0
    True
    """
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    with atomic_path(path) as tmp:
        _write(fig, tmp, fmt, dpi)
    return path


def figure_bytes(fig: Any, fmt: str = "png", *, dpi: float | None = None) -> bytes:
    """The Figure encoded as ``fmt`` (default PNG) bytes, through the same writer as :func:`save_figure`.

    >>> figure_bytes(figure(size=(1, 1)))[:4]
    b'\\x89PNG'
    """
    buf = io.BytesIO()
    _write(fig, buf, fmt, dpi)
    return buf.getvalue()


def labelled_grid(images: torch.Tensor, row_labels: Sequence[str], *, nrow: int, title: str | None = None,
                  marks: Sequence[bool] | None = None):
    """A Figure of :func:`draw_labelled_grid`, sized so that each pixel is drawn a few times larger.

    >>> fig = labelled_grid(torch.zeros(4, 1, 8, 8), ["a", "b"], nrow=2, title="two rows")
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['a', 'b']
    """
    rows = (images.shape[0] + nrow - 1) // nrow
    h, w, pad = images.shape[-2], images.shape[-1], 1
    height, width = rows * (h + pad) + pad, nrow * (w + pad) + pad
    scale = max(2, 96 // h)
    longest = max((len(s) for s in row_labels), default=0)
    return figure(lambda fig: draw_labelled_grid(fig.subplots(), images, row_labels, nrow=nrow, title=title, marks=marks),
                  size=(width * scale / 100 + 0.5 + 0.09 * longest, height * scale / 100 + 0.5))


def h_statistics_figure(stats, title: str = ""):
    """A Figure of :func:`draw_h_statistics` (three panels side by side) with a title.

    >>> from diffgeo.geometry.hstats import HStatistics
    >>> s = HStatistics(torch.tensor([500, 0]), torch.ones(2), torch.zeros(2), torch.tensor([1.0, float("nan")]))
    >>> len(h_statistics_figure(s, "h").axes)
    3
    """
    return figure(lambda fig: draw_h_statistics(fig.subplots(1, 3), stats), size=(11, 3.2), title=title)


def save_image_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 8, scale: int = 4, title: str | None = None,
                    marks: Sequence[bool] | None = None) -> Path:
    """Save a grid of images as a PNG (atomic write); each pixel drawn ``scale`` times larger.

    >>> import tempfile, pathlib
    >>> save_image_grid(torch.zeros(4, 3, 8, 8), pathlib.Path(tempfile.mkdtemp()) / "g.png", nrow=2).suffix
    '.png'
    """
    grid = image_grid(images, nrow=nrow, marks=marks)
    height = grid.shape[0] * scale / 100

    def draw(fig: Any) -> None:
        draw_images(fig.add_axes((0, 0, 1, height / fig.get_figheight())), images, nrow=nrow, marks=marks)
        if title:
            fig.suptitle(title, fontsize=9, y=0.995)

    return save_figure(figure(draw, size=(grid.shape[1] * scale / 100, height + (0.35 if title else 0)), layout=None),
                       path)
