"""x-space edits along local bases (Park et al. 2023): :func:`edit_x` moves x_t once, at one
timestep, along a direction (a raw step ``x_t + strength v`` or x-space guidance
``x <- x + lam (eps(x + strength v) - eps(x))`` repeated M times), then runs DDIM to the clean end
(:func:`~diffgeo.sampling.ddim.ddim_loop`), optionally with quality boosting (eta = 1 on the steps
below ``t_boost``); :func:`edit_image` does it to a real image (fixed-point inversion to t, edit,
regenerate). ``strength=0`` reproduces :func:`diffgeo.denoise` bit for bit (tests/test_editing.py).

>>> import torch, diffgeo
>>> m = diffgeo.load("shapes")
>>> x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
>>> a = edit_x(m, x, 500, torch.zeros(3, 32, 32), strength=0.0, steps=4, progress=False).result
>>> torch.equal(a, diffgeo.denoise(m, x, 500, steps=4, progress=False).result)
True
"""

from __future__ import annotations

from typing import Any

import torch

from diffgeo.core.checks import NonFiniteError, check_bool, check_float, check_int, check_keywords, check_seed
from diffgeo.editing.common import boosting, check_boost, check_grid_t, check_prompt, edit_hint, edit_setup, renamed
from diffgeo.editing.directions import Direction
from diffgeo.models.conditioning import resolve_cond
from diffgeo.sampling.ddim import (
    BLOWUP,
    CLEAN,
    Callback,
    clip_range,
    ddim_loop,
    ddim_timesteps,
    make_generator,
    model_eps,
)
from diffgeo.sampling.inversion import invert
from diffgeo.sampling.trajectory import Trajectory

__all__ = ["edit_x", "edit_image", "X_METHODS"]

X_METHODS = ("step", "guidance")


def _x_direction(model: Any, direction: Any, batch: int, t: int) -> torch.Tensor:
    """The direction (1 or B, *x_shape) on the model's device; a Direction's vector at t (nearest stored t)."""
    if isinstance(direction, Direction):
        direction.check(model, "x")
        direction = direction.at(t)[None]
    if not isinstance(direction, torch.Tensor):
        raise TypeError(f"direction must be a tensor (B or 1, {', '.join(map(str, model.x_shape))}) or an x-space "
                        f"Direction, got {type(direction).__name__}")
    given = tuple(direction.shape)
    if direction.dim() == len(model.x_shape):
        direction = direction[None]
    if tuple(direction.shape[1:]) != tuple(model.x_shape) or direction.shape[0] not in (1, batch):
        raise ValueError(f"direction has shape {given}; x_t has shape ({batch}, "
                         f"{', '.join(map(str, model.x_shape))}): give (1 or {batch}, "
                         f"{', '.join(map(str, model.x_shape))})")
    if not torch.isfinite(direction).all():
        raise ValueError("direction contains NaN or infinite values")
    return direction.to(device=model.device, dtype=model.dtype)


def edit_x(model: Any, x_t: torch.Tensor, t: int, direction: Any, *, strength: float, method: str = "step",
           steps: int = 50, t_boost: int | None = None, prompt: Any = None, negative_prompt: Any = None,
           guidance_scale: float | None = None, edit_prompt: Any = None, lam: float = 0.1, iterations: int = 16,
           seed: int | None = None, use_clipped_model_output: bool | None = None, callback: Callback | None = None,
           progress: bool | None = None, boost: int | None = None) -> Trajectory:
    """Edit x_t (B, *x_shape) at timestep t along ``direction`` and denoise to the clean end.

    direction: (B or 1, *x_shape) or an x-space :class:`~diffgeo.editing.directions.Direction` (e.g. v_i of a
    local basis, :func:`diffgeo.editing.directions.tangent`; one stored at several timesteps gives its
    vector at t). ``method="step"``: ``x_t + strength v``;
    ``"guidance"``: ``x <- x + lam (eps(x + strength v) - eps(x))`` repeated ``iterations`` times
    (the reference: lam 0.1, M 16 on pixel models; lam 1, M 16/64 on Stable Diffusion), with
    eps on the conditional branch of ``edit_prompt`` (default: ``prompt``). Then DDIM on the
    ``steps`` grid below t; ``t_boost``: eta = 1 on the steps below this timestep (quality boosting;
    ``seed`` draws its noise; ``boost=`` is its deprecated old name). Text models: ``prompt`` is
    the generation prompt and must be given (``""`` = empty); the prompt the direction's Jacobian was taken with is the caller's choice
    (``diffgeo.local_basis(..., prompt=edit prompt)``), stored here in ``meta`` via ``edit_prompt``.
    ``strength=0`` is exactly ``diffgeo.denoise(model, x_t, t, steps=steps, ...)``. ``callback``:
    called after each DDIM step with its dict (:func:`~diffgeo.sampling.ddim.ddim_loop`).
    ``use_clipped_model_output``: None is the model's default (:func:`diffgeo.sample`). An edit that
    makes x NaN, infinite or larger than ``BLOWUP`` (e.g. ``strength=1e30``) raises
    :class:`~diffgeo.core.checks.NonFiniteError`, as a blow-up anywhere in the DDIM loop does.

    >>> import torch, diffgeo
    >>> m = diffgeo.load("shapes")
    >>> x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> edit_x(m, x, 500, torch.zeros(3, 32, 32), strength=1.0, steps=5, progress=False).xs.shape
    torch.Size([5, 1, 3, 32, 32])
    """
    t_boost = renamed("edit_x", "boost", "t_boost", boost, t_boost)
    strength = check_float(strength, "strength")
    x_t = model.check_x(x_t)
    t = check_grid_t(model, t, "t")
    if method not in X_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, X_METHODS))}, got {method!r}")
    check_prompt(model, prompt)
    b = check_boost(model, t_boost, t)
    seed = check_seed(seed)
    v = _x_direction(model, direction, x_t.shape[0], t)
    grid, c, clip, clipped_eps = edit_setup(model, x_t, steps, prompt, negative_prompt, guidance_scale,
                                            use_clipped_model_output)
    x = x_t
    if strength != 0.0:
        if method == "step":
            x = x_t + strength * v
        else:
            lam, iterations = check_float(lam, "lam"), check_int(iterations, "iterations", min=1)
            ec = c if edit_prompt is None else resolve_cond(model, edit_prompt, default_branch="cond",
                                                            batch=x_t.shape[0])
            tb = model.timesteps_tensor(t, x_t.shape[0])
            for _ in range(iterations):
                x = x + lam * (model.eps_fn(x + strength * v, tb, ec) - model.eps_fn(x, tb, ec))
        if not bool(x.abs().amax() <= BLOWUP):  # one check, before the loop (NaN compares False)
            raise NonFiniteError(f"x-space edit: the {method} edit at t={t} with strength={strength:g} made x_t NaN, "
                                 f"infinite or larger than {BLOWUP:g}; {edit_hint('strength')}")
    path = [t] + [s for s in grid if s < t] + [CLEAN]
    meta = {"model": model.name, "direction": "edit_x", "method": method, "strength": strength, "t": t,
            "steps": steps, "t_boost": b, "seed": seed, "edit_prompt": edit_prompt,
            "lam": lam if method == "guidance" else None, "iterations": iterations if method == "guidance" else None,
            "use_clipped_model_output": clipped_eps, **(c.meta() if c is not None else {})}
    g = make_generator(seed, None) if b > 0 else None
    return ddim_loop(model, x, path, model_eps(model, c), eta=boosting(b), generator=g, clip=clip,
                     clipped_eps=clipped_eps, steps=steps, callback=callback, progress=progress, desc="x-space edit",
                     meta=meta, hint=edit_hint("strength"))


def edit_image(model: Any, images: torch.Tensor, t: int, direction: Any, *, strength: float, steps: int = 50,
               reconstruct: bool = True, **kwargs: Any) -> Trajectory:
    """Edit real images (B, *x_shape) in [-1, 1]: fixed-point inversion up to t, :func:`edit_x`, regenerate.

    t must be a timestep of the ``steps`` grid. ``meta["inversion_rmse"]`` (with ``reconstruct``,
    the default) is the per-sample RMSE of regenerating without the edit: the error floor of the
    edit. Other keywords go to :func:`edit_x` (prompt, method, t_boost, ...).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> img = diffgeo.data.shapes.make_scenes(1, seed=5).images
    >>> tr = edit_image(m, img, 600, torch.zeros(3, 32, 32), strength=0.0, steps=5, progress=False)
    >>> tr.meta["inversion_rmse"][0] < 0.02
    True
    """
    if "boost" in kwargs:
        kwargs["t_boost"] = renamed("edit_image", "boost", "t_boost", kwargs.pop("boost"), kwargs.get("t_boost"))
    strength = check_float(strength, "strength")
    images = model.check_x(images, "images")
    clip = clip_range(model) or 1.0
    if float(images.abs().max()) > clip + 1e-6:
        raise ValueError(f"images must be in [-{clip:g}, {clip:g}], got values in [{float(images.min()):.3g}, "
                         f"{float(images.max()):.3g}] (map [0, 1] images with 2 * x - 1)")
    t = check_grid_t(model, t, "t")
    grid = ddim_timesteps(model, steps).tolist()
    if t not in grid:
        raise ValueError(f"t={t} is not on the {steps}-step grid ({grid[-1]}, {grid[-2]}, ..., {grid[0]}); "
                         "pick one of its timesteps")
    _check_edit_image_args(model, images, t, direction, kwargs)  # all before the (costly) inversion
    prompt = kwargs.get("prompt")
    check_prompt(model, prompt)
    progress = kwargs.get("progress", True)
    inv_kw = {k: kwargs[k] for k in ("prompt", "negative_prompt", "guidance_scale", "use_clipped_model_output")
              if k in kwargs}
    with torch.no_grad():
        inv = invert(model, images, steps=steps, progress=progress, **inv_kw)
    x_t = inv.xs[inv.timesteps.tolist().index(t)]
    out = edit_x(model, x_t, t, direction, strength=strength, steps=steps, **kwargs)
    meta = dict(out.meta, inversion_unconverged=inv.meta.get("unconverged", []))
    if reconstruct:
        kw = {k: v for k, v in kwargs.items() if k not in ("method", "lam", "iterations", "edit_prompt")}
        rec = out if strength == 0.0 else edit_x(model, x_t, t, direction, strength=0.0, steps=steps, **kw)
        meta["inversion_rmse"] = (rec.result - images).flatten(1).pow(2).mean(1).sqrt().tolist()
    return Trajectory(out.timesteps, out.xs, out.x0_preds, meta)


def _check_edit_image_args(model: Any, images: torch.Tensor, t: int, direction: Any, kwargs: dict) -> None:
    """What :func:`edit_x` would refuse after the inversion, refused before it."""
    check_keywords(kwargs, edit_x, "edit_image", taken=("model", "x_t", "t", "direction", "strength", "steps"))
    if kwargs.get("method", "step") not in X_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, X_METHODS))}, got {kwargs.get('method')!r}")
    check_boost(model, kwargs.get("t_boost"), t)
    check_seed(kwargs.get("seed"))
    if kwargs.get("use_clipped_model_output") is not None:
        check_bool(kwargs["use_clipped_model_output"], "use_clipped_model_output")
    _x_direction(model, direction, images.shape[0], t)
