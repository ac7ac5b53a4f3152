"""h-space edits with the asymmetric reverse process (Asyrp, Kwon et al. 2023).

On the steps with t >= t_edit, ``x_prev = sqrt(a_prev) P_t(eps(x_t | h + dh)) + D_t(eps(x_t))``
(the decoder sees the edited h and the original skip connections: the hook replaces only the mid
block's output, the skips come from the unedited encoder); plain DDIM down to t_boost, eta = 1
below it. :func:`asyrp_eps` is that pair of noise predictions, which
:func:`~diffgeo.sampling.ddim.ddim_loop` turns into steps, so ``strength=0`` reproduces
:func:`diffgeo.sample` bit for bit (tests/test_editing.py).

>>> import torch, diffgeo
>>> m = diffgeo.load("shapes")
>>> x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
>>> dh = diffgeo.editing.directions.Direction(torch.zeros(1, 128, 8, 8), torch.tensor([-1]), "h", "shapes")
>>> a = asyrp(m, x_T, dh, strength=3.0, t_edit=500, t_boost=0, steps=5, progress=False).result
>>> b = diffgeo.sample(m, noise=x_T, steps=5, progress=False).result
>>> bool((a - b).abs().max() < 1e-6)
True
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

import diffgeo.models.hooks as hooks
from diffgeo.core.checks import check_float, check_seed
from diffgeo.editing.common import boosting, check_boost, check_grid_t, check_prompt, edit_hint, edit_setup, renamed
from diffgeo.editing.directions import Direction
from diffgeo.editing.interval import default_interval
from diffgeo.models.conditioning import Cond
from diffgeo.sampling.ddim import CLEAN, Callback, EpsPair, ddim_loop, make_generator
from diffgeo.sampling.trajectory import Trajectory

__all__ = ["asyrp", "asyrp_eps"]

logger = logging.getLogger(__name__)


def _h_delta(model: Any, direction: Any) -> Callable[[int], Any]:
    """t -> dh (1 or B, *h_shape) from a Direction, a tensor or a function; a learned f_t
    (:class:`~diffgeo.editing.learned.LearnedDirection`) gives t -> (h -> f_t(h, t)), Asyrp's edit of each
    sample by its own h."""
    if callable(getattr(direction, "h_delta", None)):  # a learned f_t: each sample edited by f_t of its own h
        return direction.h_delta(model)
    if isinstance(direction, Direction):
        direction.check(model, "h")
        return lambda t: direction.at(t)[None].to(device=model.device, dtype=model.dtype)
    if isinstance(direction, torch.Tensor):
        d = direction[None] if direction.dim() == len(model.h_shape) else direction
        if tuple(d.shape[1:]) != tuple(model.h_shape):
            raise ValueError(f"direction has shape {tuple(direction.shape)}; h of {model.name} has shape "
                             f"{tuple(model.h_shape)} (give (*h_shape) or (B, *h_shape))")
        if not torch.isfinite(d).all():
            raise ValueError("direction contains NaN or infinite values")
        d = d.to(device=model.device, dtype=model.dtype)
        return lambda t: d
    if callable(direction):
        return direction
    raise TypeError(f"direction must be an h-space Direction, a tensor (*h_shape) or a function t -> dh, "
                    f"got {type(direction).__name__}")


def asyrp_eps(model: Any, cond: Cond | None, dh: Callable[[int], Any], strength: float,
              t_edit: int) -> EpsPair:
    """Asyrp's :data:`~diffgeo.sampling.ddim.EpsPair`: on steps with t >= t_edit (and strength != 0)
    the eps of h + strength dh(t) (dh(t): a tensor (1 or B, *h_shape), or a function of h giving one) for
    P_t and the plain eps for D_t; the
    plain eps twice elsewhere. eps: (B, *x_shape).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> pair = asyrp_eps(m, None, lambda t: torch.ones(1, 128, 8, 8), 1.0, t_edit=500)
    >>> x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> e_x0, e_dir = pair(x, 750)      # t >= t_edit: the edited eps for P_t
    >>> e_low, e_low_dir = pair(x, 250)  # below t_edit: plain DDIM
    >>> bool((e_x0 - e_dir).abs().max() > 0), e_low is e_low_dir
    (True, True)
    """
    def pair(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        tb = model.timesteps_tensor(0 if t == CLEAN else t, x.shape[0])
        eps = model.eps_fn(x, tb, cond)
        if strength == 0.0 or t == CLEAN or t < t_edit:
            return eps, eps
        d = dh(t)

        def add(h: torch.Tensor) -> torch.Tensor:
            delta = strength * (d(h) if callable(d) else d)
            return delta if delta.shape[0] in (1, h.shape[0]) else delta.repeat(h.shape[0] // delta.shape[0],
                                                                              *[1] * (h.dim() - 1))

        with hooks.add_to_output(model.unet, add, model.h_module):
            eps_p = model.eps_fn(x, tb, cond)
        return eps_p, eps

    return pair


def asyrp(model: Any, x_T: torch.Tensor | None = None, direction: Any = None, *, strength: float = 1.0,
          t_edit: int | None = None, t_boost: int | None = None, steps: int = 50, prompt: Any = None,
          negative_prompt: Any = None, guidance_scale: float | None = None, seed: int | None = None,
          use_clipped_model_output: bool | None = None, distance: str | Callable | None = None,
          callback: Callback | None = None, progress: bool | None = None,
          noise_or_x_T: torch.Tensor | None = None) -> Trajectory:
    """Asyrp: sample from x_T (B, *x_shape) editing h by ``strength * dh(t)`` in the x0 prediction only.

    direction: an h-space :class:`~diffgeo.editing.directions.Direction`, a tensor (*h_shape) or
    (B, *h_shape), a function ``t -> dh``, or a learned f_t
    (:class:`~diffgeo.editing.learned.LearnedDirection`: each sample's dh is f_t of its own h, the
    paper's edit). Steps with t >= t_edit take
    ``x_prev = sqrt(a_prev) P_t(eps(x_t | h + dh)) + D_t(eps(x_t))``; then plain DDIM; steps below
    t_boost are stochastic (eta = 1, noise from ``seed``). ``t_edit``/``t_boost`` None: the
    paper's rule (:func:`~diffgeo.editing.interval.edit_interval` with ``distance``, computed once
    per model weights and cached: :func:`~diffgeo.editing.interval.default_interval`);
    ``t_boost=0`` turns boosting off. ``strength=0`` with ``t_boost=0`` is exactly
    ``diffgeo.sample(model, noise=x_T, steps=steps)``. Text models: ``prompt`` is required.
    ``callback``: called after each DDIM step with its dict (:func:`~diffgeo.sampling.ddim.ddim_loop`;
    ``eps`` is the edited eps of P_t, ``eps_direction`` the plain one). ``noise_or_x_T=`` is the
    deprecated old name of ``x_T``. ``use_clipped_model_output``: None is the model's default
    (:func:`diffgeo.sample`). A blow-up (``strength=1e30``, a direction function returning NaN) raises
    :class:`~diffgeo.core.checks.NonFiniteError` with its step and t.

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> tr = asyrp(m, x_T, torch.ones(128, 8, 8), strength=0.5, t_edit=500, t_boost=0, steps=4, progress=False)
    >>> tr.result.shape, tr.meta["t_edit"]
    (torch.Size([1, 3, 32, 32]), 500)
    """
    x_T = renamed("asyrp", "noise_or_x_T", "x_T", noise_or_x_T, x_T)
    if x_T is None or direction is None:
        raise TypeError("asyrp() needs x_T (B, *x_shape) and direction")
    strength = check_float(strength, "strength")
    seed = check_seed(seed)
    x_T = model.check_x(x_T, "x_T")
    check_prompt(model, prompt)
    dh = _h_delta(model, direction)
    grid, c, clip, clipped_eps = edit_setup(model, x_T, steps, prompt, negative_prompt, guidance_scale,
                                            use_clipped_model_output)  # checked before the interval is computed
    if t_edit is None or t_boost is None:
        interval = default_interval(model, distance)
        t_edit = interval.t_edit if t_edit is None else t_edit
        if t_boost is None:
            t_boost = interval.t_boost
            if t_boost > t_edit:  # the rule's two thresholds cross on this model: boost below the edit only
                logger.warning("Asyrp's rule gives t_boost=%d above t_edit=%d on %s: boosting starts at t_edit",
                               t_boost, t_edit, model.name)
                t_boost = t_edit
    t_edit = check_grid_t(model, t_edit, "t_edit")
    t_boost = check_boost(model, t_boost, t_edit)
    path = grid + [CLEAN]
    g = make_generator(seed, None) if t_boost > 0 else None
    meta = {"model": model.name, "direction": "asyrp", "strength": strength, "t_edit": t_edit, "t_boost": t_boost,
            "steps": steps, "seed": seed, "use_clipped_model_output": clipped_eps,
            "edit": (direction.meta if isinstance(direction, Direction)
                     else {"source": "learned f_t", "train": direction.train, "step": direction.step}
                     if callable(getattr(direction, "h_delta", None)) else None),
            **(c.meta() if c is not None else {})}
    return ddim_loop(model, x_T, path, asyrp_eps(model, c, dh, strength, t_edit), eta=boosting(t_boost), generator=g,
                     clip=clip, clipped_eps=clipped_eps, steps=steps, callback=callback, progress=progress,
                     desc="Asyrp", meta=meta, hint=edit_hint("strength"))
