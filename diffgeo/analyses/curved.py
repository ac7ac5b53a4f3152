"""Analysis 6: curvedness of segments between pairs of samples (Park et al., arXiv 2302.12469), for
every definition in :func:`curvedness`, against a flat baseline.

The flat baseline of a segment is the map's rank-k linearisation at the segment's midpoint,
``x -> S V^T (x - x_mid)`` (its top-k singular values and vectors there): an affine map, for which
all three definitions are zero in exact arithmetic, run through the same ``curvedness`` call with
the same points and k; its values are the numerical floor a curved segment must exceed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffgeo.analyses._common import SIGN_RULE, Claim, Preset, bootstrap_ci, load_model, sign_verdict
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.core.sweep import model_fingerprint, sweep
from diffgeo.geometry.basis import local_basis
from diffgeo.geometry.curvedness import curvedness
from diffgeo.sampling.ddim import ddim_timesteps, sample
from diffgeo.viz.results import draw_curvedness

__all__ = ["Curvedness", "segment_curvedness", "DEFINITIONS", "ANALYSIS"]

DEFINITIONS = {
    "rotation": "(a) rotation of the top-k tangent space along the chord, rad per unit length",
    "off_tangent": "(b) mean off-tangent fraction of the chord direction",
    "excess_length": "(c) excess length of the chord's image in H",
}
SENTENCE = "Segments between samples are curved under x_t -> h (X is not flat)"
EXPECTED_SIGN = +1


class _Flat:
    """The rank-k linearisation ``x -> diag(s) V (x - x0)``, a plain function of one sample."""

    def __init__(self, v: torch.Tensor, s: torch.Tensor, x0: torch.Tensor):
        self.a = (s[:, None] * v.reshape(v.shape[0], -1)).double()
        self.x0 = x0.reshape(-1).double()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (self.a @ (x.reshape(-1).double() - self.x0)).to(x.dtype)


def curvedness_pair(model: str, pair: int, steps: int, t: int, k: int, n_points: int, tol: float, seed: int
                    ) -> dict[str, Any]:
    """Curvedness of the segment between samples ``seed + 2 pair`` and ``seed + 2 pair + 1`` at t, and of
    its flat baseline: {definition: value, "flat_" + definition: value}.

    >>> r = curvedness_pair("digits", 0, steps=4, t=500, k=1, n_points=3, tol=1e-2, seed=0)
    >>> sorted(r) == sorted([*DEFINITIONS, *(f"flat_{d}" for d in DEFINITIONS)])
    True
    """

    m = load_model(model)
    with torch.no_grad():
        traj = sample(m, 2, steps=steps, seed=seed + 1000 + pair, progress=False)
    grid = [int(s) for s in traj.timesteps]
    xa, xb = traj.xs[grid.index(t), 0], traj.xs[grid.index(t), 1]
    c = curvedness(m, xa, xb, t, k=k, n_points=n_points, tol=tol, seed=seed, progress=False)
    mid = (xa.double() + 0.5 * (xb - xa).double()).to(xa.dtype)
    b = local_basis(m, mid, t, k, tol=tol, seed=seed, progress=False)
    flat = _Flat(b.v, b.s, mid)
    f = curvedness(flat, xa.double(), xb.double(), None, k=k, n_points=n_points, method="exact",
                           progress=False)
    out = {name: float(getattr(c, name)) for name in DEFINITIONS}
    out.update({f"flat_{name}": float(getattr(f, name)) for name in DEFINITIONS})
    return out


@dataclass(frozen=True)
class Curvedness:
    """values / flat: definition -> (P,) tensors over the P segments; t; claims 6a-6c."""

    model: str
    t: int
    values: dict[str, torch.Tensor]
    flat: dict[str, torch.Tensor]
    claims: list[Claim]


def segment_curvedness(model: str, preset: Preset, *, cache: str | Path | None = None, client: Any = None,
                       seed: int = 0, progress: bool | None = None) -> Curvedness:
    """Claims 6a-6c: curvedness of ``preset.n_pairs`` segments between samples at the middle timestep.

    >>> p = Preset("doc", n_samples=2, steps=4, n_t=2, k=1, tol=1e-2, n_prompts=2, n_pairs=2, n_points=3, n_guidance=1)
    >>> cv = segment_curvedness("digits", p, progress=False)
    >>> [c.id for c in cv.claims], cv.t, cv.values["rotation"].shape, cv.flat["off_tangent"].shape
    (['6a', '6b', '6c'], 250, torch.Size([2]), torch.Size([2]))
    """

    m = load_model(model)
    grid = [int(s) for s in ddim_timesteps(m, preset.steps)]
    t = grid[len(grid) // 2]
    points = [{"model": model, "pair": i, "steps": preset.steps, "t": t, "k": preset.k, "n_points": preset.n_points,
               "tol": preset.tol, "seed": seed} for i in range(preset.n_pairs)]
    res = sweep(curvedness_pair, points, cache=cache, client=client, progress=progress,
                context={"model": model_fingerprint(m)}, desc=f"curvedness {model}")
    values = {n: torch.tensor([r[n] for r in res.results], dtype=torch.float64) for n in DEFINITIONS}
    flat = {n: torch.tensor([r[f"flat_{n}"] for r in res.results], dtype=torch.float64) for n in DEFINITIONS}
    claims = []
    for letter, (name, what) in zip("abc", DEFINITIONS.items()):
        diff = values[name] - flat[name]
        value, lo, hi = bootstrap_ci(len(diff), lambda i, d=diff: float(d[i].mean()))
        claims.append(Claim(f"6{letter}", "curvedness", model, f"{SENTENCE}: {what}.",
                            f"mean over segments of curvedness minus its flat baseline (t={t}, k={preset.k}, "
                            f"{preset.n_points} points; baseline mean {float(flat[name].mean()):.2e})",
                            value, lo, hi, len(diff), SIGN_RULE, sign_verdict(lo, hi, EXPECTED_SIGN)))
    return Curvedness(model, t, values, flat, claims)


def _run(context: Context) -> AnalysisResult:
    """Claims 6a-6c on the primary model, with the figure of every segment against its flat baseline."""
    model = context.primary
    cv = context.timed("curvedness", lambda: segment_curvedness(model, context.preset, cache=context.cache(model),
                                                                 **context.sweep_kwargs))
    return AnalysisResult(list(cv.claims), {"curvedness": FigureSpec(draw_curvedness, cv)})


ANALYSIS = Analysis("curvedness", "6. curvedness of segments between samples vs a flat baseline", _run)
