"""Analysis 6: curvedness of segments between pairs of samples (Park et al., arXiv 2302.12469), for
every definition in :func:`curvedness`, against an untrained network of the same architecture.

The null of a segment is the same segment (the same two samples at the same t) through an untrained
U-Net of the same architecture: the diffusers class built from the model's own config with its
default random initialisation (:func:`untrained_like`), the same h module, points and k. The
excess (trained minus untrained, paired by segment) says how much of the curvedness the training
added beyond what the architecture alone gives. (The earlier baseline, the rank-k linearisation at
the midpoint, is affine and exactly flat: its curvedness is 0 up to rounding, so it nulls nothing.)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffgeo.analyses._common import Claim, Preset, load_model
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.analyses.rules import N_BOOT, excess_verdict, measured_claim
from diffgeo.core.sweep import model_fingerprint, sweep
from diffgeo.evaluation.stats import bca_interval
from diffgeo.geometry.curvedness import curvedness
from diffgeo.models.model import Model
from diffgeo.sampling.ddim import ddim_timesteps, sample
from diffgeo.viz.results import draw_curvedness

__all__ = ["Curvedness", "segment_curvedness", "curvedness_pair", "untrained_like", "DEFINITIONS", "ANALYSIS"]

DEFINITIONS = {
    "rotation": "(a) rotation of the top-k tangent space along the chord, rad per unit length",
    "off_tangent": "(b) mean off-tangent fraction of the chord direction",
    "excess_length": "(c) excess length of the chord's image in H",
}
SENTENCE = "Segments between samples are curved under x_t -> h (X is not flat), beyond the architecture's own curvedness"
SOURCE = ("Park et al., arXiv 2302.12469: curvedness of the segment between two samples shows that X is curved "
          "(the paper's formula was not retrieved; the three definitions are diffgeo's)")
NULL = "the same segment through an untrained U-Net of the same architecture (default random init)"
UNIT = "segments (pairs of samples)"
UNTRAINED_SEED = 0


@functools.lru_cache(maxsize=4)
def untrained_like(model: str, seed: int = UNTRAINED_SEED) -> Model:
    """An untrained copy of ``model``: its U-Net class built from its config with the default random init
    (``torch.manual_seed(seed)``), the same scheduler and h module.

    >>> m = untrained_like("digits")
    >>> m.x_shape == load_model("digits").x_shape, m.name
    (True, 'digits (untrained)')
    """
    m = load_model(model)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = type(m.unet).from_config(m.unet.config)
    finally:
        torch.random.set_rng_state(state)
    unet = unet.to(device=m.device) if unet.dtype == m.dtype else unet.to(device=m.device, dtype=m.dtype)
    return Model(unet, m.scheduler, name=f"{m.name} (untrained)", h_module=m.h_module, vae=m.vae, text=m.text,
                 prompt_error=getattr(m, "_prompt_error", None), guidance=m.guidance)


def curvedness_pair(model: str, pair: int, steps: int, t: int, k: int, n_points: int, tol: float, seed: int,
                    null: str = "untrained") -> dict[str, Any]:
    """Curvedness of the segment between samples ``seed + 2 pair`` and ``seed + 2 pair + 1`` at t under the
    model and under its untrained copy: {definition: value, "untrained_" + definition: value}. ``null``: the
    only null there is, "untrained" (a sweep key, so that caches of the old flat baseline are not reused).

    >>> r = curvedness_pair("digits", 0, steps=4, t=500, k=1, n_points=3, tol=1e-2, seed=0)
    >>> sorted(r) == sorted([*DEFINITIONS, *(f"untrained_{d}" for d in DEFINITIONS)])
    True
    """
    if null != "untrained":
        raise ValueError(f"null must be 'untrained', got {null!r}")
    m = load_model(model)
    with torch.no_grad():
        traj = sample(m, 2, steps=steps, seed=seed + 1000 + pair, progress=False)
    grid = [int(s) for s in traj.timesteps]
    xa, xb = traj.xs[grid.index(t), 0], traj.xs[grid.index(t), 1]
    c = curvedness(m, xa, xb, t, k=k, n_points=n_points, tol=tol, seed=seed, progress=False)
    u = curvedness(untrained_like(model), xa, xb, t, k=k, n_points=n_points, tol=tol, seed=seed, progress=False)
    out = {name: float(getattr(c, name)) for name in DEFINITIONS}
    out.update({f"untrained_{name}": float(getattr(u, name)) for name in DEFINITIONS})
    return out


@dataclass(frozen=True)
class Curvedness:
    """values / flat: definition -> (P,) tensors over the P segments, trained / untrained network (``flat``
    keeps its old name: it is the null drawn beside each segment); t; claims 6a-6c."""

    model: str
    t: int
    values: dict[str, torch.Tensor]
    flat: dict[str, torch.Tensor]
    claims: list[Claim]


def segment_curvedness(model: str, preset: Preset, *, cache: str | Path | None = None, client: Any = None,
                       seed: int = 0, progress: bool | None = None) -> Curvedness:
    """Claims 6a-6c: curvedness of ``preset.n_pairs`` segments between samples at the middle timestep, trained
    minus untrained network, paired by segment.

    >>> p = Preset("doc", n_samples=2, steps=4, n_t=2, k=1, tol=1e-2, n_prompts=2, n_pairs=2, n_points=3, n_guidance=1)
    >>> cv = segment_curvedness("digits", p, progress=False)
    >>> [c.id for c in cv.claims], cv.t, cv.values["rotation"].shape, cv.claims[0].verdict
    (['6a', '6b', '6c'], 250, torch.Size([2]), 'too few units')
    """
    m = load_model(model)
    grid = [int(s) for s in ddim_timesteps(m, preset.steps)]
    t = grid[len(grid) // 2]
    points = [{"model": model, "pair": i, "steps": preset.steps, "t": t, "k": preset.k, "n_points": preset.n_points,
               "tol": preset.tol, "seed": seed, "null": "untrained"} for i in range(preset.n_pairs)]
    res = sweep(curvedness_pair, points, cache=cache, client=client, progress=progress,
                context={"model": model_fingerprint(m)}, desc=f"curvedness {model}")
    values = {n: torch.tensor([r[n] for r in res.results], dtype=torch.float64) for n in DEFINITIONS}
    null = {n: torch.tensor([r[f"untrained_{n}"] for r in res.results], dtype=torch.float64) for n in DEFINITIONS}
    claims = []
    for letter, (name, what) in zip("abc", DEFINITIONS.items()):
        diff = values[name] - null[name]
        ex, lo, hi = bca_interval(len(diff), lambda i, d=diff: float(d[i].mean()), n_boot=N_BOOT)
        claims.append(measured_claim(
            f"6{letter}", "curvedness", model, f"{SENTENCE}: {what}.", SOURCE,
            f"mean over segments of the curvedness {what[:3]} (t={t}, k={preset.k}, {preset.n_points} points)",
            value=float(values[name].mean()), null=NULL, null_value=float(null[name].mean()), excess=(ex, lo, hi),
            n=len(diff), unit=UNIT, rule="excess", verdict=excess_verdict(lo, hi, n=len(diff), sign=+1),
            note="excess = trained minus untrained, paired by segment"))
    return Curvedness(model, t, values, null, claims)


def _run(context: Context) -> AnalysisResult:
    """Claims 6a-6c on the primary model, with the figure of every segment against the untrained network."""
    model = context.primary
    cv = context.timed("curvedness", lambda: segment_curvedness(model, context.preset, cache=context.cache(model),
                                                                 **context.sweep_kwargs))
    return AnalysisResult(list(cv.claims), {"curvedness": FigureSpec(draw_curvedness, cv)})


ANALYSIS = Analysis("curvedness", "6. curvedness of segments between samples vs an untrained network", _run)
