"""Plots of a :class:`~diffgeo.evaluation.quality.QualityReport`: its factor distributions and its invalid
samples, drawn by :mod:`diffgeo.viz` and saved through its one atomic save path.

>>> from diffgeo.viz.draw import draw_quality
>>> callable(draw_quality)
True
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffgeo.evaluation.quality import QualityReport
from diffgeo.viz.draw import draw_quality
from diffgeo.viz.figures import figure, save_figure, save_image_grid

__all__ = ["plot_report", "plot_invalid"]


def plot_report(report: QualityReport, path: str | Path) -> Path:
    """Save :func:`diffgeo.viz.draw.draw_quality` of the report (six panels) as a PNG (atomic,
    :func:`diffgeo.viz.figures.save_figure`).

    >>> import tempfile, pathlib
    >>> from diffgeo.data.shapes import COLOURS, CONTINUOUS, RANGES, SHAPES
    >>> r = QualityReport(4, 5, 0, 1.0, [], [],
    ...                   {"shape": {s: 1 / 3 for s in SHAPES}, "colour": {c: 1 / 6 for c in COLOURS}},
    ...                   {"shape": 0.0, "colour": 0.0}, {k: 0.1 for k in CONTINUOUS},
    ...                   {k: [sum(RANGES[k]) / 2] for k in CONTINUOUS})
    >>> plot_report(r, pathlib.Path(tempfile.mkdtemp()) / "quality.png").stat().st_size > 0
    True
    """
    title = (f"{report.n} samples, {report.steps} DDIM steps: {report.valid_rate:.1%} valid "
             f"({report.out_of_range_rate:.1%} more are clean scenes past the training ranges); "
             "factors of the valid ones read by the probe vs the training distribution (dashed)")
    return save_figure(figure(lambda fig: draw_quality(fig.subplots(1, 6), report), size=(16, 2.8), title=title), path)


def plot_invalid(images: torch.Tensor, report: QualityReport, path: str | Path) -> Path | None:
    """Save the report's invalid samples of ``images`` (the ones it scored) as a grid (atomic), the
    malformed ones framed red, the others being clean scenes past the training ranges. When every
    sample is valid: None, and a figure left at ``path`` by an earlier run is removed.

    >>> import tempfile, pathlib
    >>> from diffgeo.data.shapes import COLOURS, CONTINUOUS, SHAPES
    >>> r = QualityReport(2, 5, 0, 0.5, [1], [],
    ...                   {"shape": {s: 1 / 3 for s in SHAPES}, "colour": {c: 1 / 6 for c in COLOURS}},
    ...                   {"shape": 0.0, "colour": 0.0}, {k: 0.1 for k in CONTINUOUS}, {k: [] for k in CONTINUOUS})
    >>> plot_invalid(torch.zeros(2, 3, 8, 8), r, pathlib.Path(tempfile.mkdtemp()) / "invalid.png").name
    'invalid.png'
    """

    if not report.invalid:
        Path(path).unlink(missing_ok=True)
        return None
    clean = set(report.out_of_range)
    return save_image_grid(images[report.invalid], path, nrow=16, scale=3,
                           marks=[i not in clean for i in report.invalid],
                           title=f"the {len(report.invalid)} invalid of {report.n} samples: "
                                 f"{len(clean)} clean scenes past the training ranges, the others framed red")
