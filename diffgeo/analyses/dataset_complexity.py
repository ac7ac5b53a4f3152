"""Analysis 3: the simpler the training set, the more consistent the tangent spaces across samples.

Curve 2 (:mod:`diffgeo.analyses.shared_tangents`) for each model, compared between the models whose
training data are the simplest and the most complex. Data complexity is measured independently of
any geometry, as the share of principal components needed for 95% of the training images'
variance (fixed before the run); the training images come from the model's entry in
:mod:`diffgeo.models.zoo` (``real_images``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffgeo.analyses._common import SIGN_RULE, Claim, bootstrap_ci, sign_verdict, skipped_claim
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.analyses.shared_tangents import SharedTangents, _mean_pairs, model_curves
from diffgeo.models.zoo import entry
from diffgeo.viz.results import draw_shared_tangents

__all__ = ["DatasetComplexity", "dataset_complexity", "data_complexity", "ANALYSIS"]

SENTENCE_3 = "The simpler the training data, the more consistent the tangent spaces across samples."
STATISTIC_3 = ("mean over t of the normalised pairwise Grassmann distance: model with the most complex data minus "
               "model with the simplest (complexity = share of PCA components for 95% of the data variance)")
EXPECTED_SIGN_3 = +1


def data_complexity(model: str, n: int = 512) -> float | None:
    """Share of principal components needed for 95% of the variance of ``n`` training images of an
    embedded model (None when its training data are not known here).

    >>> 0 < data_complexity("digits") < 1, data_complexity("someone/else")
    (True, None)
    """
    real_images = entry(model).real_images
    if real_images is None:
        return None
    x = real_images(n, 0)
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
    """Compare the normalised distance curves of models with known training data (claim 3).

    >>> from diffgeo.analyses.bases import toy_bases
    >>> from diffgeo.analyses.shared_tangents import shared_tangents
    >>> dataset_complexity({"toy": shared_tangents(toy_bases())}).claim.verdict   # one model: nothing to compare
    'skipped'
    """
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


def _run(context: Context) -> AnalysisResult:
    """Claim 3 over every model of the context; redraws the shared_tangents figure with every curve."""
    every = model_curves(context, list(context.models))
    dc = context.timed("dataset complexity", lambda: dataset_complexity(every))
    return AnalysisResult([dc.claim], {"shared_tangents": FigureSpec(draw_shared_tangents, every)})


ANALYSIS = Analysis("dataset_complexity", "3. curve 2 for each model vs the complexity of its training data", _run)
