"""Analysis 2: tangent spaces shared across samples early (Park et al. 2023): at early timesteps
different samples share similar tangent spaces; the mean pairwise Grassmann distance between
samples' bases grows as t falls. Analysis 3 (:mod:`diffgeo.analyses.dataset_complexity`) compares
this curve between models.

Two nulls: random k-dimensional subspaces of the same space (Monte Carlo,
:func:`diffgeo.evaluation.nulls.random_subspace_null`; for k << n their distance is close to the
maximum sqrt(k) pi / 2), and the seed noise floor (the distance between the same point's basis
computed from two random starts, :func:`diffgeo.analyses.bases.seed_floor`), the smallest distance
the bases can resolve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from diffgeo.analyses._common import Claim, DistanceBand, bootstrap_ci
from diffgeo.analyses.bases import TrajectoryBases, seed_floor
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.analyses.rules import N_BOOT, excess_verdict, measured_claim
from diffgeo.evaluation.nulls import random_subspace_null
from diffgeo.evaluation.stats import bca_interval
from diffgeo.viz.results import draw_shared_tangents

__all__ = ["SharedTangents", "shared_tangents", "model_curves", "ANALYSIS", "SOURCE_2"]

SOURCE_2 = ("Park et al., NeurIPS 2023 (arXiv 2307.12868), abstract: \"At early timesteps, different samples share "
            "similar tangent spaces\" (analysis of the geometry over timesteps)")
SENTENCE_2 = "At early timesteps different samples share similar tangent spaces."
STATISTIC_2 = "mean pairwise Grassmann distance / max (sqrt(k) pi/2) between samples' bases at the earliest timestep"
NULL_2 = "random k-dim subspaces of the same space (Monte Carlo, 200 pairs): their mean distance / max"
SENTENCE_2B = "Samples' tangent spaces grow apart as t falls."
STATISTIC_2B = "mean pairwise Grassmann distance / max at the last timestep minus at the first"
NULL_2B = "no change with t (0)"
UNIT_2 = "samples (pairs of resampled samples, each pair once)"
N_NULL = 200   # Monte Carlo pairs of random subspaces: the null mean's standard error is < 1e-3 of the maximum

def _pairwise(v: torch.Tensor) -> torch.Tensor:
    """(N, T, k, n) orthonormal rows -> (T, N, N) Grassmann distances."""
    n, t_count = v.shape[:2]
    out = torch.zeros(t_count, n, n, dtype=torch.float64)
    for j in range(t_count):
        for a in range(n):
            cos = torch.linalg.svdvals(v[a + 1:, j] @ v[a, j].T).clamp(0, 1)   # (N-a-1, k)
            d = torch.arccos(cos).square().sum(-1).sqrt()
            out[j, a, a + 1:] = d
            out[j, a + 1:, a] = d
    return out


def _mean_pairs(dist: torch.Tensor, idx: torch.Tensor) -> float:
    m = dist[idx][:, idx]
    mask = idx[:, None] != idx[None, :]
    return float(m[mask].mean()) if bool(mask.any()) else float("nan")


@dataclass(frozen=True)
class SharedTangents(DistanceBand):
    """Claim 2: dist (T, N, N) between samples' bases at each t, the mean over pairs per t; null_mean the
    random-subspace null / max; floor (N,) the seed floor / max per sample (None: not computed);
    claims: 2 and 2b."""

    null_mean: float = float("nan")
    floor: torch.Tensor | None = None
    claims: tuple[Claim, ...] = ()


def _null_mean(n: int, k: int, seed: int = 0) -> float:
    null = random_subspace_null(n, k, n_draws=N_NULL, seed=seed)
    return float(null.distance.mean()) / null.max_distance


def shared_tangents(tb: TrajectoryBases, floor: torch.Tensor | None = None) -> SharedTangents:
    """Pairwise distances between samples' bases vs t, and claims 2 (early distance below the random-subspace
    null) and 2b (the distance grows as t falls); ``floor``: (N,) seed-floor distances (not normalised) for the note.

    >>> from diffgeo.analyses.bases import toy_bases
    >>> r = shared_tangents(toy_bases())         # all samples share their subspace at every t
    >>> r.dist.shape, r.mean.tolist(), r.claims[0].excess == r.null_mean > 0.8, r.claims[0].verdict
    (torch.Size([3, 3, 3]), [0.0, 0.0, 0.0], True, 'too few units')
    """
    n, t_count, k = tb.v.shape[:3]
    dist = _pairwise(tb.v)
    dmax = math.sqrt(k) * math.pi / 2
    curves = [bootstrap_ci(n, lambda i, j=j: _mean_pairs(dist[j], i) / dmax) for j in range(t_count)]
    mean, low, high = (torch.tensor([c[q] for c in curves], dtype=torch.float64) for q in range(3))
    null = _null_mean(int(tb.v.shape[-1]), k)

    def early(i: np.ndarray) -> float:
        return null - _mean_pairs(dist[0], torch.as_tensor(i)) / dmax

    def growth(i: np.ndarray) -> float:
        idx = torch.as_tensor(i)
        return (_mean_pairs(dist[-1], idx) - _mean_pairs(dist[0], idx)) / dmax

    ex, lo, hi = bca_interval(n, early, n_boot=N_BOOT)
    fl = None if floor is None else floor.double() / dmax
    note = (f"t={tb.ts[0]}, k={k}, n={tb.v.shape[-1]}; " +
            ("seed floor (same point, another random start) not computed" if fl is None else
             f"seed floor {float(fl.mean()):.3g} / max (same point, another random start): the early distance sits "
             f"{(null - float(mean[0])) / max(null - float(fl.mean()), 1e-12):.2f} of the way from random (0) to the "
             "floor (1)"))
    c2 = measured_claim("2", "shared_tangents", tb.model, SENTENCE_2, SOURCE_2, f"{STATISTIC_2} (t={tb.ts[0]})",
                        value=float(mean[0]), null=NULL_2, null_value=null, excess=(ex, lo, hi), n=n, unit=UNIT_2,
                        rule="excess", verdict=excess_verdict(lo, hi, n=n, sign=+1), note=note)
    g, glo, ghi = bca_interval(n, growth, n_boot=N_BOOT)
    c2b = measured_claim("2b", "shared_tangents", tb.model, SENTENCE_2B, SOURCE_2,
                         f"{STATISTIC_2B} (t={tb.ts[-1]} vs t={tb.ts[0]})", value=g, null=NULL_2B, null_value=0.0,
                         excess=(g, glo, ghi), n=n, unit=UNIT_2, rule="excess",
                         verdict=excess_verdict(glo, ghi, n=n, sign=+1),
                         note=f"random-subspace null {null:.3g}; last-timestep distance {float(mean[-1]):.3g}")
    return SharedTangents(tb.model, list(tb.ts), dist, mean, low, high, dmax, c2, null, fl, (c2, c2b))


def model_curves(context: Context, models: list[str]) -> dict[str, SharedTangents]:
    """Curve 2 of each of ``models`` (their bases from the context), computed once per report.

    >>> from pathlib import Path
    >>> from diffgeo.analyses._common import PRESETS
    >>> from diffgeo.analyses.bases import toy_bases
    >>> ctx = Context(["toy"], PRESETS["tiny"], Path("."), trajectory_bases={"toy": toy_bases()})
    >>> model_curves(ctx, ["toy"])["toy"] is model_curves(ctx, ["toy"])["toy"]
    True
    """
    return {m: context.memo(("shared_tangents", m), lambda m=m: shared_tangents(context.bases(m))) for m in models}


def _run(context: Context) -> AnalysisResult:
    """Claims 2 and 2b on the primary model (with its seed floor), and the figure of its curve.

    >>> from pathlib import Path
    >>> from diffgeo.analyses._common import PRESETS
    >>> from diffgeo.analyses.bases import toy_bases
    >>> r = _run(Context(["toy"], PRESETS["tiny"], Path("."), trajectory_bases={"toy": toy_bases()}))
    >>> [c.id for c in r.claims], list(r.figures)
    (['2', '2b'], ['shared_tangents'])
    """
    model = context.primary
    tb = context.bases(model)
    floor = None
    if tb.steps is not None:   # the points can be recomputed: the seed floor at the earliest timestep
        floor = context.timed("seed floor", lambda: seed_floor(tb, context.preset, cache=context.cache(model),
                                                               **context.sweep_kwargs))
    st = context.memo(("shared_tangents_floor", model), lambda: shared_tangents(tb, floor))
    return AnalysisResult(list(st.claims), {"shared_tangents": FigureSpec(draw_shared_tangents, {model: st})})


ANALYSIS = Analysis("shared_tangents", "2. mean pairwise Grassmann distance between samples' bases vs t", _run)
