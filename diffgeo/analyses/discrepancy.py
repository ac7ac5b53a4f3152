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

import importlib
import importlib.util
import math
from dataclasses import dataclass

import torch

from diffgeo.analyses._common import Claim, load_model, skipped_claim
from diffgeo.analyses.bases import TrajectoryBases
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.analyses.rules import N_BOOT, bound_verdict, excess_verdict, measured_claim
from diffgeo.editing.xspace import edit_x
from diffgeo.evaluation.nulls import chance_retention, random_directions_like
from diffgeo.evaluation.stats import bca_interval
from diffgeo.viz.results import draw_basis_heatmap, draw_edit_transfer

__all__ = ["Discrepancy", "discrepancy", "edit_transfer_status", "ANALYSIS"]

SOURCE = ("Park et al., NeurIPS 2023 (arXiv 2307.12868), abstract: \"novel insights such as the discrepancy between "
          "x_t across timesteps\" (analysis over timesteps)")
SENTENCE = "A direction found at one timestep does not carry over to another timestep."
STATISTIC = ("energy a basis vector found at t keeps in the basis at t' (mean cos^2 of the principal angles), pairs at "
             "least 2 grid positions apart")
NULL = "chance: a random k-dim subspace keeps k/n of a direction's energy"
EXCESS = "(retention - k/n) / (1 - k/n): 0 = chance, 1 = the same subspace"
SENTENCE_B = "An edit along v_1 found at t, applied at t', does less than v_1 found at t' itself."
STATISTIC_B = ("mean over samples and pairs (t, t') at least 2 grid positions apart of log(change of the final image "
               "under v_1(t) applied at t' / under v_1(t') at t'), same step size")
NULL_B = ("0 (the direction carries over); for reference, a random direction of the same norm at t' gives the "
          "null value")
UNIT = "samples (trajectories)"
SOURCE_8 = ("Park et al., NeurIPS 2023 (arXiv 2307.12868), abstract: \"image editing through x-space traversal, editing "
            "only once at specific timestep t without any additional training\"")
SENTENCE_8 = "Moving x_t once, at one timestep, along the local basis vector v_1 edits the image."
STATISTIC_8 = ("mean over samples and timesteps of log(change of the final image under v_1(t) at t / under a random "
               "direction of the same norm at t)")
NULL_8 = "a random direction of the same norm at the same x_t: log ratio 0"


@dataclass(frozen=True)
class Discrepancy:
    """heatmap: (T, T) mean Grassmann distance between a trajectory's bases at t_i and t_j;
    retained: (N, T, T) mean cos^2 of principal angles; example: (T, T) distances of sample 0;
    ts (T,) descending; edit_transfer: what the edit part did or why it did not run; transfer: (T, T)
    mean over samples of the edit-transfer ratio (row i: v_1 found at t_i; column j: applied at t_j) or None;
    transfer_random: (T,) the same ratio for a random direction of the same norm; claims: 4 and 4b."""

    model: str
    ts: list[int]
    heatmap: torch.Tensor
    example: torch.Tensor
    retained: torch.Tensor
    max_distance: float
    claim: Claim
    edit_transfer: str
    transfer: torch.Tensor | None = None
    transfer_random: torch.Tensor | None = None
    claims: tuple[Claim, ...] = ()


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
    itself (1 on the diagonal), and in row T a random unit direction (:func:`~diffgeo.evaluation.nulls.random_directions_like`)
    applied at t_j: (N, T + 1, T). None when diffgeo.editing.xspace is not available or the points were not kept.

    >>> from diffgeo.analyses import Preset, collect_bases
    >>> p = Preset("doc", n_samples=1, steps=4, n_t=2, k=1, tol=1e-2, n_prompts=2, n_pairs=1, n_points=2, n_guidance=1)
    >>> r = edit_transfer(collect_bases("digits", p, progress=False))
    >>> r.shape, r[0, :2].diagonal().tolist()
    (torch.Size([1, 3, 2]), [1.0, 1.0])
    """
    if tb.x is None or tb.steps is None or edit_transfer_status() != "ran":
        return None


    m = load_model(tb.model)
    n, t_count = tb.v.shape[:2]
    strength = EDIT_STRENGTH * math.sqrt(tb.v.shape[-1])
    kw = {"prompt": tb.prompt or ""} if m.is_conditional else {}
    out = torch.zeros(n, t_count + 1, t_count, dtype=torch.float64)
    for a in range(n):
        rand = random_directions_like(tb.v[a, 0, 0], 1, seed=a)           # unit norm, like every v_1
        dirs = torch.cat([torch.zeros(1, tb.v.shape[-1], dtype=tb.v.dtype), tb.v[a, :, 0], rand.to(tb.v.dtype)])
        dirs = dirs.reshape(t_count + 2, *tb.x_shape).to(m.dtype)
        for j, t in enumerate(tb.ts):
            x = tb.x[a, j].to(m.dtype).expand(t_count + 2, *tb.x_shape)
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
    >>> r.heatmap.shape, r.claim.value, r.claim.excess < 0, r.claim.verdict     # 3 samples: too few for a verdict
    (torch.Size([3, 3]), 0.0, True, 'too few units')
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
    transfer = edit_transfer(tb) if edits else None
    status = edit_transfer_status() if edits else "not asked for"
    if transfer is None and status == "ran":
        status = "skipped: the points x_t were not kept with the bases"
    if not bool(far.any()):
        claims = (skipped_claim("4", "discrepancy", tb.model, SENTENCE, "needs at least 3 timesteps per trajectory"),)
        return Discrepancy(tb.model, list(tb.ts), dist.mean(0), dist[0], cos2, math.sqrt(k) * math.pi / 2, claims[0],
                           status, None, None, claims)
    chance = chance_retention(int(tb.v.shape[-1]), k)
    value = float(cos2[:, far].mean())
    ex, lo, hi = bca_interval(n, lambda idx: (float(cos2[idx][:, far].mean()) - chance) / (1 - chance), n_boot=N_BOOT)
    claims = [measured_claim("4", "discrepancy", tb.model, SENTENCE, SOURCE, STATISTIC, value=value, null=NULL,
                             null_value=chance, excess=(ex, lo, hi), n=n, unit=UNIT, rule="bound",
                             verdict=bound_verdict(lo, hi, n=n, claim="4", side=-1),
                             note=f"excess = {EXCESS}; retention {value:.3g} is {value / chance:.3g} x chance")]
    if transfer is not None:
        log_own = transfer[:, :t_count].clamp_min(1e-12).log()               # (N, T, T)
        log_rand = transfer[:, t_count].clamp_min(1e-12).log()               # (N, T)
        lb = float(log_own[:, far].mean())
        lr = float(log_rand[:, far.any(0)].mean())
        b, blo, bhi = bca_interval(n, lambda idx: float(log_own[idx][:, far].mean()), n_boot=N_BOOT)
        claims.append(measured_claim(
            "4b", "discrepancy", tb.model, SENTENCE_B, SOURCE, STATISTIC_B, value=lb, null=NULL_B, null_value=lr,
            excess=(b, blo, bhi), n=n, unit=UNIT, rule="excess", verdict=excess_verdict(blo, bhi, n=n, sign=-1),
            note=f"ratio {math.exp(lb):.3g}x the own direction's change (a random direction of the same norm: "
                 f"{math.exp(lr):.3g}x); step {EDIT_STRENGTH} sqrt(n)"))
        e8, lo8, hi8 = bca_interval(n, lambda idx: -float(log_rand[idx].mean()), n_boot=N_BOOT)
        claims.append(measured_claim(
            "4c", "discrepancy", tb.model, SENTENCE_8, SOURCE_8, STATISTIC_8, value=e8, null=NULL_8, null_value=0.0,
            excess=(e8, lo8, hi8), n=n, unit=UNIT, rule="excess", verdict=excess_verdict(lo8, hi8, n=n, sign=+1),
            note=f"v_1 changes the image {math.exp(e8):.3g}x as much as a random direction; step {EDIT_STRENGTH} "
                 "sqrt(n), one edit, then plain DDIM"))
        status = (f"ran: an edit along v_1 found at t, applied at t' (step {EDIT_STRENGTH} sqrt(n)), changes the final "
                  "image by the ratio shown in the transfer heatmap relative to v_1 found at t' itself (mean over "
                  "samples; 1 on the diagonal); its verdict is claim 4b")
    return Discrepancy(tb.model, list(tb.ts), dist.mean(0), dist[0], cos2, math.sqrt(k) * math.pi / 2, claims[0],
                       status, None if transfer is None else transfer[:, :t_count].mean(0),
                       None if transfer is None else transfer[:, t_count].mean(0), tuple(claims))


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
    return AnalysisResult(list(r.claims), figures, [f"analysis 4, edit transfer: {r.edit_transfer}"])


ANALYSIS = Analysis("discrepancy", "4. distance between one trajectory's bases at t and t' (heatmap)", _run)
