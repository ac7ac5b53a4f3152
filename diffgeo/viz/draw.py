"""Figures: pure ``draw_*(ax, data)`` functions, and saving at the edge.

Every figure of the package is drawn by a ``draw_*`` function onto axes it is given, so a
notebook, a dashboard or a script can place it anywhere. Figures built here are plain
``matplotlib.figure.Figure`` objects (no pyplot, no backend switching: a notebook's backend is
never touched); :func:`save_figure` writes one atomically.

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

from diffgeo.core.io import atomic_path
from diffgeo.data.shapes import COLOURS, CONTINUOUS, RANGES, SHAPES

__all__ = ["image_grid", "save_image_grid", "labelled_grid", "save_figure", "draw_labelled_grid", "draw_h_statistics",
           "h_statistics_figure", "draw_quality"]
__all__ += ["draw_images", "draw_spectra", "draw_curves", "draw_scatter", "draw_matrix"]  # dashboards


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


def draw_labelled_grid(ax, images: torch.Tensor, row_labels: Sequence[str], *, nrow: int, title: str | None = None,
                       marks: Sequence[bool] | None = None) -> None:
    """Images (N, C, H, W) in [-1, 1], ``nrow`` per row, each row labelled on the left by its entry
    of ``row_labels`` (one per row); ``marks`` as in :func:`image_grid`.

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_labelled_grid(ax, torch.zeros(4, 1, 8, 8), ["a", "b"], nrow=2)
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['a', 'b']
    """
    labels = list(row_labels)
    rows = (images.shape[0] + nrow - 1) // nrow
    if len(labels) != rows:
        raise ValueError(f"{len(labels)} row labels for {rows} rows of {nrow} images")
    h, pad = images.shape[-2], 1
    ax.imshow(image_grid(images, nrow=nrow, marks=marks), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(rows)], labels, fontsize=8)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=8)


def labelled_grid(images: torch.Tensor, row_labels: Sequence[str], *, nrow: int, title: str | None = None,
                  marks: Sequence[bool] | None = None):
    """A Figure of :func:`draw_labelled_grid`, sized so that each pixel is drawn a few times larger.

    >>> fig = labelled_grid(torch.zeros(4, 1, 8, 8), ["a", "b"], nrow=2, title="two rows")
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['a', 'b']
    """
    from matplotlib.figure import Figure

    rows = (images.shape[0] + nrow - 1) // nrow
    h, w, pad = images.shape[-2], images.shape[-1], 1
    height, width = rows * (h + pad) + pad, nrow * (w + pad) + pad
    scale = max(2, 96 // h)
    longest = max((len(s) for s in row_labels), default=0)
    fig = Figure(figsize=(width * scale / 100 + 0.5 + 0.09 * longest, height * scale / 100 + 0.5), dpi=100)
    draw_labelled_grid(fig.subplots(), images, row_labels, nrow=nrow, title=title, marks=marks)
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path, *, dpi: int | None = None) -> Path:
    """Write a matplotlib Figure as an image (format from the suffix, default PNG), atomically:
    a failed write leaves no partial file. Returns the path.

    >>> import tempfile, pathlib
    >>> from matplotlib.figure import Figure
    >>> fig = Figure(figsize=(1, 1))
    >>> draw_curves(fig.subplots(), [0, 1], {"a": [0, 1]}, xlabel="x", ylabel="y")
    >>> save_figure(fig, pathlib.Path(tempfile.mkdtemp()) / "f.png").stat().st_size > 0
    True
    """
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return path


def draw_h_statistics(axes: Sequence, stats) -> None:
    """An :class:`~diffgeo.geometry.hstats.HStatistics` on three axes: mean ||h||, cosine of h between
    samples, cosine of h between consecutive steps, each over timesteps (noise on the left).

    >>> from matplotlib.figure import Figure
    >>> from diffgeo.geometry.hstats import HStatistics
    >>> s = HStatistics(torch.tensor([500, 0]), torch.ones(2), torch.zeros(2), torch.tensor([1.0, float("nan")]))
    >>> axes = Figure().subplots(1, 3)
    >>> draw_h_statistics(axes, s)
    >>> [len(ax.lines) for ax in axes]
    [1, 1, 1]
    """
    t = stats.timesteps.numpy()
    panels = ((stats.norm, "mean ||h||", "C0", slice(None)),
              (stats.cross_sample_cosine, "cosine of h between samples", "C1", slice(None)),
              (stats.step_cosine, "cosine of h between consecutive steps", "C2", slice(None, -1)))
    for ax, (values, title, colour, keep) in zip(axes, panels):
        ax.plot(t[keep], values.numpy()[keep], marker=".", color=colour)
        ax.set(title=title, xlabel="timestep t")
        if not ax.xaxis_inverted():
            ax.invert_xaxis()  # sampling runs from noise (large t) to data (t = 0)
        ax.grid(alpha=0.3)


def h_statistics_figure(stats, title: str = ""):
    """A Figure of :func:`draw_h_statistics` (three panels side by side) with a title.

    >>> from diffgeo.geometry.hstats import HStatistics
    >>> s = HStatistics(torch.tensor([500, 0]), torch.ones(2), torch.zeros(2), torch.tensor([1.0, float("nan")]))
    >>> len(h_statistics_figure(s, "h").axes)
    3
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.2), dpi=100)
    draw_h_statistics(fig.subplots(1, 3), stats)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def draw_quality(axes: Sequence, report) -> None:
    """A :class:`~diffgeo.evaluation.quality.QualityReport` on six axes: the generated class frequencies
    (shape, colour) and the histograms of the four continuous factors, each against the training
    distribution (dashed). Where the report has a ``floor``, each title adds the 95th percentile
    the measure reads for exact draws of the training distribution at the same n.

    >>> from matplotlib.figure import Figure
    >>> from diffgeo.evaluation.quality import QualityReport
    >>> from diffgeo.data.shapes import COLOURS, CONTINUOUS, RANGES, SHAPES
    >>> r = QualityReport(4, 5, 0, 1.0, [], [],
    ...                   {"shape": {s: 1 / 3 for s in SHAPES}, "colour": {c: 1 / 6 for c in COLOURS}},
    ...                   {"shape": 0.0, "colour": 0.0}, {k: 0.1 for k in CONTINUOUS},
    ...                   {k: [sum(RANGES[k]) / 2] for k in CONTINUOUS})
    >>> axes = Figure().subplots(1, 6)
    >>> draw_quality(axes, r)
    >>> axes[0].get_title()
    'shape (TV 0.000)'
    """

    for ax, name, labels in ((axes[0], "shape", SHAPES), (axes[1], "colour", COLOURS)):
        ax.bar(range(len(labels)), list(report.class_frequencies[name].values()), color="C0", label="generated")
        ax.axhline(1 / len(labels), color="k", ls="--", lw=1, label="training")
        ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
        ax.set_title(f"{name} (TV {report.class_tv[name]:.3f})" + _floor_note(report, name), fontsize=9)
    axes[0].legend(fontsize=7)
    for ax, name in zip(axes[2:], CONTINUOUS):
        lo, hi = RANGES[name]
        ax.hist(report.continuous_values[name], bins=20, range=(lo, hi), density=True, color="C0")
        ax.axhline(1 / (hi - lo), color="k", ls="--", lw=1)
        ax.set_title(f"{name} (KS {report.continuous_ks[name]:.3f})" + _floor_note(report, name), fontsize=9)


def _floor_note(report, name: str) -> str:
    floor = report.floor.get(name)
    return f"\nexact data: <= {floor[1]:.3f} (95%)" if floor else ""


def save_image_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 8, scale: int = 4, title: str | None = None,
                    marks: Sequence[bool] | None = None) -> Path:
    """Save a grid of images as a PNG (atomic write); each pixel drawn ``scale`` times larger.

    >>> import tempfile, pathlib
    >>> save_image_grid(torch.zeros(4, 3, 8, 8), pathlib.Path(tempfile.mkdtemp()) / "g.png", nrow=2).suffix
    '.png'
    """
    from matplotlib.figure import Figure

    grid = image_grid(images, nrow=nrow, marks=marks)
    fig = Figure(figsize=(grid.shape[1] * scale / 100, grid.shape[0] * scale / 100 + (0.35 if title else 0)), dpi=100)
    ax = fig.add_axes((0, 0, 1, grid.shape[0] * scale / 100 / fig.get_figheight()))
    draw_images(ax, images, nrow=nrow, marks=marks)
    if title:
        fig.suptitle(title, fontsize=9, y=0.995)
    return save_figure(fig, path)


# -- draw functions of the dashboards (diffgeo.widgets) ----------------------------------------
def draw_images(ax, images: torch.Tensor, *, nrow: int, captions: Sequence[str] | None = None,
                title: str | None = None, marks: Sequence[bool] | None = None) -> None:
    """Images (N, C, H, W) in [-1, 1] tiled ``nrow`` per row on ``ax``; ``captions`` (one per
    image) written under each tile; ``marks`` as in :func:`image_grid`.

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_images(ax, torch.zeros(2, 1, 4, 4), nrow=2, captions=["a", "b"])
    >>> [t.get_text() for t in ax.texts]
    ['a', 'b']
    """
    if captions is not None and len(captions) != images.shape[0]:
        raise ValueError(f"{len(captions)} captions for {images.shape[0]} images")
    grid = image_grid(images, nrow=nrow, marks=marks)
    h, w, pad = images.shape[-2], images.shape[-1], 1
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    for i, text in enumerate(captions or []):
        r, c = divmod(i, nrow)
        ax.text(pad + c * (w + pad) + w / 2, pad + r * (h + pad) + h - 0.5, text, ha="center", va="top",
                fontsize=7, color="black", bbox=dict(facecolor="white", alpha=0.75, edgecolor="none", pad=0.5))
    if title:
        ax.set_title(title, fontsize=9)


def draw_spectra(ax, freqs: torch.Tensor, power: torch.Tensor, *, labels: Sequence[str] | None = None,
                 title: str | None = None) -> None:
    """Radial power spectra ``power`` (k, R) over ``freqs`` (R,) (as returned by
    :func:`diffgeo.radial_power_spectrum`), one line each, log power.

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_spectra(ax, torch.tensor([0.0, 0.25, 0.5]), torch.ones(2, 3), labels=["v1", "v2"])
    >>> len(ax.lines)
    2
    """
    power = torch.as_tensor(power, dtype=torch.float64)
    for i, row in enumerate(power):
        ax.semilogy(torch.as_tensor(freqs).tolist(), row.clamp_min(1e-12).tolist(),
                    label=labels[i] if labels else None, lw=1.2)
    ax.set_xlabel("spatial frequency (cycles / pixel)", fontsize=8)
    ax.set_ylabel("power", fontsize=8)
    ax.tick_params(labelsize=7)
    if labels:
        ax.legend(fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=9)


def draw_curves(ax, x: Sequence[float], curves: dict[str, Sequence[float]], *, xlabel: str, ylabel: str,
                title: str | None = None, reverse_x: bool = False, marker: str = "o",
                highlight: float | None = None) -> None:
    """One line per entry of ``curves`` (label -> values over ``x``); ``reverse_x`` for
    timesteps (noise on the left); ``highlight`` draws a vertical line at that x.

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_curves(ax, [1, 2], {"a": [0.1, 0.2], "b": [0.3, 0.1]}, xlabel="t", ylabel="d")
    >>> [l.get_label() for l in ax.lines]
    ['a', 'b']
    """
    for label, values in curves.items():
        ax.plot(list(x), [float(v) for v in values], marker=marker, ms=3, lw=1.2, label=label)
    if highlight is not None:
        ax.axvline(float(highlight), color="grey", lw=0.8, ls="--")
    if reverse_x and not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if len(curves) > 1:
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)


def draw_scatter(ax, x: Sequence[float], y: Sequence[float], *, labels: Sequence[str] | None = None,
                 xlabel: str, ylabel: str, title: str | None = None) -> None:
    """Points (x, y), each annotated with its label.

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_scatter(ax, [0.5, 0.9], [1.0, 0.2], labels=["p", "q"], xlabel="similarity", ylabel="distance")
    >>> [t.get_text() for t in ax.texts]
    ['p', 'q']
    """
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    ax.scatter(xs, ys, s=18)
    for xi, yi, text in zip(xs, ys, labels or []):
        ax.annotate(text, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)


def draw_matrix(ax, matrix: torch.Tensor, labels: Sequence[str], *, title: str | None = None) -> None:
    """A square matrix (n, n) as a heat map with its values written in, rows and columns labelled.

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_matrix(ax, torch.eye(2), ["a", "b"])
    >>> [t.get_text() for t in ax.texts]
    ['1.00', '0.00', '0.00', '1.00']
    """
    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.dim() != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(labels):
        raise ValueError(f"matrix must be (n, n) with n = len(labels) = {len(labels)}, got {tuple(m.shape)}")
    ax.imshow(m.numpy(), cmap="viridis")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{float(m[i, j]):.2f}", ha="center", va="center", fontsize=6, color="white")
    ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    if title:
        ax.set_title(title, fontsize=9)


# -- analyses (diffgeo.analyses results; duck-typed, so this module does not import them) --------
__all__ += ["draw_band_vs_t", "draw_spectral_centroid", "draw_shared_tangents", "draw_basis_heatmap",
            "draw_prompt_geometry", "draw_cond_uncond", "draw_curvedness", "draw_guidance_artefact"]


def draw_band_vs_t(ax, ts: Sequence[int], mean: Sequence[float], low: Sequence[float], high: Sequence[float], *,
                   label: str | None = None, ylabel: str = "", title: str | None = None) -> None:
    """A curve over timesteps with its 95% band; t decreases to the right (sampling order).

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_band_vs_t(ax, [900, 500, 100], [0.1, 0.2, 0.3], [0.0, 0.1, 0.2], [0.2, 0.3, 0.4], label="a")
    >>> bool(ax.xaxis_inverted()), len(ax.lines)
    (True, 1)
    """
    ts = [int(t) for t in ts]
    ax.plot(ts, [float(v) for v in mean], marker="o", ms=3, label=label)
    ax.fill_between(ts, [float(v) for v in low], [float(v) for v in high], alpha=0.25)
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xlabel("timestep t (noisy -> clean)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    if label:
        ax.legend(fontsize=7)


def draw_spectral_centroid(ax, data) -> None:
    """Analysis 1 (a CoarseToFine): mean spectral centroid of the basis vectors vs t with its band."""
    draw_band_vs_t(ax, data.ts, data.mean, data.low, data.high, label=data.model,
                   ylabel="spectral centroid (cycles/pixel)", title="1. coarse to fine")


def draw_shared_tangents(ax, data) -> None:
    """Analyses 2/3: one SharedTangents, or a dict name -> SharedTangents (one curve per model)."""
    curves = data if isinstance(data, dict) else {data.model: data}
    for name, c in curves.items():
        draw_band_vs_t(ax, c.ts, c.mean, c.low, c.high, label=name,
                       ylabel="mean pairwise Grassmann distance / max",
                       title="2-3. distance between samples' tangent spaces")


def draw_basis_heatmap(ax, data) -> None:
    """Analysis 4 (a Discrepancy): mean Grassmann distance / max between a trajectory's bases at t and t'."""
    draw_matrix(ax, data.heatmap / data.max_distance, [str(t) for t in data.ts],
                title="4. basis distance across t (/ max)")


def draw_prompt_geometry(ax, data) -> None:
    """Analysis 5a (a PromptGeometry): tangent distance vs text-embedding distance, one point per prompt pair."""
    p = len(data.prompts)
    iu = [(i, j) for i in range(p) for j in range(i + 1, p)]
    draw_scatter(ax, [float(data.text[i, j]) for i, j in iu], [float(data.tangent[i, j]) for i, j in iu],
                 xlabel="text-embedding cosine distance", ylabel="tangent-space Grassmann distance",
                 title=f"5a. prompts ({data.model}, t={data.t})")


def draw_cond_uncond(ax, data) -> None:
    """Analysis 5b (a CondUncond): distance between conditional and unconditional bases vs t."""
    draw_band_vs_t(ax, data.ts, data.mean, data.low, data.high, label=f"{data.model}: {data.prompt!r}",
                   ylabel="Grassmann distance / max", title="5b. cond vs uncond bases")


def draw_curvedness(ax, data) -> None:
    """Analysis 6 (a Curvedness): each definition's values over segments against its flat baseline (log)."""
    names = list(data.values)
    for i, name in enumerate(names):
        v = data.values[name].double().clamp_min(1e-12).numpy()
        f = data.flat[name].double().abs().clamp_min(1e-12).numpy()
        ax.scatter(np.full(len(v), i - 0.1), v, color="C0", s=12, label="segments" if i == 0 else None)
        ax.scatter(np.full(len(f), i + 0.1), f, color="C3", marker="x", s=12, label="flat baseline" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, fontsize=7)
    ax.set_title(f"6. curvedness ({data.model}, t={data.t})", fontsize=9)
    ax.legend(fontsize=7)


def draw_guidance_artefact(ax, data) -> None:
    """Analysis 5c (a GuidanceArtefact): border chroma towards the complement colour, low vs high guidance."""
    lo, hi = data.chroma_low.numpy(), data.chroma_high.numpy()
    for a, b in zip(lo, hi):
        ax.plot([0, 1], [a, b], color="0.7", lw=0.5)
    ax.boxplot([lo, hi], positions=[0, 1], widths=0.3)
    ax.set_xticks([0, 1], ["guidance 1.5", "guidance 4"])
    ax.set_ylabel("border chroma towards complement")
    ax.set_title("5c. guidance artefact", fontsize=9)


__all__ += ["draw_edit_transfer"]


def draw_edit_transfer(ax, data) -> None:
    """Analysis 4b (a Discrepancy with ``transfer``): effect of v_1 found at t_i applied at t_j, relative to
    v_1 found at t_j (1 on the diagonal)."""
    draw_matrix(ax, data.transfer, [str(t) for t in data.ts],
                title="4b. edit found at t (row) applied at t' (column)")
    ax.set_ylabel("direction found at t", fontsize=8)
    ax.set_xlabel("applied at t'", fontsize=8)


def draw_edit_properties(ax, table) -> None:
    """Mean change of the intended factor (with its spread over samples) and validity against
    strength, for one :class:`diffgeo.editing.properties.EditProperties`."""
    s, m, sd = table.strengths, table.mean_change, table.spread
    ax.errorbar(s, m, yerr=sd, marker="o", capsize=3, label=f"{table.factor} -> {table.target}")
    ax.plot(s, table.validity, marker="s", ls="--", label="valid")
    for k, v in table.specificity.items():
        ax.plot(s, v, marker="^", ls=":", label=f"{k} changed")
    ax.axhline(0, color="0.7", lw=0.5)
    ax.set_xlabel("strength", fontsize=8)
    ax.set_title(f"{table.model} {table.space}-space: R^2 {table.r2:.2f}, flip {table.sign_flip}", fontsize=8)
    ax.legend(fontsize=6)
