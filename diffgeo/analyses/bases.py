"""Local bases along sampled trajectories, computed once per (model, sample) through the sweep cache.

Analyses 1, 2, 3, 4 and 5b all read the same thing: for N samples, the top-k local bases at n_t
timesteps of each sample's DDIM trajectory. :func:`collect_bases` runs one sweep point per
sample (a warm-started :func:`~diffgeo.analyses.bases_along` over its timesteps) and stacks them.
:func:`seed_floor` recomputes each sample's first (cold) basis from another random start: the
distance between the two is the noise floor of the basis computation (the null of "same subspace").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffgeo.analyses._common import Preset, bases_along, load_model
from diffgeo.core.sweep import model_fingerprint, sweep
from diffgeo.geometry.basis import local_basis
from diffgeo.sampling.ddim import ddim_timesteps
from diffgeo.sampling.ddim import sample as ddim_sample

__all__ = ["TrajectoryBases", "trajectory_bases", "collect_bases", "seed_floor", "other_seed_basis"]


def trajectory_bases(model: str, sample: int, steps: int, ts: list[int], k: int, tol: float, seed: int,
                     prompt: str | None = None, branch: str = "cond") -> dict[str, Any]:
    """Sample ``seed + sample`` (DDIM, ``steps``, conditional branch of ``prompt`` at guidance 1) and its
    bases at ``ts`` under ``branch``: v (T, k, *x_shape), s (T, k), x (T, *x_shape), n_products (T,).

    >>> r = trajectory_bases("digits", 0, steps=4, ts=[750, 500], k=1, tol=1e-2, seed=0)
    >>> r["v"].shape, r["s"].shape, len(r["n_products"])
    (torch.Size([2, 1, 1, 16, 16]), torch.Size([2, 1]), 2)
    """

    m = load_model(model)
    kw = {"prompt": prompt} if m.is_conditional else {}
    with torch.no_grad():
        traj = ddim_sample(m, 1, steps=steps, seed=seed + sample, progress=False, **kw)
    map_kw = {"prompt": prompt, "branch": branch} if m.is_conditional else {}
    bases = bases_along(m, traj, ts, k, tol=tol, seed=seed, **map_kw)
    return {"v": torch.stack([b.v for b in bases]), "s": torch.stack([b.s for b in bases]),
            "x": torch.stack([b.x for b in bases]), "n_products": [b.n_products for b in bases]}


@dataclass(frozen=True)
class TrajectoryBases:
    """Bases of N samples at T timesteps: v (N, T, k, n) float64 flattened, s (N, T, k), ts (T,)
    descending (early = noisy first), x_shape of one point, model name, prompt and branch;
    x (N, T, *x_shape) the points (None when not kept)."""

    model: str
    ts: list[int]
    v: torch.Tensor
    s: torch.Tensor
    x_shape: tuple[int, ...]
    prompt: str | None
    branch: str
    n_products: int
    x: torch.Tensor | None = None
    steps: int | None = None


def toy_bases() -> TrajectoryBases:
    """A tiny TrajectoryBases with a known answer, for examples: 3 samples at t = 900, 500, 100,
    k = 2 point-like basis vectors on a 1x8x8 grid, the same subspace for every sample at each t
    and a different one at each t.

    >>> toy_bases().v.shape
    torch.Size([3, 3, 2, 64])
    """
    e = torch.eye(64, dtype=torch.float64)
    v = torch.stack([torch.stack([e[:2], e[2:4], e[4:6]])] * 3)
    return TrajectoryBases("toy", [900, 500, 100], v, torch.ones(3, 3, 2), (1, 8, 8), None, "cond", 0)


def collect_bases(model: str, preset: Preset, *, cache: str | Path | None = None, client: Any = None,
                  prompt: str | None = None, branch: str = "cond", seed: int = 0, progress: bool | None = None
                  ) -> TrajectoryBases:
    """Bases of ``preset.n_samples`` trajectories at ``preset.n_t`` timesteps, through the sweep cache.

    >>> from diffgeo.analyses import Preset
    >>> p = Preset("doc", n_samples=1, steps=4, n_t=2, k=1, tol=1e-2, n_prompts=2, n_pairs=1, n_points=2, n_guidance=1)
    >>> tb = collect_bases("digits", p, progress=False)
    >>> tb.v.shape[:3], tb.ts
    (torch.Size([1, 2, 1]), [750, 0])
    """

    m = load_model(model)
    grid = [int(t) for t in ddim_timesteps(m, preset.steps)]
    ts = preset.timesteps(grid)
    common = {"model": model, "steps": preset.steps, "ts": ts, "k": preset.k, "tol": preset.tol, "seed": seed,
              "prompt": prompt, "branch": branch}
    points = [{**common, "sample": i} for i in range(preset.n_samples)]
    res = sweep(trajectory_bases, points, cache=cache, client=client, progress=progress,
                context={"model": model_fingerprint(m)}, desc=f"bases {model}" + (f" {branch}" if prompt else ""))
    v = torch.stack([r["v"].reshape(len(ts), preset.k, -1).double() for r in res.results])
    s = torch.stack([r["s"].double() for r in res.results])
    n_products = sum(sum(r["n_products"]) for r in res.results)
    x = torch.stack([r["x"] for r in res.results])
    return TrajectoryBases(model, ts, v, s, tuple(m.x_shape), prompt, branch, int(n_products), x, preset.steps)


#: the random start of the seed floor's second basis is seed + this
FLOOR_SEED_OFFSET = 7919


def other_seed_basis(model: str, sample: int, steps: int, t: int, k: int, tol: float, seed: int,
                     prompt: str | None = None, branch: str = "cond") -> dict[str, Any]:
    """The cold basis at t of sample ``seed + sample``'s trajectory (as in :func:`trajectory_bases`), from the
    random start ``seed + FLOOR_SEED_OFFSET`` instead of ``seed``: v (k, *x_shape).

    >>> other_seed_basis("digits", 0, steps=4, t=750, k=1, tol=1e-2, seed=0)["v"].shape
    torch.Size([1, 1, 16, 16])
    """
    m = load_model(model)
    kw = {"prompt": prompt} if m.is_conditional else {}
    with torch.no_grad():
        traj = ddim_sample(m, 1, steps=steps, seed=seed + sample, progress=False, **kw)
    grid = [int(u) for u in traj.timesteps]
    map_kw = {"prompt": prompt, "branch": branch} if m.is_conditional else {}
    b = local_basis(m, traj.xs[grid.index(t), 0], t, k, tol=tol, seed=seed + FLOOR_SEED_OFFSET, progress=False,
                    **map_kw)
    return {"v": b.v}


def seed_floor(tb: TrajectoryBases, preset: Preset, *, cache: str | Path | None = None, client: Any = None,
               seed: int = 0, progress: bool | None = None) -> torch.Tensor:
    """(N,) Grassmann distance between each sample's basis at its first timestep and the same point's basis
    from another random start (the noise floor of a distance between bases).

    >>> from diffgeo.analyses import Preset
    >>> p = Preset("doc", n_samples=2, steps=4, n_t=2, k=1, tol=1e-2, n_prompts=2, n_pairs=1, n_points=2, n_guidance=1)
    >>> tb = collect_bases("digits", p, progress=False)
    >>> seed_floor(tb, p, progress=False).shape
    torch.Size([2])
    """
    if tb.steps is None:
        raise ValueError("seed_floor needs bases from collect_bases (their trajectories' steps are known)")
    m = load_model(tb.model)
    points = [{"model": tb.model, "sample": i, "steps": tb.steps, "t": tb.ts[0], "k": tb.v.shape[2],
               "tol": preset.tol, "seed": seed, "prompt": tb.prompt, "branch": tb.branch} for i in range(tb.v.shape[0])]
    res = sweep(other_seed_basis, points, cache=cache, client=client, progress=progress,
                context={"model": model_fingerprint(m)}, desc=f"seed floor {tb.model}")
    out = torch.zeros(len(points), dtype=torch.float64)
    for a, r in enumerate(res.results):
        w = r["v"].reshape(tb.v.shape[2], -1).double()
        cos = torch.linalg.svdvals(tb.v[a, 0] @ w.T).clamp(0, 1)
        out[a] = torch.arccos(cos).square().sum().sqrt()
    return out
