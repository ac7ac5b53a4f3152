"""LOCO-Edit-style directions (after Chen et al., NeurIPS 2024): low-rank, masked, no training.

At one timestep t the posterior-mean predictor ``x0_hat(x_t) = (x_t - sqrt(1 - abar_t) eps(x_t, t)) / sqrt(abar_t)``
maps x_t to a clean image; its Jacobian J (n x n) says how a step in x_t moves that image. With a
mask M of the region to edit (a bool (H, W) image):

1. the top-k right singular vectors v_i of ``P_in J`` (J with its output restricted to the masked
   pixels) are the directions that change the region most;
2. the top-r right singular vectors w_j of ``P_out J`` (the output outside the mask) span what
   changes the rest of the image most; the edit direction is ``v_i`` with them removed,
   ``(I - W^T W) v_i``, normalised: a step in the approximate null space of ``P_out J``.

Both singular problems reuse the block Krylov solver of :func:`diffgeo.geometry.basis.local_basis`
on the masked maps (J v by forward mode, J^T u by reverse mode, inside
:func:`diffgeo.geometry.pullback.forward_ad_ready`). The edit is ``x_t + strength v`` then DDIM
(:func:`diffgeo.editing.xspace.edit_x`). :func:`scene_mask` gives the mask of a shapes scene from its
own shape (read by the probe, optionally refined by :func:`~diffgeo.readers.probe.fit_scene`).

>>> A = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 1.0, 1.0]])
>>> d = loco_directions(lambda x: A @ x, torch.zeros(3), None, torch.tensor([True, False, False]), k=1, r=1)
>>> [round(abs(v), 4) for v in d.v[0].tolist()]   # row 0 only depends on x_0, untouched by rows 1-2
[1.0, 0.0, 0.0]
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

import diffgeo.data.shapes as shapes
from diffgeo.core.checks import check_int
from diffgeo.core.io import load_tensors_json, save_tensors_json
from diffgeo.editing.directions import Direction
from diffgeo.geometry.basis import local_basis
from diffgeo.geometry.pullback import forward_ad_ready
from diffgeo.readers.probe import fit_scene, validity

__all__ = ["LocoDirections", "loco_directions", "x0_predictor", "scene_mask", "check_mask"]


def x0_predictor(model: Any, t: int, *, prompt: Any = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The posterior-mean predictor of ``model`` at timestep t as a function of one sample:
    x_t (*x_shape) -> x0_hat (*x_shape) (text models: the conditional branch of ``prompt``).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> x0_predictor(m, 500)(torch.zeros(3, 32, 32)).shape
    torch.Size([3, 32, 32])
    """
    model.check_t(t)
    t = int(t)
    a = float(model.alphas_cumprod[t])
    tb = model.timesteps_tensor(t, 1)
    c = model.conditioning(prompt, branch="cond", batch=1) if model.is_conditional else None

    def fn(x: torch.Tensor) -> torch.Tensor:
        eps = model.eps_fn(x[None], tb, c)[0]
        return (x - (1 - a) ** 0.5 * eps) / a ** 0.5

    return fn


def check_mask(mask: Any, image_shape: tuple[int, ...]) -> torch.Tensor:
    """A user's mask as a bool tensor of ``image_shape``: (H, W) masks broadcast over channels.

    Raises a ValueError for a mask of another shape, an empty mask or a full one (nothing outside it
    to keep).

    >>> check_mask(torch.ones(2, 2, dtype=torch.bool).tril(), (3, 2, 2)).shape
    torch.Size([3, 2, 2])
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a bool tensor (H, W) or {tuple(image_shape)}, got {type(mask).__name__}")
    m = mask.detach().cpu()
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("mask must be boolean (or 0/1 values)")
        m = m.bool()
    if tuple(m.shape) == tuple(image_shape[-2:]) and len(image_shape) == 3:
        m = m[None].expand(*image_shape)
    if tuple(m.shape) != tuple(image_shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; the image has shape {tuple(image_shape)}: give "
                         f"({', '.join(map(str, image_shape[-2:]))}) or ({', '.join(map(str, image_shape))})")
    if not bool(m.any()):
        raise ValueError("mask is empty: mark at least one pixel of the region to edit")
    if bool(m.all()):
        raise ValueError("mask covers the whole image: nothing is left outside it to keep; edit without a mask "
                         "(e.g. diffgeo.local_basis) or mark a smaller region")
    return m.contiguous()


def scene_mask(images: torch.Tensor, *, dilate: int = 1, fit: bool = True) -> torch.Tensor:
    """Masks (N, 32, 32) bool of the shape in shapes scenes (N, 3, 32, 32): the shape the probe reads
    (refined by :func:`~diffgeo.readers.probe.fit_scene` with ``fit``), rendered alone, grown by
    ``dilate`` pixels.

    >>> s = shapes.make_scenes(2, seed=0)
    >>> m = scene_mask(s.images, dilate=0, fit=False)
    >>> m.shape, bool(m.any(dim=(1, 2)).all())
    (torch.Size([2, 32, 32]), True)
    """
    dilate = check_int(dilate, "dilate", min=0)
    f = validity(images).factors
    if fit:
        f = fit_scene(images, f).factors
    # render = (1 - cov) bg + cov colour, so the coverage is the difference of two backgrounds
    cov = 1 + (shapes.render(f.replace(background=torch.full((len(f),), -1.0)))
               - shapes.render(f.replace(background=torch.full((len(f),), 1.0))))[:, 0] / 2
    mask = cov > 0.01
    if dilate:
        mask = F.max_pool2d(mask[:, None].float(), 2 * dilate + 1, stride=1, padding=dilate)[:, 0] > 0
    return mask


@dataclass(frozen=True)
class LocoDirections:
    """LOCO-style directions at one point. v: (k, *x_shape) edit directions (unit), the top right
    singular vectors of ``P_in J`` with the top-r right singular space of ``P_out J`` removed;
    v_raw: (k, *x_shape) before the removal; s: (k,) singular values of ``P_in J``; w: (r, *x_shape),
    s_out: (r,) those of ``P_out J``; mask: (*x_shape) bool; leakage: (k,) ``||P_out J v|| / ||P_in J v||``
    (after the removal) and leakage_raw (before); meta: t, k, r, seconds, products."""

    v: torch.Tensor
    v_raw: torch.Tensor
    s: torch.Tensor
    w: torch.Tensor
    s_out: torch.Tensor
    mask: torch.Tensor
    leakage: torch.Tensor
    leakage_raw: torch.Tensor
    meta: dict = field(default_factory=dict)

    def direction(self, model: str, i: int = 0, sign: float = 1.0) -> Direction:
        """The i-th direction (times ``sign``) as an x-space :class:`Direction` of ``model`` (a name)."""
        return Direction(sign * self.v[i][None], torch.tensor([-1]), "x", model,
                         {"source": "loco", "index": i, "sign": sign, **{k: v for k, v in self.meta.items()
                                                                           if k in ("t", "k", "r")}})

    def save(self, path: str | Path) -> Path:
        """One safetensors file (atomic), metadata inside."""
        return save_tensors_json(path, {"v": self.v, "v_raw": self.v_raw, "s": self.s, "w": self.w,
                                        "s_out": self.s_out, "mask": self.mask.to(torch.uint8),
                                        "leakage": self.leakage, "leakage_raw": self.leakage_raw},
                                 {"kind": "LocoDirections", **self.meta})

    @classmethod
    def load(cls, path: str | Path) -> "LocoDirections":
        t, meta = load_tensors_json(path, kind="LocoDirections")
        return cls(t["v"], t["v_raw"], t["s"], t["w"], t["s_out"], t["mask"].bool(), t["leakage"],
                   t["leakage_raw"], meta)


def _masked(fn: Callable[[torch.Tensor], torch.Tensor], keep: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    w = keep.float()
    return lambda x: fn(x) * w.to(x)


def loco_directions(model: Any, x_t: torch.Tensor, t: int | None, mask: Any, *, k: int = 4, r: int = 8,
                    prompt: Any = None, tol: float = 1e-2, max_iter: int = 30, seed: int = 0) -> LocoDirections:
    """LOCO-style edit directions of the region ``mask`` at x_t (one sample) and timestep t.

    ``model``: a diffgeo Model (the map is :func:`x0_predictor` at t), or any function of one sample
    ``(*x_shape) -> (*x_shape)`` with ``t=None`` (e.g. a linear map, for checks). ``mask``: bool
    (H, W) or (*x_shape), the region to edit (:func:`scene_mask` for shapes scenes); ``k``
    directions; ``r``: the rank of the removed out-of-mask space (0: no null-space projection).
    ``tol``/``max_iter``/``seed``: the Krylov solver's (:func:`~diffgeo.geometry.basis.local_basis`).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> mask = torch.zeros(32, 32, dtype=torch.bool); mask[12:20, 12:20] = True
    >>> d = loco_directions(m, x, 600, mask, k=1, r=2, max_iter=3)
    >>> d.v.shape, bool(d.leakage[0] <= d.leakage_raw[0] + 1e-6)
    (torch.Size([1, 3, 32, 32]), True)
    """
    k = check_int(k, "k", min=1)
    r = check_int(r, "r", min=0)
    start = time.perf_counter()
    is_model = hasattr(model, "eps_fn") and hasattr(model, "unet")
    if is_model:
        if t is None:
            raise ValueError(f"t is required for {model.name}: an integer timestep")
        x = model.check_x(x_t if x_t.dim() == len(model.x_shape) + 1 else x_t[None])
        if x.shape[0] != 1:
            raise ValueError(f"x_t has {x.shape[0]} samples: LOCO directions are found at one sample")
        x = x[0]
        fn = x0_predictor(model, t, prompt=prompt)
        ready = forward_ad_ready(model.unet)
    else:
        if not callable(model):
            raise TypeError(f"model must be a diffgeo Model or a function x -> x0, got {type(model).__name__}")
        if t is not None:
            raise ValueError("t is only meaningful for a diffgeo Model; pass t=None with a plain function")
        x = x_t.detach()
        fn = model
        ready = nullcontext()
    m = check_mask(mask, tuple(x.shape))
    n = x.numel()
    if k > n or r > n:
        raise ValueError(f"k={k} and r={r} must be at most the dimension of x ({n})")
    kw = {"tol": tol, "max_iter": max_iter, "seed": seed, "progress": False}
    with ready:
        inside = local_basis(_masked(fn, m), x, None, k, **kw)
        outside = local_basis(_masked(fn, ~m), x, None, r, **kw) if r > 0 else None
        vr = inside.v_flat.double()
        if outside is not None:
            wf = outside.v_flat.double()
            vp = vr - (vr @ wf.T) @ wf
        else:
            wf = torch.zeros(0, n, dtype=torch.float64)
            vp = vr.clone()
        vp = vp / vp.norm(dim=1, keepdim=True).clamp_min(1e-12)
        # leakage: how much of each direction's change of x0_hat lands outside the mask
        both = torch.cat([vr, vp]).to(x.dtype).view(-1, *x.shape)
        jv = torch.stack([torch.func.jvp(fn, (x,), (d,))[1].detach() for d in both]).double()
    jin, jout = (jv * m).flatten(1).norm(dim=1), (jv * ~m).flatten(1).norm(dim=1)
    leak = jout / jin.clamp_min(1e-30)
    products = inside.n_products + (outside.n_products if outside is not None else 0) + len(both)
    meta = {"t": t, "k": k, "r": r, "seed": seed, "seconds": time.perf_counter() - start, "products": products,
            "mask_fraction": float(m.float().mean())}
    shape = tuple(x.shape)
    return LocoDirections(v=vp.to(x.dtype).view(k, *shape), v_raw=vr.to(x.dtype).view(k, *shape),
                          s=inside.s.detach(), w=wf.to(x.dtype).view(-1, *shape),
                          s_out=outside.s.detach() if outside is not None else torch.zeros(0), mask=m,
                          leakage=leak[k:].float(), leakage_raw=leak[:k].float(), meta=meta)
