"""Analyses 2 and 3: tangent spaces shared across samples early, and more consistent for simpler data.

2. Park et al. (2023): at early timesteps different samples share similar tangent spaces; the
   mean pairwise Grassmann distance between samples' bases grows as t falls.
3. The simpler the training set, the more consistent the tangent spaces across samples: curve 2
   for each model, compared between the models whose training data are the simplest and the most
   complex. Data complexity is measured independently of any geometry, as the share of principal
   components needed for 95% of the training images' variance (fixed before the run).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffgeo.analyses._common import SIGN_RULE, Claim, DistanceBand, bootstrap_ci, sign_verdict, skipped_claim
from diffgeo.analyses.bases import TrajectoryBases
from diffgeo.data.digits import load_digits_images
from diffgeo.data.shapes import make_scenes

__all__ = ["SharedTangents", "shared_tangents", "DatasetComplexity", "dataset_complexity", "data_complexity"]

SENTENCE_2 = "At early timesteps different samples share similar tangent spaces (distance grows as t falls)."
STATISTIC_2 = "mean pairwise Grassmann distance / max (sqrt(k) pi/2) at the last timestep minus at the first"
EXPECTED_SIGN_2 = +1

SENTENCE_3 = "The simpler the training data, the more consistent the tangent spaces across samples."
STATISTIC_3 = ("mean over t of the normalised pairwise Grassmann distance: model with the most complex data minus "
               "model with the simplest (complexity = share of PCA components for 95% of the data variance)")
EXPECTED_SIGN_3 = +1

_DATA = {"shapes": "shapes", "shapes-text": "shapes", "digits": "digits"}


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


def data_complexity(model: str, n: int = 512) -> float | None:
    """Share of principal components needed for 95% of the variance of ``n`` training images of an
    embedded model (None when its training data are not known here).

    >>> 0 < data_complexity("digits") < 1
    True
    """
    kind = _DATA.get(model)
    if kind is None:
        return None
    if kind == "digits":

        x = load_digits_images().images[:n]
    else:

        x = make_scenes(n, seed=0).images
    x = x.reshape(x.shape[0], -1).double()
    s2 = torch.linalg.svdvals(x - x.mean(0)).square()
    share = torch.cumsum(s2, 0) / s2.sum()
    return float((int((share < 0.95).sum()) + 1) / x.shape[1])


@dataclass(frozen=True)
class DatasetComplexity:
    """Claim 3 over several models: their curves (SharedTangents) and data complexities."""

    curves: dict[str, SharedTangents]
    complexity: dict[str, float | None]
    claim: Claim


def dataset_complexity(curves: dict[str, SharedTangents]) -> DatasetComplexity:
    """Compare the normalised distance curves of models with known training data (claim 3)."""
    cx = {m: data_complexity(m) for m in curves}
    known = sorted((c, m) for m, c in cx.items() if c is not None)
    label = ", ".join(curves)
    if len(known) < 2 or known[0][0] == known[-1][0]:
        claim = skipped_claim("3", "dataset_complexity", label, SENTENCE_3,
                              "needs two models whose training data differ in complexity (embedded digits and "
                              f"shapes/shapes-text); got {label or 'none'}")
        return DatasetComplexity(curves, cx, claim)
    simple, complex_ = curves[known[0][1]], curves[known[-1][1]]
    n = min(simple.dist.shape[1], complex_.dist.shape[1])

    def stat(i: torch.Tensor) -> float:
        a = sum(_mean_pairs(complex_.dist[j], i) for j in range(len(complex_.ts))) / len(complex_.ts)
        b = sum(_mean_pairs(simple.dist[j], i) for j in range(len(simple.ts))) / len(simple.ts)
        return a / complex_.max_distance - b / simple.max_distance

    value, lo, hi = bootstrap_ci(n, stat)
    note = (f"complexity {known[-1][1]} {known[-1][0]:.3f} vs {known[0][1]} {known[0][0]:.3f}; the two live in "
            "spaces of different dimension, where random subspaces are not equally far apart")
    claim = Claim("3", "dataset_complexity", f"{known[-1][1]} vs {known[0][1]}", SENTENCE_3, STATISTIC_3, value, lo, hi,
                  n, SIGN_RULE, sign_verdict(lo, hi, EXPECTED_SIGN_3), note)
    return DatasetComplexity(curves, cx, claim)
