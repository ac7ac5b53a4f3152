"""Analysis 1: coarse to fine. The local basis is low-frequency at early (noisy) timesteps and
high-frequency late (Park et al. 2023): the spectral centroid of the basis vectors rises as t falls.
For reference the note gives the centroid of random directions (white noise, the null of "no
frequency preference"), from :func:`diffgeo.evaluation.nulls.random_directions_like`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffgeo.analyses._common import Claim, bootstrap_ci
from diffgeo.analyses.rules import N_BOOT, excess_verdict, measured_claim
from diffgeo.analyses.bases import TrajectoryBases
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.evaluation.nulls import random_directions_like
from diffgeo.evaluation.stats import bca_interval
from diffgeo.geometry.subspaces import spectral_centroid
from diffgeo.viz.draw import draw_images
from diffgeo.viz.results import draw_spectral_centroid

__all__ = ["CoarseToFine", "coarse_to_fine", "basis_images", "ANALYSIS"]

SOURCE = ("Park et al., NeurIPS 2023 (arXiv 2307.12868), abstract: \"the model focuses on low-frequency components "
          "early in the generative process and attunes to high-frequency details later\"")
SENTENCE = "The local basis is coarse (low spatial frequency) at early timesteps and fine late."
STATISTIC = ("mean spectral centroid (cycles/pixel) of the basis vectors at the last (least noisy) timestep minus "
             "at the first")
NULL = "no change with t (0); the note gives random directions' (white noise) centroid"
EXPECTED_SIGN = +1  # fixed before any run: the claim says late > early


@dataclass(frozen=True)
class CoarseToFine:
    """centroid: (N, T) mean spectral centroid over the k basis vectors of each sample and t;
    mean / low / high: (T,) mean over samples and its 95% bootstrap interval; ts (T,) descending."""

    model: str
    ts: list[int]
    centroid: torch.Tensor
    mean: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    claim: Claim


def coarse_to_fine(tb: TrajectoryBases) -> CoarseToFine:
    """Spectral centroid of the bases in ``tb`` vs t, and the claim's verdict.

    >>> from diffgeo.analyses.bases import toy_bases
    >>> r = coarse_to_fine(toy_bases())          # point-like basis vectors: the same centroid at every t
    >>> r.centroid.shape, r.claim.excess, r.claim.verdict
    (torch.Size([3, 3]), 0.0, 'too few units')
    """
    n, t_count, k = tb.v.shape[:3]
    imgs = tb.v.reshape(n * t_count * k, *tb.x_shape)
    centroid = spectral_centroid(imgs).reshape(n, t_count, k).mean(-1)
    curves = [bootstrap_ci(n, lambda i, j=j: float(centroid[i, j].mean())) for j in range(t_count)]
    mean, low, high = (torch.tensor([c[q] for c in curves], dtype=torch.float64) for q in range(3))
    value, lo, hi = bca_interval(n, lambda i: float((centroid[i, -1] - centroid[i, 0]).mean()), n_boot=N_BOOT)
    noise = spectral_centroid(random_directions_like(torch.ones(tb.x_shape, dtype=torch.float64), 32)).mean()
    claim = measured_claim("1", "coarse_to_fine", tb.model, SENTENCE, SOURCE,
                           f"{STATISTIC} (t={tb.ts[-1]} vs t={tb.ts[0]})", value=value, null=NULL, null_value=0.0,
                           excess=(value, lo, hi), n=n, unit="samples", rule="excess",
                           verdict=excess_verdict(lo, hi, n=n, sign=EXPECTED_SIGN),
                           note=f"centroid {float(mean[0]):.3g} at t={tb.ts[0]}, {float(mean[-1]):.3g} at t={tb.ts[-1]}; "
                                f"random directions {float(noise):.3g}")
    return CoarseToFine(tb.model, list(tb.ts), centroid, mean, low, high, claim)


def basis_images(tb: TrajectoryBases) -> torch.Tensor:
    """The first basis vector of sample 0 at each t, scaled to [-1, 1] (for draw_images).

    >>> from diffgeo.analyses.bases import toy_bases
    >>> basis_images(toy_bases()).shape
    torch.Size([3, 1, 8, 8])
    """
    v = tb.v[0, :, 0].reshape(len(tb.ts), *tb.x_shape)
    return v / v.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * len(tb.x_shape)))


def _draw_basis_vectors(ax: Any, tb: TrajectoryBases) -> None:
    draw_images(ax, basis_images(tb), nrow=len(tb.ts), captions=[f"t={t}" for t in tb.ts])


def _run(context: Context) -> AnalysisResult:
    """Claim 1 on the primary model's bases, with the centroid curve and its basis vectors.

    >>> from pathlib import Path
    >>> from diffgeo.analyses._common import PRESETS
    >>> from diffgeo.analyses.bases import toy_bases
    >>> ctx = Context(["toy"], PRESETS["tiny"], Path("."), trajectory_bases={"toy": toy_bases()})
    >>> r = _run(ctx)
    >>> [c.id for c in r.claims], list(r.figures)
    (['1'], ['coarse_to_fine', 'basis_vectors'])
    """
    tb = context.bases(context.primary)
    r = coarse_to_fine(tb)
    return AnalysisResult([r.claim], {"coarse_to_fine": FigureSpec(draw_spectral_centroid, r),
                                      "basis_vectors": FigureSpec(_draw_basis_vectors, tb, (6.0, 1.8))})


ANALYSIS = Analysis("coarse_to_fine", "1. spectral centroid of the local basis vectors vs t", _run)
