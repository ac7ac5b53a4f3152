"""Units and options of the traversal dashboard that make its controls comparable and safe.

- Strength is relative: ``s`` moves what is edited by ``s`` times its own typical norm: x_t by
  ``s * ||x_t||`` along a unit direction (x-space), h_t by ``s * mean ||h_t||`` at every edited
  step (Asyrp). So one slider range means the same for a local-basis vector, a mean difference
  and a principal component, on any model: :func:`x_scale`, :func:`h_norms`, :func:`relative_h`.
- Image sources are offered only where they apply: inverting real images needs the model's
  registry entry to know real images of its training distribution (:func:`sources_for`).
- t_boost is only offered below t_edit (:func:`boost_options`).

>>> boost_options([750, 500, 250, 0], 500)
[0, 250]
"""

from __future__ import annotations

from typing import Any

import torch

from diffgeo.editing.directions import Direction
from diffgeo.models.zoo import entry

__all__ = ["SAMPLES", "REAL", "sources_for", "real_images", "boost_options", "x_scale", "h_norms", "relative_h"]

SAMPLES = "samples"
REAL = "real images (inverted)"
#: The former name of REAL, still accepted.
OLD_REAL = "real scenes (inverted)"


def sources_for(model: Any) -> list[str]:
    """The image sources that work for ``model``: samples always; inverted real images when the
    registry knows real images of its training distribution of the model's image shape.

    >>> import diffgeo
    >>> sources_for(diffgeo.load("digits")), sources_for("someone/else")
    (['samples', 'real images (inverted)'], ['samples'])
    """
    real = entry(model).real_images
    if real is None:
        return [SAMPLES]
    shape = getattr(model, "x_shape", None)
    if shape is not None and tuple(real(1, 0).shape[1:]) != tuple(shape):
        return [SAMPLES]
    return [SAMPLES, REAL]


def real_images(model: Any, n: int, seed: int) -> torch.Tensor:
    """n real images (n, *x_shape) in [-1, 1] of the model's training distribution (its registry
    entry's ``real_images``), with a clear error for models without them.

    >>> import diffgeo
    >>> real_images(diffgeo.load("digits"), 2, 0).shape
    torch.Size([2, 1, 16, 16])
    """
    if REAL not in sources_for(model):
        raise ValueError(f"diffgeo knows no real images for model {getattr(model, 'name', model)!r}: use source='samples'")
    return entry(model).real_images(n, seed)


def path_anchors(trajectory: Any, timesteps: list[int]) -> dict[int, torch.Tensor]:
    """x_t (B, *x_shape) of a trajectory (xs (S + 1, B, *x_shape)) at each of ``timesteps`` it passes.

    >>> from diffgeo.sampling.trajectory import Trajectory
    >>> traj = Trajectory(torch.tensor([500, 0, -1]), torch.zeros(3, 1, 2), torch.zeros(2, 1, 2))
    >>> sorted(path_anchors(traj, [500, 0]))
    [0, 500]
    """
    return {int(t): trajectory.xs[i] for i, t in enumerate(trajectory.timesteps.tolist()) if t in timesteps}


def boost_options(timesteps: list[int], t_edit: int) -> list[int]:
    """t_boost values that fit ``t_edit``: 0 (off) and the grid timesteps in (0, t_edit), ascending.

    >>> boost_options([750, 500, 250, 0], 250)
    [0]
    """
    return [0] + sorted(t for t in timesteps if 0 < t < t_edit)


def x_scale(x_t: torch.Tensor) -> torch.Tensor:
    """Per-image norms ||x_t|| (N, 1, ..., 1) of a batch (N, *x_shape): the x-space strength unit.

    >>> x_scale(torch.full((2, 1, 2, 2), 3.0)).flatten().tolist()
    [6.0, 6.0]
    """
    return x_t.flatten(1).norm(dim=1).view(-1, *[1] * (x_t.dim() - 1))


def h_norms(model: Any, anchors: dict[int, torch.Tensor], prompt: Any = None) -> dict[int, float]:
    """Mean ||h_t|| over the images of each anchor x_t (``{t: (N, *x_shape)}``): the h-space
    strength unit at each timestep.

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> norms = h_norms(m, {500: torch.randn(2, 3, 32, 32)})
    >>> list(norms), norms[500] > 0
    ([500], True)
    """
    out = {}
    with torch.no_grad():
        for t, x in anchors.items():
            h = model.h(x, t, prompt=prompt) if prompt is not None else model.h(x, t)
            out[int(t)] = float(h.flatten(1).norm(dim=1).mean())
    return out


def relative_h(direction: Direction, norms: dict[int, float]) -> Direction:
    """The direction rescaled, at every timestep of ``norms``, to norm ``norms[t]`` (so that
    Asyrp's ``strength * dh(t)`` moves h_t by ``strength`` times its typical norm).

    >>> d = Direction(torch.ones(1, 4), torch.tensor([-1]), "h", "toy")
    >>> r = relative_h(d, {0: 1.0, 500: 4.0})
    >>> r.at(500).norm().item(), r.at(0).norm().item()
    (4.0, 1.0)
    """
    ts = sorted(norms)
    vecs = []
    for t in ts:
        v = direction.at(t).float()
        vecs.append(v / v.norm().clamp_min(1e-12) * norms[t])
    return Direction(torch.stack(vecs), torch.tensor(ts), "h", direction.model,
                     {**direction.meta, "relative_to": "mean ||h_t||"})
