"""Analysis 4: discrepancy across timesteps. A direction found at one timestep does not carry over to
another (Park et al. 2023): bases of one trajectory at t and t' differ, more so the further apart.

The heatmap is the Grassmann distance between a trajectory's bases at every pair (t, t'), averaged
over samples. The claim's number is the energy a basis vector found at t keeps in the basis at
t' (``mean_i ||V(t') v_i(t)||^2``, the mean squared cosine of the principal angles), over pairs at
least two grid positions apart. The second half of the reader's question (how far an edit along
a direction found at t works at t') needs ``diffgeo.editing.xspace``; :func:`edit_transfer_status` says
whether it can run.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

import torch

from diffgeo.analyses._common import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim, bootstrap_ci, load_model,
                                      skipped_claim)
from diffgeo.analyses.bases import TrajectoryBases
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.editing.xspace import edit_x
from diffgeo.viz.results import draw_basis_heatmap, draw_edit_transfer

__all__ = ["Discrepancy", "discrepancy", "edit_transfer_status", "ANALYSIS"]

SENTENCE = "A direction found at one timestep does not carry over to another timestep."
STATISTIC = ("mean energy a basis vector found at t keeps in the basis at t' (mean cos^2 of the principal angles), "
             "pairs at least 2 grid positions apart")
THRESHOLD = 0.5  # fixed before the run: "does not carry over" = less than half of the direction survives
RULE = (f"reproduced if the 95% interval lies below {THRESHOLD} (most of a direction is lost); not reproduced if it "
        f"lies above {THRESHOLD}; otherwise inconclusive")


def _verdict(lo: float, hi: float) -> str:
    if not (lo == lo and hi == hi):
        return INCONCLUSIVE
    if hi < THRESHOLD:
        return REPRODUCED
    if lo > THRESHOLD:
        return NOT_REPRODUCED
    return INCONCLUSIVE


@dataclass(frozen=True)
class Discrepancy:
    """heatmap: (T, T) mean Grassmann distance between a trajectory's bases at t_i and t_j;
    retained: (N, T, T) mean cos^2 of principal angles; example: (T, T) distances of sample 0;
    ts (T,) descending; edit_transfer: what the edit part did or why it did not run; transfer: (T, T)
    mean over samples of the edit-transfer ratio (row i: v_1 found at t_i; column j: applied at t_j) or None."""

    model: str
    ts: list[int]
    heatmap: torch.Tensor
    example: torch.Tensor
    retained: torch.Tensor
    max_distance: float
    claim: Claim
    edit_transfer: str
    transfer: torch.Tensor | None = None


def edit_transfer_status() -> str:
    """Whether the edit-transfer half of analysis 4 can run here, as a sentence ("ran" when it can).

    >>> edit_transfer_status()
    'ran'
    """
    if importlib.util.find_spec("diffgeo.editing.xspace") is None:
        return ("skipped: diffgeo.editing.xspace does not exist in this build, so an edit along a direction found at t "
                "cannot be applied at t'; the heatmap measures the subspaces only")
    editing = importlib.import_module("diffgeo.editing.xspace")
    if not callable(getattr(editing, "edit_x", None)):
        return "skipped: diffgeo.editing.xspace has no edit_x; the heatmap measures the subspaces only"
    return "ran"


EDIT_STRENGTH = 0.1  # step size of the edit, as a fraction of sqrt(dim x) (the norm of unit-variance noise)


def edit_transfer(tb: TrajectoryBases, *, progress: bool = False) -> torch.Tensor | None:
    """How far the edit along v_1 found at t_i works at t_j: (N, T, T) ratio of the change in the final
    image when x_{t_j} is moved by ``EDIT_STRENGTH sqrt(n)`` along v_1(t_i) to the change along v_1(t_j)
    itself (1 on the diagonal). None when diffgeo.editing.xspace is not available or the points were not kept.

    >>> from diffgeo.analyses import Preset, collect_bases
    >>> p = Preset("doc", n_samples=1, steps=4, n_t=2, k=1, tol=1e-2, n_prompts=2, n_pairs=1, n_points=2, n_guidance=1)
    >>> r = edit_transfer(collect_bases("digits", p, progress=False))
    >>> r.shape, r[0].diagonal().tolist()
    (torch.Size([1, 2, 2]), [1.0, 1.0])
    """
    if tb.x is None or tb.steps is None or edit_transfer_status() != "ran":
        return None


    m = load_model(tb.model)
    n, t_count = tb.v.shape[:2]
    strength = EDIT_STRENGTH * math.sqrt(tb.v.shape[-1])
    kw = {"prompt": tb.prompt or ""} if m.is_conditional else {}
    out = torch.zeros(n, t_count, t_count, dtype=torch.float64)
    for a in range(n):
        dirs = torch.cat([torch.zeros(1, tb.v.shape[-1], dtype=tb.v.dtype), tb.v[a, :, 0]])
        dirs = dirs.reshape(t_count + 1, *tb.x_shape).to(m.dtype)
        for j, t in enumerate(tb.ts):
            x = tb.x[a, j].to(m.dtype).expand(t_count + 1, *tb.x_shape)
            with torch.no_grad():
                final = edit_x(m, x, t, dirs, strength=strength, steps=tb.steps, progress=False, **kw).result
            effect = (final[1:] - final[:1]).flatten(1).norm(dim=1).double()
            out[a, :, j] = effect / effect[j].clamp_min(1e-12)
    return out


def discrepancy(tb: TrajectoryBases, *, edits: bool = True) -> Discrepancy:
    """Distances between each trajectory's bases across its timesteps, and the claim's verdict.

    >>> import torch
    >>> from diffgeo.analyses import TrajectoryBases
    >>> e = torch.eye(64, dtype=torch.float64)
    >>> v = torch.stack([torch.stack([e[:2], e[2:4], e[4:6]])] * 3)   # 3 samples x 3 timesteps, k=2
    >>> tb = TrajectoryBases("toy", [900, 500, 100], v, torch.ones(3, 3, 2), (1, 8, 8), None, "cond", 0)
    >>> r = discrepancy(tb)             # orthogonal subspaces at different t: nothing carries over
    >>> r.heatmap.shape, r.claim.value, r.claim.verdict
    (torch.Size([3, 3]), 0.0, 'reproduced')
    """
    n, t_count, k = tb.v.shape[:3]
    cos2 = torch.zeros(n, t_count, t_count, dtype=torch.float64)
    dist = torch.zeros(n, t_count, t_count, dtype=torch.float64)
    for a in range(n):
        for i in range(t_count):
            cos = torch.linalg.svdvals(tb.v[a] @ tb.v[a, i].T).clamp(0, 1)     # (T, k)
            cos2[a, i] = cos.square().mean(-1)
            dist[a, i] = torch.arccos(cos).square().sum(-1).sqrt()
    far = torch.tensor([[abs(i - j) >= 2 for j in range(t_count)] for i in range(t_count)])
    if bool(far.any()):
        value, lo, hi = bootstrap_ci(n, lambda idx: float(cos2[idx][:, far].mean()))
        claim = Claim("4", "discrepancy", tb.model, SENTENCE, STATISTIC, value, lo, hi, n, RULE, _verdict(lo, hi))
    else:

        claim = skipped_claim("4", "discrepancy", tb.model, SENTENCE, "needs at least 3 timesteps per trajectory")
    transfer = edit_transfer(tb) if edits else None
    status = edit_transfer_status() if edits else "not asked for"
    if transfer is None and status == "ran":
        status = "skipped: the points x_t were not kept with the bases"
    if transfer is not None:
        status = (f"ran: an edit along v_1 found at t, applied at t' (step {EDIT_STRENGTH} sqrt(n)), changes the final "
                  "image by the ratio shown in the transfer heatmap relative to v_1 found at t' itself (mean over "
                  "samples; 1 on the diagonal)")
    return Discrepancy(tb.model, list(tb.ts), dist.mean(0), dist[0], cos2, math.sqrt(k) * math.pi / 2, claim,
                       status, None if transfer is None else transfer.mean(0))


def _run(context: Context) -> AnalysisResult:
    """Claim 4 on the primary model's bases: the heatmap, and the edit-transfer heatmap when it ran.

    >>> from pathlib import Path
    >>> from diffgeo.analyses._common import PRESETS
    >>> from diffgeo.analyses.bases import toy_bases
    >>> r = _run(Context(["toy"], PRESETS["tiny"], Path("."), trajectory_bases={"toy": toy_bases()}))
    >>> [c.id for c in r.claims], list(r.figures), r.notes[0][:34]
    (['4'], ['discrepancy'], 'analysis 4, edit transfer: skipped')
    """
    r = discrepancy(context.bases(context.primary))
    figures = {"discrepancy": FigureSpec(draw_basis_heatmap, r, (4.6, 4.2))}
    if r.transfer is not None:
        figures["edit_transfer"] = FigureSpec(draw_edit_transfer, r, (4.6, 4.2))
    return AnalysisResult([r.claim], figures, [f"analysis 4, edit transfer: {r.edit_transfer}"])


ANALYSIS = Analysis("discrepancy", "4. distance between one trajectory's bases at t and t' (heatmap)", _run)
