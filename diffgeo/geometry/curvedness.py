"""Curvedness of a segment x_a -> x_b under x -> h: how far the map is from affine along it.

Curvedness (:func:`curvedness`) follows Park et al. (arXiv 2302.12469) in spirit only: the
paper's formula could not be retrieved, so the three numbers are diffgeo's own definitions,
each zero when the map is affine along the segment:

(a) ``rotation``: total rotation of the top-k tangent space along the chord, the sum of
    Grassmann distances between the bases at consecutive points, divided by the chord length
    ``||x_b - x_a||`` (radians per unit length in X).
(b) ``off_tangent``: the chord direction's tangent part at an endpoint,
    ``p_a = V_a^T V_a d / ||V_a^T V_a d||`` (d = x_b - x_a), and its fraction outside the
    tangent space at each point, ``1 - ||V(x) p_a||^2``, averaged over the points; likewise from
    x_b, and the two means averaged. In [0, 1].
(c) ``excess_length``: length of the image of the chord in H (a polyline through the points)
    over the length of the chord in H, minus one: ``L(f(segment)) / ||f(x_b) - f(x_a)|| - 1``.

>>> import torch
>>> A = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
>>> c = curvedness(lambda x: A @ x, torch.zeros(3), torch.ones(3), k=2, progress=False)
>>> round(abs(c.rotation), 6), c.steps.shape
(0.0, torch.Size([8]))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffgeo.core.checks import check_int
from diffgeo.core.io import load_tensors_json, save_tensors_json
from diffgeo.core.progress import progress_bar
from diffgeo.geometry.basis import exact_basis
from diffgeo.geometry.batched import local_bases
from diffgeo.geometry.pullback import h_map
from diffgeo.geometry.subspaces import _angles_orthonormal, _orthonormal

__all__ = ["Curvedness", "curvedness"]


@dataclass(frozen=True)
class Curvedness:
    """Curvedness of the segment x_a -> x_b (diffgeo's definitions, see the module docstring).

    rotation: (a), radians per unit length; off_tangent: (b), in [0, 1]; excess_length: (c),
    >= 0. Profiles over the P = n_points points ``x_a + s (x_b - x_a)``, s = 0 .. 1:
    ``steps`` (P-1,) Grassmann distances between consecutive bases; ``off_tangent_a`` /
    ``off_tangent_b`` (P,) the fractions behind (b); ``h_segments`` (P-1,) lengths of the image
    polyline's pieces. ``chord_x`` / ``chord_h``: ``||x_b - x_a||`` and ``||f(x_b) - f(x_a)||``.
    """

    rotation: float
    off_tangent: float
    excess_length: float
    steps: torch.Tensor
    off_tangent_a: torch.Tensor
    off_tangent_b: torch.Tensor
    h_segments: torch.Tensor
    chord_x: float
    chord_h: float
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Save as one safetensors file with the metadata inside (atomic)."""
        tensors = {"steps": self.steps, "off_tangent_a": self.off_tangent_a, "off_tangent_b": self.off_tangent_b,
                   "h_segments": self.h_segments}
        meta = {"kind": "Curvedness", "rotation": self.rotation, "off_tangent": self.off_tangent,
                "excess_length": self.excess_length, "chord_x": self.chord_x, "chord_h": self.chord_h, **self.meta}
        return save_tensors_json(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> "Curvedness":
        """Inverse of :meth:`save`."""
        tensors, meta = load_tensors_json(path, kind="Curvedness")
        nums = {key: float(meta.pop(key)) for key in ("rotation", "off_tangent", "excess_length", "chord_x", "chord_h")}
        return cls(steps=tensors["steps"], off_tangent_a=tensors["off_tangent_a"],
                   off_tangent_b=tensors["off_tangent_b"], h_segments=tensors["h_segments"], meta=meta, **nums)


def _off_tangent(bases: list[torch.Tensor], p: torch.Tensor | None) -> torch.Tensor:
    if p is None:
        return torch.full((len(bases),), float("nan"), dtype=torch.float64)
    return torch.stack([1 - (q @ p).square().sum() for q in bases]).clamp(0, 1)


def curvedness(model: Any, x_a: torch.Tensor, x_b: torch.Tensor, t: int | None = None, *, k: int = 10,
               n_points: int = 9, method: str = "local", tol: float = 1e-4, seed: int = 0,
               progress: bool | None = None, **map_kwargs: Any) -> Curvedness:
    """Curvedness of the segment from x_a to x_b under x -> h (definitions (a)-(c) above).

    ``model``: a :class:`~diffgeo.models.model.Model` with timestep ``t``, or any function of one sample
    ``fn: (*x_shape) -> (*h_shape)`` with ``t=None``. x_a, x_b: (*x_shape) or (1, *x_shape).
    k: dimension of the tangent spaces; n_points (>= 2) points including both ends; method
    ``"local"`` (:func:`~diffgeo.geometry.batched.local_bases`, all points in one call, with ``tol``
    and ``seed``) or ``"exact"`` (full Jacobians, small maps only). Extra keywords (prompt, branch, ...) go to the map.

    Cost: n_points local bases. A linear map gives zeros (tests/test_geometry.py checks
    closed-form positive values on a paraboloid):

    >>> A = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    >>> c = curvedness(lambda x: A @ x, torch.zeros(3), torch.ones(3), k=2, progress=False)
    >>> abs(c.rotation) < 1e-6, abs(c.off_tangent) < 1e-6, abs(c.excess_length) < 1e-6
    (True, True, True)
    """

    n_points = check_int(n_points, "n_points", min=2)
    if method not in ("local", "exact"):
        raise ValueError(f"method must be 'local' or 'exact', got {method!r}")
    if hasattr(model, "conditioning") and hasattr(model, "h_fn"):  # a Model: resolve the prompt once
        spec = {key: map_kwargs.pop(key) for key in ("prompt", "negative_prompt", "branch", "guidance_scale", "cond")
                if key in map_kwargs}
        map_kwargs["cond"] = model.conditioning(spec.pop("prompt", None), batch=1, **spec)
    f_a = h_map(model, x_a, t, **map_kwargs)
    f_b = h_map(model, x_b, t, **map_kwargs)
    xa, xb = f_a.x, f_b.x
    d = (xb - xa).reshape(-1).double()
    chord_x = float(d.norm())
    if chord_x == 0:
        raise ValueError("x_a and x_b are the same point: the segment has no length")
    s_grid = torch.linspace(0, 1, n_points, dtype=torch.float64)
    points = [(xa.double() + float(s) * (xb - xa).double()).to(xa.dtype) for s in s_grid]
    with torch.no_grad():  # h at every point, through the one map already built (same t and conditioning)
        values = [f_a.fn(x).reshape(-1).double().cpu() for x in points]
    if method == "local":  # all points in one batched call
        found = local_bases(model, torch.stack(points), t, k, tol=tol, seed=seed, progress=progress, **map_kwargs)
    else:
        found = [exact_basis(model, x, t, k, **map_kwargs)
                 for x in progress_bar(points, desc="curvedness", progress=progress, leave=False)]
    bases = [basis.v_flat.double().cpu() for basis in found]
    steps = torch.tensor([float(torch.linalg.vector_norm(_angles_orthonormal(_orthonormal(p), _orthonormal(q))))
                          for p, q in zip(bases[:-1], bases[1:])], dtype=torch.float64)
    d_cpu = d.cpu()
    p_a = _tangent_part(bases[0], d_cpu)
    p_b = _tangent_part(bases[-1], d_cpu)
    off_a, off_b = _off_tangent(bases, p_a), _off_tangent(bases, p_b)
    h_segments = torch.stack([(q - p).norm() for p, q in zip(values[:-1], values[1:])])
    chord_h = float((values[-1] - values[0]).norm())
    excess = float(h_segments.sum() / chord_h - 1) if chord_h > 0 else float("inf")
    meta = {**f_a.meta, "k": k, "n_points": n_points, "method": method, "tol": tol, "seed": seed}
    return Curvedness(rotation=float(steps.sum()) / chord_x,
                      off_tangent=float((_trapezoid_mean(off_a) + _trapezoid_mean(off_b)) / 2),
                      excess_length=excess,
                      steps=steps, off_tangent_a=off_a, off_tangent_b=off_b, h_segments=h_segments,
                      chord_x=chord_x, chord_h=chord_h, meta=meta)


def _tangent_part(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor | None:
    q = _orthonormal(q)
    p = q.T @ (q @ d)
    norm = p.norm()
    if norm <= 1e-12 * d.norm():
        return None
    return p / norm


def _trapezoid_mean(values: torch.Tensor) -> float:
    """Mean of a function sampled at equally spaced points including both ends (trapezoid rule)."""
    if values.numel() < 2:
        return float(values.mean())
    return float((values[1:] + values[:-1]).sum() / (2 * (values.numel() - 1)))
