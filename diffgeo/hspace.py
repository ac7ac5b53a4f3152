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

from dataclasses import dataclass

import torch

from .models import Model
from .sampling import Trajectory

__all__ = ["HStatistics", "h_along", "h_statistics"]


def h_along(model: Model, traj: Trajectory, *, cond=None) -> torch.Tensor:
    """h at every noisy state of a trajectory: (S, B, *h_shape), step i is h(xs[i], timesteps[i]).

    The clean end (label -1) has no timestep and is left out.
    """
    out = []
    for x, t in zip(traj.xs, traj.timesteps.tolist()):
        if t < 0:
            continue
        out.append(model.h(x.to(model.device, model.dtype), t, cond=cond))
    return torch.stack(out)


@dataclass(frozen=True)
class HStatistics:
    """Per-timestep summaries of h, each (S,): ``timesteps``; ``norm`` mean ||h|| over samples;
    ``cross_sample_cosine`` mean cosine similarity between h of different samples (how much
    the samples share h at that t); ``step_cosine`` cosine between h at this and the next step,
    averaged over samples (last entry NaN)."""

    timesteps: torch.Tensor
    norm: torch.Tensor
    cross_sample_cosine: torch.Tensor
    step_cosine: torch.Tensor


def h_statistics(model: Model, traj: Trajectory, *, cond=None) -> HStatistics:
    """Summaries of h along ``traj`` (needs at least two samples for the cross-sample cosine)."""
    hs = h_along(model, traj, cond=cond).flatten(2).double()  # (S, B, D)
    s, b, _ = hs.shape
    if b < 2:
        raise ValueError("h_statistics needs a trajectory of at least 2 samples")
    unit = hs / hs.norm(dim=-1, keepdim=True)
    gram = unit @ unit.transpose(1, 2)  # (S, B, B)
    off = (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)) / (b * (b - 1))
    step = torch.full((s,), float("nan"), dtype=torch.float64)
    step[:-1] = (unit[:-1] * unit[1:]).sum(-1).mean(-1)
    ts = traj.timesteps[traj.timesteps >= 0]
    return HStatistics(ts, hs.norm(dim=-1).mean(-1), off, step)
