"""Claim 9: a basis direction carried to another sample by parallel transport lands on one of that sample's
own basis directions (Park et al. 2023), more than a random tangent direction carried the same way.

N samples of the primary model, each one's local basis at the grid timestep nearest 500. For every
ordered pair (A, B), A's basis vectors v_i are transported into B's tangent space through H
(:func:`diffgeo.geometry.subspaces.transport`, ``via="h"``, the paper's), and the |cosine| of each
with B's nearest basis vector is averaged over i; the null is the same for ``N_RANDOM`` random unit
vectors of A's tangent space (:func:`diffgeo.evaluation.nulls.random_tangent_directions`). The unit is
the sample: the statistic is a mean over pairs of distinct resampled samples, as in claim 2.
The edit half of the claim (a transported direction edits B as A's edits A: ``diffgeo.transfer_edit``,
the reader's "same way" fraction) is not re-measured here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffgeo.analyses._common import Claim, Preset, load_model
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context
from diffgeo.analyses.rules import N_BOOT, excess_verdict, measured_claim
from diffgeo.evaluation.nulls import nearest_cosine, random_tangent_directions
from diffgeo.evaluation.stats import bca_interval
from diffgeo.geometry.basis import LocalBasis, local_basis
from diffgeo.geometry.subspaces import transport
from diffgeo.sampling.ddim import ddim_timesteps
from diffgeo.sampling.ddim import sample as ddim_sample

__all__ = ["TransportConsistency", "transport_consistency", "pair_excess", "mean_offdiagonal", "ANALYSIS"]

SOURCE = ("Park et al., NeurIPS 2023 (arXiv 2307.12868), editing other samples by parallel transport of a latent "
          "basis direction (paraphrase; section and figure numbers not checked here)")
SENTENCE = ("A basis direction of one sample, parallel-transported to another sample, is one of that sample's "
            "directions.")
STATISTIC = ("mean over ordered sample pairs (A, B) and A's k basis vectors of |cos| between v_i(A) transported to B "
             "(via H) and B's nearest basis vector")
NULL = "the same |cos| for a random unit tangent vector of A transported the same way (Monte Carlo)"
UNIT = "samples (pairs of distinct resampled samples)"
N_RANDOM = 32      # random tangent directions per pair: the null's Monte Carlo error (~0.1 / sqrt(32)) is << the effect


def pair_excess(a: LocalBasis, b: LocalBasis, *, n_random: int = N_RANDOM, seed: int = 0) -> tuple[float, float]:
    """(basis, null): mean |cos| with B's nearest basis vector of A's basis vectors transported to B (via H), and of
    ``n_random`` random unit tangent vectors of A transported the same way.

    >>> from diffgeo.geometry.basis import exact_basis
    >>> f = lambda x: torch.tanh(x) * torch.arange(1.0, 5.0)
    >>> a = exact_basis(f, torch.zeros(4), None, 2)
    >>> basis, null = pair_excess(a, a, n_random=200)      # onto itself: each v_i onto v_i
    >>> round(basis, 6), 0.8 < null < 0.99
    (1.0, True)
    """
    vb = b.v_flat.double()
    moved = torch.stack([transport(a, b, i, via="h").reshape(-1).double() for i in range(a.k)])
    rand = random_tangent_directions(a.v_flat.double(), n_random, seed=seed)
    moved_r = torch.stack([transport(a, b, d.reshape(a.v.shape[1:]), via="h").reshape(-1).double() for d in rand])
    return float(nearest_cosine(vb, moved).mean()), float(nearest_cosine(vb, moved_r).mean())


def mean_offdiagonal(m: torch.Tensor, idx: np.ndarray | torch.Tensor) -> float:
    """Mean of m[i, j] over resampled pairs i != j (a sample drawn twice is not paired with itself); NaN if none.

    >>> mean_offdiagonal(torch.tensor([[9.0, 1.0], [3.0, 9.0]]), np.array([0, 1]))
    2.0
    """
    idx = torch.as_tensor(idx)
    sub = m[idx][:, idx]
    mask = idx[:, None] != idx[None, :]
    return float(sub[mask].mean()) if bool(mask.any()) else float("nan")


@dataclass(frozen=True)
class TransportConsistency:
    """basis / null: (N, N) mean nearest |cos| of transported basis vectors / random tangent vectors for
    source row, target column (diagonal unused); t the timestep; claim 9."""

    model: str
    t: int
    basis: torch.Tensor
    null: torch.Tensor
    claim: Claim


def _bases(model: str, preset: Preset, t: int, seed: int) -> list[LocalBasis]:
    m = load_model(model)
    out = []
    for i in range(preset.n_for(["9"], preset.n_samples)):
        with torch.no_grad():
            traj = ddim_sample(m, 1, steps=preset.steps, seed=seed + i, progress=False)
        x = traj.xs[[int(s) for s in traj.timesteps].index(t), 0]
        out.append(local_basis(m, x, t, preset.k, tol=preset.tol, seed=seed, progress=False))
    return out


def transport_consistency(model: str, preset: Preset, *, seed: int = 0) -> TransportConsistency:
    """Claim 9 on ``model`` (unconditional or its empty prompt): bases of ``preset.n_for(["9"], n_samples)`` samples
    at the grid timestep nearest 500, every ordered pair transported.

    >>> p = Preset("doc", n_samples=3, steps=4, n_t=2, k=2, tol=1e-2, n_prompts=2, n_pairs=1, n_points=2, n_guidance=1)
    >>> r = transport_consistency("digits", p)
    >>> r.basis.shape, r.claim.id, r.claim.verdict
    (torch.Size([3, 3]), '9', 'too few units')
    """
    m = load_model(model)
    grid = [int(s) for s in ddim_timesteps(m, preset.steps)]
    t = min(grid, key=lambda s: abs(s - 500))
    bases = _bases(model, preset, t, seed)
    n = len(bases)
    basis = torch.zeros(n, n, dtype=torch.float64)
    null = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            if i != j:
                basis[i, j], null[i, j] = pair_excess(bases[i], bases[j], seed=seed + 1000 * i + j)
    diff = basis - null
    ex, lo, hi = bca_interval(n, lambda idx: mean_offdiagonal(diff, idx), n_boot=N_BOOT)
    everything = np.arange(n)
    value, null_value = mean_offdiagonal(basis, everything), mean_offdiagonal(null, everything)
    claim = measured_claim("9", "transport", model, SENTENCE, SOURCE, f"{STATISTIC} (t={t}, k={preset.k})",
                           value=value, null=NULL, null_value=null_value, excess=(ex, lo, hi), n=n, unit=UNIT,
                           rule="excess", verdict=excess_verdict(lo, hi, n=n, sign=+1),
                           note=f"{N_RANDOM} random tangent vectors per pair; 1/sqrt(k) = {preset.k ** -0.5:.3g} is "
                                "the least a vector of B's tangent space can have; the edit half (transfer_edit's "
                                "'same way' fraction) is not re-measured here")
    return TransportConsistency(model, t, basis, null, claim)


def _run(context: Context) -> AnalysisResult:
    """Claim 9 on the primary model."""
    r = context.timed("transport", lambda: transport_consistency(context.primary, context.preset, seed=context.seed))
    return AnalysisResult([r.claim])


ANALYSIS = Analysis("transport", "9. basis directions carried between samples by parallel transport", _run)
