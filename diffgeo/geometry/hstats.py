"""Statistics of h (the mid-block output) along DDIM trajectories.

>>> import diffgeo, torch
>>> model = diffgeo.load("shapes")
>>> with torch.no_grad():
...     traj = diffgeo.sample(model, 3, steps=5, seed=0, progress=False)
...     stats = h_statistics(model, traj)
>>> stats.norm.shape, stats.cross_sample_cosine.shape
(torch.Size([5]), torch.Size([5]))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from diffgeo.models.conditioning import Cond
from diffgeo.models.model import Model
from diffgeo.sampling.trajectory import Trajectory

CondLike = Cond | dict | None

__all__ = ["HStatistics", "h_along", "h_statistics", "trajectory_cond"]


def trajectory_cond(model: Model, traj: Trajectory, cond: CondLike = None) -> Cond | None:
    """The conditioning a trajectory was made with, rebuilt from ``traj.meta`` (its prompts, negative
    prompts, branch and guidance scale), or ``cond`` when given (needed when the trajectory was
    made from precomputed embeddings, whose prompts its meta cannot hold).

    >>> import diffgeo
    >>> model = diffgeo.load("digits")
    >>> traj = diffgeo.sample(model, noise=torch.zeros(1, 1, 16, 16), prompt="a 3", steps=2, progress=False)
    >>> c = trajectory_cond(model, traj)
    >>> (c.prompt, c.branch, c.guidance_scale) == (traj.meta["prompt"], traj.meta["branch"], 2.0)
    True
    """
    meta = traj.meta
    if cond is not None or not model.is_conditional:
        return model.conditioning(cond=cond, branch=meta.get("branch"), guidance_scale=meta.get("guidance_scale"))
    if meta.get("prompt") is None:
        raise ValueError(f"{model.name} is text-conditioned but the trajectory's meta holds no prompt (it was made "
                         "from precomputed embeddings, or by another model): pass cond= with its conditioning")
    return model.conditioning(meta["prompt"], negative_prompt=meta.get("negative_prompt"),
                              branch=meta.get("branch") or "cond", guidance_scale=meta.get("guidance_scale"))


def h_along(model: Model, traj: Trajectory, *, cond: CondLike = None) -> torch.Tensor:
    """h at every noisy state of a trajectory: (S, B, *h_shape), step i is h(xs[i], timesteps[i]),
    under the trajectory's own conditioning (:func:`trajectory_cond`).

    The clean end (label -1) has no timestep and is left out.

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> with torch.no_grad():
    ...     hs = h_along(model, diffgeo.sample(model, 2, steps=3, seed=0, progress=False))
    >>> hs.shape
    torch.Size([3, 2, 128, 8, 8])
    """
    c = trajectory_cond(model, traj, cond)
    out = []
    for x, t in zip(traj.xs, traj.timesteps.tolist()):
        if t < 0:
            continue
        out.append(model.h(x.to(model.device, model.dtype), t, cond=c))
    return torch.stack(out)


@dataclass(frozen=True)
class HStatistics:
    """Per-timestep summaries of h, each (S,): ``timesteps``; ``norm`` mean ||h|| over samples;
    ``cross_sample_cosine`` mean cosine similarity between h of different samples (how much
    the samples share h at that t); ``step_cosine`` cosine between h at this and the next step,
    averaged over samples (last entry NaN); ``meta``: the model and the conditioning used (prompt,
    negative_prompt, branch, guidance_scale: the trajectory's own)."""

    timesteps: torch.Tensor
    norm: torch.Tensor
    cross_sample_cosine: torch.Tensor
    step_cosine: torch.Tensor
    meta: dict = field(default_factory=dict)


def h_statistics(model: Model, traj: Trajectory, *, cond: CondLike = None) -> HStatistics:
    """Summaries of h along ``traj`` under its own conditioning (from ``traj.meta``, or ``cond``);
    needs at least two samples for the cross-sample cosine.

    >>> import diffgeo
    >>> model = diffgeo.load("digits")
    >>> with torch.no_grad():
    ...     traj = diffgeo.sample(model, noise=torch.randn(2, 1, 16, 16), prompt="a 3", steps=3, progress=False)
    ...     stats = h_statistics(model, traj)
    >>> stats.meta["branch"], stats.meta["guidance_scale"], stats.meta["prompt"]   # the trajectory's own
    ('cfg', 2.0, ['a 3'])
    >>> bool(((stats.cross_sample_cosine >= -1) & (stats.cross_sample_cosine <= 1)).all())
    True
    """
    if not isinstance(traj, Trajectory):
        raise TypeError(f"traj must be a diffgeo Trajectory (from sample/denoise/invert), got {type(traj).__name__}")
    c = trajectory_cond(model, traj, cond)
    hs = h_along(model, traj, cond=c).flatten(2).double()  # (S, B, D)
    s, b, _ = hs.shape
    if b < 2:
        raise ValueError("h_statistics needs a trajectory of at least 2 samples")
    unit = hs / hs.norm(dim=-1, keepdim=True)
    gram = unit @ unit.transpose(1, 2)  # (S, B, B)
    off = (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)) / (b * (b - 1))
    step = torch.full((s,), float("nan"), dtype=torch.float64)
    step[:-1] = (unit[:-1] * unit[1:]).sum(-1).mean(-1)
    ts = traj.timesteps[traj.timesteps >= 0]
    meta = {"model": model.name, **(c.meta() if c is not None else {})}
    return HStatistics(ts, hs.norm(dim=-1).mean(-1), off, step, meta)
