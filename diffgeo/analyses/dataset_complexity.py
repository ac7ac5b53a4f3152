"""Analysis 3: the simpler the training set, the more consistent the tangent spaces across samples.

Untestable here: the models at hand differ in size, architecture, conditioning and training, not
only in their data; their complexity ranking (:func:`data_complexity`, the share of principal
components for 95% of the training images' variance) flips with the normalisation; and the unit
is the model, with n = 2. The claim needs a controlled experiment: the same architecture and
recipe trained on at least three versions of the shapes data whose complexity is fixed in advance
(e.g. 1, 3 and 6 free factors), two seeds each, the models resampled. Its cost here: the shapes
recipe is 6,000 batch-64 steps at about 1 s per step on one thread, so 6 trainings are about 10
CPU-hours (about 1.7 h each). The report still draws curve 2 of every model for the eye.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffgeo.analyses._common import Claim
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.analyses.rules import untestable_claim
from diffgeo.analyses.shared_tangents import SharedTangents, model_curves
from diffgeo.models.zoo import entry
from diffgeo.viz.results import draw_shared_tangents

__all__ = ["DatasetComplexity", "dataset_complexity", "data_complexity", "ANALYSIS"]

SENTENCE_3 = "The simpler the training data, the more consistent the tangent spaces across samples."
SOURCE_3 = ("Park et al., NeurIPS 2023 (arXiv 2307.12868), abstract: \"The simpler datasets that DMs trained on, "
            "the more consistent the tangent space for each timestep\"")
REASON_3 = ("untestable with these models: they differ in size, architecture, conditioning and training as well as "
            "data, their complexity ranking flips with the normalisation, and the unit is the model (n = 2). It needs "
            "one architecture and recipe trained on >= 3 versions of the shapes data of fixed complexity (1, 3, 6 free "
            "factors), 2 seeds each: 6 trainings of 6,000 batch-64 steps at ~1 s per step on one thread, about 10 "
            "CPU-hours, not affordable in a report run")

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
    """Claim 3 over several models: their curves (SharedTangents), data complexities, and the claim
    (untestable here, with the reason)."""

    curves: dict[str, SharedTangents]
    complexity: dict[str, float | None]
    claim: Claim


def dataset_complexity(curves: dict[str, SharedTangents]) -> DatasetComplexity:
    """The models' curves and data complexities; claim 3 marked untestable with the reason (see the module).

    >>> from diffgeo.analyses.bases import toy_bases
    >>> from diffgeo.analyses.shared_tangents import shared_tangents
    >>> dataset_complexity({"toy": shared_tangents(toy_bases())}).claim.verdict
    'untestable here'
    """
    cx = {m: data_complexity(m) for m in curves}
    known = ", ".join(f"{m} {c:.3f}" for m, c in cx.items() if c is not None)
    claim = untestable_claim("3", "dataset_complexity", ", ".join(curves), SENTENCE_3, SOURCE_3,
                             REASON_3 + (f"; PCA complexity of the models' data for the eye: {known}" if known else ""))
    return DatasetComplexity(curves, cx, claim)


def _run(context: Context) -> AnalysisResult:
    """Claim 3 over every model of the context; redraws the shared_tangents figure with every curve."""
    every = model_curves(context, list(context.models))
    dc = context.timed("dataset complexity", lambda: dataset_complexity(every))
    return AnalysisResult([dc.claim], {"shared_tangents": FigureSpec(draw_shared_tangents, every)})


ANALYSIS = Analysis("dataset_complexity", "3. curve 2 for each model vs the complexity of its training data", _run)
