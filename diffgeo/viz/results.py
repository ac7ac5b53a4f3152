"""Figures, part one (continued): ``draw_*(ax, data)`` of the analyses' results and the edit property tables.

The data are duck-typed (any object with the named attributes), so this module imports neither
:mod:`diffgeo.analyses` nor :mod:`diffgeo.editing`.

>>> from types import SimpleNamespace as NS
>>> from matplotlib.figure import Figure
>>> ax = Figure().subplots()
>>> draw_band_vs_t(ax, [900, 100], [0.1, 0.2], [0.0, 0.1], [0.2, 0.3]); len(ax.lines)
1
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from diffgeo.viz.draw import draw_matrix, draw_scatter

__all__ = ["draw_band_vs_t", "draw_spectral_centroid", "draw_shared_tangents", "draw_basis_heatmap", "draw_prompt_geometry", "draw_cond_uncond", "draw_curvedness", "draw_guidance_artefact", "draw_edit_transfer", "draw_edit_properties", "draw_edit_quality"]


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
    """Analysis 1 (a CoarseToFine): mean spectral centroid of the basis vectors vs t with its band

    >>> from types import SimpleNamespace
    >>> from matplotlib.figure import Figure
    >>> band = SimpleNamespace(ts=[900, 100], mean=[0.1, 0.2], low=[0.0, 0.1], high=[0.2, 0.3], model="m")
    >>> ax = Figure().subplots()
    >>> draw_spectral_centroid(ax, band)
    >>> ax.get_title()
    '1. coarse to fine'
    """
    draw_band_vs_t(ax, data.ts, data.mean, data.low, data.high, label=data.model,
                   ylabel="spectral centroid (cycles/pixel)", title="1. coarse to fine")


def draw_shared_tangents(ax, data) -> None:
    """Analyses 2/3: one SharedTangents, or a dict name -> SharedTangents (one curve per model)

    >>> import torch
    >>> from types import SimpleNamespace as NS
    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots(); draw_shared_tangents(ax, {"a": NS(ts=[900, 100], mean=[0.1, 0.2], low=[0.0, 0.1], high=[0.2, 0.3], model="m", prompt="p"), "b": NS(ts=[900, 100], mean=[0.1, 0.2], low=[0.0, 0.1], high=[0.2, 0.3], model="m", prompt="p")}); len(ax.lines)
    2
    """
    curves = data if isinstance(data, dict) else {data.model: data}
    for name, c in curves.items():
        draw_band_vs_t(ax, c.ts, c.mean, c.low, c.high, label=name,
                       ylabel="mean pairwise Grassmann distance / max",
                       title="2-3. distance between samples' tangent spaces")
        null, floor = getattr(c, "null_mean", None), getattr(c, "floor", None)
        if null is not None and null == null:
            ax.axhline(float(null), ls="--", lw=0.8, color="grey", label="random subspaces (null)")
        if floor is not None:
            ax.axhline(float(np.mean(np.asarray(floor, dtype=float))), ls=":", lw=0.8, color="k",
                       label="seed floor (same point)")
        if null is not None or floor is not None:
            ax.legend(fontsize=7)


def draw_basis_heatmap(ax, data) -> None:
    """Analysis 4 (a Discrepancy): mean Grassmann distance / max between a trajectory's bases at t and t'

    >>> import torch
    >>> from types import SimpleNamespace as NS
    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots(); draw_basis_heatmap(ax, NS(heatmap=torch.eye(2), max_distance=2.0, ts=[900, 100]))
    >>> ax.get_title()
    '4. basis distance across t (/ max)'
    """
    draw_matrix(ax, data.heatmap / data.max_distance, [str(t) for t in data.ts],
                title="4. basis distance across t (/ max)")


def draw_prompt_geometry(ax, data) -> None:
    """Analysis 5a (a PromptGeometry): tangent distance vs text-embedding distance, one point per prompt pair

    >>> import torch
    >>> from types import SimpleNamespace as NS
    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_prompt_geometry(ax, NS(prompts=["a", "b"], text=torch.eye(2), tangent=torch.eye(2), model="m", t=500))
    >>> ax.get_title()
    '5a. prompts (m, t=500)'
    """
    p = len(data.prompts)
    iu = [(i, j) for i in range(p) for j in range(i + 1, p)]
    draw_scatter(ax, [float(data.text[i, j]) for i, j in iu], [float(data.tangent[i, j]) for i, j in iu],
                 xlabel="text-embedding cosine distance", ylabel="tangent-space Grassmann distance",
                 title=f"5a. prompts ({data.model}, t={data.t})")


def draw_cond_uncond(ax, data) -> None:
    """Analysis 5b (a CondUncond): distance between conditional and unconditional bases vs t

    >>> from types import SimpleNamespace
    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_cond_uncond(ax, SimpleNamespace(ts=[900, 100], mean=[0.1, 0.2], low=[0.0, 0.1], high=[0.2, 0.3],
    ...                                      model="m", prompt="a red circle"))
    >>> ax.get_title()
    '5b. cond vs uncond bases'
    """
    draw_band_vs_t(ax, data.ts, data.mean, data.low, data.high, label=f"{data.model}: {data.prompt!r}",
                   ylabel="Grassmann distance / max", title="5b. cond vs uncond bases")


def draw_curvedness(ax, data) -> None:
    """Analysis 6 (a Curvedness): each definition's values over segments against the untrained network (log)

    >>> import torch
    >>> from types import SimpleNamespace as NS
    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_curvedness(ax, NS(values={"a": torch.ones(3)}, flat={"a": torch.zeros(2)}, model="m", t=500))
    >>> ax.get_yscale()
    'log'
    """
    names = list(data.values)
    for i, name in enumerate(names):
        v = data.values[name].double().clamp_min(1e-12).numpy()
        f = data.flat[name].double().abs().clamp_min(1e-12).numpy()
        ax.scatter(np.full(len(v), i - 0.1), v, color="C0", s=12, label="segments" if i == 0 else None)
        ax.scatter(np.full(len(f), i + 0.1), f, color="C3", marker="x", s=12, label="untrained network" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, fontsize=7)
    ax.set_title(f"6. curvedness ({data.model}, t={data.t})", fontsize=9)
    ax.legend(fontsize=7)


def draw_guidance_artefact(ax, data) -> None:
    """Analysis 5c (a GuidanceArtefact): border chroma towards the complement colour, low vs high guidance

    >>> import torch
    >>> from types import SimpleNamespace as NS
    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots(); draw_guidance_artefact(ax, NS(chroma_low=torch.zeros(3), chroma_high=torch.ones(3)))
    >>> ax.get_title()
    '5c. guidance artefact'
    """
    lo, hi = data.chroma_low.numpy(), data.chroma_high.numpy()
    for a, b in zip(lo, hi):
        ax.plot([0, 1], [a, b], color="0.7", lw=0.5)
    ax.boxplot([lo, hi], positions=[0, 1], widths=0.3)
    ax.set_xticks([0, 1], ["guidance 1.5", "guidance 4"])
    ax.set_ylabel("border chroma towards complement")
    ax.set_title("5c. guidance artefact", fontsize=9)


def draw_edit_transfer(ax, data) -> None:
    """Analysis 4b (a Discrepancy with ``transfer``): effect of v_1 found at t_i applied at t_j, relative to
    v_1 found at t_j (1 on the diagonal)

    >>> import torch
    >>> from types import SimpleNamespace as NS
    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots(); draw_edit_transfer(ax, NS(transfer=torch.eye(2), ts=[900, 100])); ax.get_xlabel()
    "applied at t'"
    """
    draw_matrix(ax, data.transfer, [str(t) for t in data.ts],
                title="4b. edit found at t (row) applied at t' (column)")
    ax.set_ylabel("direction found at t", fontsize=8)
    ax.set_xlabel("applied at t'", fontsize=8)


def draw_edit_quality(ax, rows, *, samples: str = "generated") -> None:
    """Clean-edit rate (success, preservation and validity at once) with its 95% interval, one group
    of bars per task and one bar per method, for rows of the edit-quality table
    (:class:`diffgeo.editing.table.EditQualityRow`; only those on ``samples``).

    >>> from types import SimpleNamespace as NS
    >>> from matplotlib.figure import Figure
    >>> rows = [NS(task="colour:blue", method=m, samples="generated", clean=0.5, clean_ci=(0.3, 0.7)) for m in "ab"]
    >>> ax = Figure().subplots(); draw_edit_quality(ax, rows); len(ax.patches)
    2
    """
    rows = [r for r in rows if r.samples == samples]
    tasks = list(dict.fromkeys(r.task for r in rows))
    methods = list(dict.fromkeys(r.method for r in rows))
    width = 0.8 / max(len(methods), 1)
    for j, m in enumerate(methods):
        xs, ys, lo, hi = [], [], [], []
        for i, t in enumerate(tasks):
            r = next((r for r in rows if r.task == t and r.method == m), None)
            if r is not None:
                xs.append(i + (j - (len(methods) - 1) / 2) * width)
                ys.append(r.clean)
                lo.append(r.clean - r.clean_ci[0])
                hi.append(r.clean_ci[1] - r.clean)
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=m)
    ax.axhline(0.9, color="0.5", lw=0.7, ls="--")
    ax.set_xticks(range(len(tasks)), tasks, fontsize=7, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("clean edits (95% interval)", fontsize=8)
    ax.set_title(f"edit quality on {samples} samples", fontsize=9)
    ax.legend(fontsize=6, ncol=2)


def draw_edit_properties(ax, table) -> None:
    """Mean change of the intended factor (with its spread over samples) and validity against
    strength, for one :class:`diffgeo.editing.properties.EditProperties`

    >>> import torch
    >>> from types import SimpleNamespace as NS
    >>> from matplotlib.figure import Figure
    >>> t = NS(strengths=[-1, 1], mean_change=[-0.5, 0.5], spread=[0.1, 0.1], validity=[1, 1], specificity={},
    ...        factor="colour", target="blue", model="m", space="x", r2=1.0, sign_flip=True)
    >>> ax = Figure().subplots(); draw_edit_properties(ax, t); len(ax.lines) >= 2
    True
    """
    s, m, sd = table.strengths, table.mean_change, table.spread
    ax.errorbar(s, m, yerr=sd, marker="o", capsize=3, label=f"{table.factor} -> {table.target}")
    ax.plot(s, table.validity, marker="s", ls="--", label="valid")
    for k, v in table.specificity.items():
        ax.plot(s, v, marker="^", ls=":", label=f"{k} changed")
    ax.axhline(0, color="0.7", lw=0.5)
    ax.set_xlabel("strength", fontsize=8)
    ax.set_title(f"{table.model} {table.space}-space: R^2 {table.r2:.2f}, flip {table.sign_flip}", fontsize=8)
    ax.legend(fontsize=6)


def draw_tradeoff(ax, data) -> None:
    """Analysis 7: edit effect and preservation (SSIM to the unedited image) over t_edit (two y axes)

    >>> from types import SimpleNamespace as NS
    >>> from matplotlib.figure import Figure
    >>> ax = Figure().subplots()
    >>> draw_tradeoff(ax, NS(t_edits=[900, 500, 100], tradeoff_effect=[3.0, 2.0, 0.5], tradeoff_preservation=[0.2, 0.6, 0.9], model="m"))
    >>> ax.get_title()
    '7. effect vs preservation over t_edit'
    """
    ts = [int(t) for t in data.t_edits]
    ax.plot(ts, list(data.tradeoff_effect), marker="o", ms=3, color="C0", label="effect (colour logit margin)")
    ax.set_ylabel("effect (logit margin change)", color="C0")
    ax2 = ax.twinx()
    ax2.plot(ts, list(data.tradeoff_preservation), marker="s", ms=3, color="C3", label="preservation (SSIM)")
    ax2.set_ylabel("SSIM to the unedited image", color="C3")
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xlabel("t_edit (edit on [T, t_edit])")
    ax.set_title("7. effect vs preservation over t_edit", fontsize=9)
