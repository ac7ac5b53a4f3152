"""Analysis 2: tangent spaces shared across samples early (Park et al. 2023): at early timesteps
different samples share similar tangent spaces; the mean pairwise Grassmann distance between
samples' bases grows as t falls. Analysis 3 (:mod:`diffgeo.analyses.dataset_complexity`) compares
this curve between models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffgeo.analyses._common import SIGN_RULE, Claim, DistanceBand, bootstrap_ci, sign_verdict
from diffgeo.analyses.bases import TrajectoryBases
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.viz.results import draw_shared_tangents

__all__ = ["SharedTangents", "shared_tangents", "model_curves", "ANALYSIS"]

SENTENCE_2 = "At early timesteps different samples share similar tangent spaces (distance grows as t falls)."
STATISTIC_2 = "mean pairwise Grassmann distance / max (sqrt(k) pi/2) at the last timestep minus at the first"
EXPECTED_SIGN_2 = +1

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
    """Claim 2: dist (T, N, N) between samples' bases at each t, the mean over pairs per t."""


def shared_tangents(tb: TrajectoryBases) -> SharedTangents:
    """Pairwise distances between samples' bases vs t, and claim 2's verdict.

    >>> from diffgeo.analyses.bases import toy_bases
    >>> r = shared_tangents(toy_bases())         # all samples share their subspace at every t
    >>> r.dist.shape, r.mean.tolist(), r.claim.verdict
    (torch.Size([3, 3, 3]), [0.0, 0.0, 0.0], 'inconclusive')
    """
    n, t_count, k = tb.v.shape[:3]
    dist = _pairwise(tb.v)
    dmax = math.sqrt(k) * math.pi / 2
    curves = [bootstrap_ci(n, lambda i, j=j: _mean_pairs(dist[j], i) / dmax) for j in range(t_count)]
    mean, low, high = (torch.tensor([c[q] for c in curves], dtype=torch.float64) for q in range(3))
    value, lo, hi = bootstrap_ci(n, lambda i: (_mean_pairs(dist[-1], i) - _mean_pairs(dist[0], i)) / dmax)
    claim = Claim("2", "shared_tangents", tb.model, SENTENCE_2, f"{STATISTIC_2} (t={tb.ts[-1]} vs t={tb.ts[0]})",
                  value, lo, hi, n, SIGN_RULE, sign_verdict(lo, hi, EXPECTED_SIGN_2))
    return SharedTangents(tb.model, list(tb.ts), dist, mean, low, high, dmax, claim)


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
    """Claim 2 on the primary model, and the figure of its curve.

    >>> from pathlib import Path
    >>> from diffgeo.analyses._common import PRESETS
    >>> from diffgeo.analyses.bases import toy_bases
    >>> r = _run(Context(["toy"], PRESETS["tiny"], Path("."), trajectory_bases={"toy": toy_bases()}))
    >>> [c.id for c in r.claims], list(r.figures)
    (['2'], ['shared_tangents'])
    """
    primary = model_curves(context, [context.primary])
    return AnalysisResult([primary[context.primary].claim],
                          {"shared_tangents": FigureSpec(draw_shared_tangents, primary)})


ANALYSIS = Analysis("shared_tangents", "2. mean pairwise Grassmann distance between samples' bases vs t", _run)
