"""Figures, part one: pure ``draw_*(ax, data)`` functions.

Every figure of the package is drawn by a ``draw_*`` function onto axes it is given, so a
notebook, a dashboard or a script can place it anywhere. Building a Figure and writing it (to a
file, atomically, or to PNG bytes) is :mod:`diffgeo.viz.figures`, the one save path.

>>> import torch
>>> grid = image_grid(torch.zeros(6, 3, 4, 4), nrow=3)
>>> grid.shape
(11, 16, 3)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from diffgeo.data.shapes import COLOURS, CONTINUOUS, RANGES, SHAPES

__all__ = ["image_grid", "draw_labelled_grid", "draw_h_statistics", "draw_quality"]
__all__ += ["draw_images", "draw_spectra", "draw_curves", "draw_scatter", "draw_matrix"]  # dashboards
__all__ += ["draw_unet", "draw_h_pca"]  # notebooks


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1, marks: Sequence[bool] | None = None) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] into an RGB array (rows*H, cols*W, 3) in [0, 1].

    ``marks``: optional per-image flags; flagged images get a red frame.
   

    >>> image_grid(torch.zeros(3, 1, 4, 4), nrow=2, marks=[True, False, False]).shape
    (11, 11, 3)
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


def draw_matrix(ax, matrix: torch.Tensor, labels: Sequence[str], *, title: str | None = None,
                vmin: float | None = None, vmax: float | None = None, colorbar: str | None = None) -> None:
    """A square matrix (n, n) as a heat map with its values written in (dark text on light cells,
    light on dark), rows and columns labelled; ``vmin``/``vmax`` fix the colour scale and
    ``colorbar`` (its label) adds a colour bar.

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_matrix(ax, torch.eye(2), ["a", "b"])
    >>> [t.get_text() for t in ax.texts]
    ['1.00', '0.00', '0.00', '1.00']
    """
    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.dim() != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(labels):
        raise ValueError(f"matrix must be (n, n) with n = len(labels) = {len(labels)}, got {tuple(m.shape)}")
    im = ax.imshow(m.numpy(), cmap="viridis", vmin=vmin, vmax=vmax)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            r, g, b, _ = im.cmap(im.norm(float(m[i, j])))
            ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i, f"{float(m[i, j]):.2f}", ha="center", va="center", fontsize=6, color=ink)
    if colorbar is not None:
        bar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label(colorbar, fontsize=7)
        bar.ax.tick_params(labelsize=6)
    ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    if title:
        ax.set_title(title, fontsize=9)


def draw_unet(ax, config: dict, h_shape: Sequence[int], h_module: str = "mid_block") -> None:
    """Where h sits: the U-Net of a diffusers ``config`` (``sample_size``, ``in_channels``,
    ``block_out_channels``, ``down_block_types``, ``up_block_types``) as boxes, down blocks on the
    left going down, the middle block at the bottom, up blocks on the right going up, each labelled
    with its type and output shape (channels x height x width); the block whose output is h
    (``h_module``, shape ``h_shape``) is highlighted.

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> cfg = {"sample_size": 32, "in_channels": 3, "block_out_channels": [32, 64],
    ...        "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}
    >>> draw_unet(ax, cfg, (64, 16, 16))
    >>> sum("h = mid_block" in t.get_text() for t in ax.texts)
    1
    """
    from matplotlib.patches import FancyBboxPatch

    size, chans = int(config["sample_size"]), list(config["block_out_channels"])
    n = len(chans)
    res = [size // 2 ** min(i + 1, n - 1) for i in range(n)]  # every down block but the last halves the size

    def box(x: float, y: float, text: str, hot: bool = False) -> None:
        ax.add_patch(FancyBboxPatch((x - 0.9, y - 0.32), 1.8, 0.64, boxstyle="round,pad=0.02",
                                    facecolor="#ffd54f" if hot else "#e3f2fd", edgecolor="#b26a00" if hot else "#1565c0"))
        ax.text(x, y, text, ha="center", va="center", fontsize=6.5)

    box(-n - 1, n + 1, f"x_t\n{config['in_channels']}x{size}x{size}")
    for i, (c, r, kind) in enumerate(zip(chans, res, config["down_block_types"])):
        box(i - n, n - i, f"{kind}\n{c}x{r}x{r}")
    mid = "h = " + h_module if h_module == "mid_block" else "mid_block"
    box(0, 0, f"{mid}\n{'x'.join(map(str, h_shape))}", hot=h_module == "mid_block")
    for i, kind in enumerate(config["up_block_types"]):
        c, r = chans[::-1][i], size // 2 ** max(n - 2 - i, 0)  # every up block but the last doubles the size
        box(i + 1, i + 1, f"{kind}\n{c}x{r}x{r}")
    box(n + 1, n + 1, f"eps\n{config['in_channels']}x{size}x{size}")
    ax.set_xlim(-n - 2.1, n + 2.1)
    ax.set_ylim(-0.6, n + 1.6)
    ax.set_axis_off()
    ax.set_title("where h sits: the output of the U-Net's middle block (skip connections not drawn)", fontsize=8)


def draw_h_pca(ax, h: torch.Tensor, colours: Sequence[str], markers: Sequence[str] | None = None, *,
               legend: dict[str, str] | None = None, title: str | None = None) -> None:
    """A view of h itself: h (N, *h_shape) projected on its first two principal components (exact
    SVD of the centred matrix), one point per sample in the matplotlib colour ``colours[i]`` and
    marker ``markers[i]``; axes labelled with the share of variance each component explains, equal
    scales. ``legend``: label -> colour.

    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_h_pca(ax, torch.randn(6, 4, 2, 2), ["red"] * 3 + ["blue"] * 3, legend={"red": "red", "blue": "blue"})
    >>> len(ax.collections) >= 1, ax.get_xlabel().startswith("PC1")
    (True, True)
    """
    x = h.detach().flatten(1).double().cpu()
    x = x - x.mean(0)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    share = (s ** 2 / (s ** 2).sum()).tolist()
    xy = (u[:, :2] * s[:2]).numpy()
    for m in sorted(set(markers or ["o"])):
        idx = [i for i in range(len(xy)) if (markers[i] if markers else "o") == m]
        ax.scatter(xy[idx, 0], xy[idx, 1], c=[colours[i] for i in idx], marker=m, s=22, edgecolors="black",
                   linewidths=0.4)
    for label, colour in (legend or {}).items():
        ax.scatter([], [], c=colour, label=label, s=22, edgecolors="black", linewidths=0.4)
    if legend:
        ax.legend(fontsize=6, ncol=2, loc="best")
    ax.set_xlabel(f"PC1 ({share[0]:.0%} of variance)", fontsize=8)
    ax.set_ylabel(f"PC2 ({share[1]:.0%} of variance)" if len(share) > 1 else "PC2", fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)

