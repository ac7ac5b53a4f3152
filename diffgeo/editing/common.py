"""Argument checks and set-up shared by the edit functions (:mod:`~diffgeo.editing.xspace`,
:mod:`~diffgeo.editing.hspace`, :mod:`~diffgeo.editing.interval`).

>>> import diffgeo
>>> check_grid_t(diffgeo.load("shapes"), 500, "t_edit")
500
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch

from diffgeo.core.checks import check_int
from diffgeo.models.conditioning import Cond, resolve_cond
from diffgeo.sampling.ddim import CLEAN, clip_range, ddim_timesteps, resolve_clipped

__all__ = ["check_prompt", "check_grid_t", "check_boost", "boosting", "edit_setup", "edit_hint", "renamed"]


def check_prompt(model: Any, prompt: Any, what: str = "prompt") -> None:
    """Refuse a missing prompt on a text-conditioned model (unconditional models take None).

    >>> import diffgeo
    >>> check_prompt(diffgeo.load("shapes"), None) is None
    True
    """
    if model.is_conditional and prompt is None:
        raise ValueError(f"{model.name} is text-conditioned: pass {what}= explicitly ({what}='' is the empty prompt; "
                         "the reference generates with the empty prompt and takes the Jacobian with the edit prompt)")


def check_grid_t(model: Any, t: Any, what: str) -> int:
    """t as an int timestep of the model's schedule, [0, T-1].

    >>> import diffgeo
    >>> check_grid_t(diffgeo.load("shapes"), 167, "t_boost")
    167
    """
    t = check_int(t, what)
    if not 0 <= t < model.num_train_timesteps:
        raise ValueError(f"{what}={t} is outside the schedule: timesteps are integers in "
                         f"[0, {model.num_train_timesteps - 1}]")
    return t


def check_boost(model: Any, boost: Any, upper: int | None = None) -> int:
    """The boosting timestep (None: 0, off), at most ``upper`` (the edit timestep) when given.

    >>> import diffgeo
    >>> check_boost(diffgeo.load("shapes"), None), check_boost(diffgeo.load("shapes"), 200, 500)
    (0, 200)
    """
    if boost is None:
        return 0
    b = check_grid_t(model, boost, "t_boost")
    if upper is not None and b > upper:
        raise ValueError(f"t_edit={upper} < t_boost={b}: the edit interval [T, t_edit] must lie above the boosting "
                         "interval [t_boost, 0]; give t_edit >= t_boost")
    return b


def boosting(t_boost: int, eta: float = 1.0) -> Callable[[int], float]:
    """The per-step eta of quality boosting, for :func:`~diffgeo.sampling.ddim.ddim_loop`: ``eta``
    on the steps starting below ``t_boost``, 0 above and at the clean end (``t_boost=0``: plain DDIM).

    >>> rule = boosting(300)
    >>> rule(500), rule(200), rule(CLEAN)
    (0.0, 1.0, 0.0)
    """
    return lambda t: eta if (t != CLEAN and t < t_boost) else 0.0


def edit_setup(model: Any, x: torch.Tensor, steps: int, prompt: Any, negative_prompt: Any,
               guidance_scale: float | None,
               use_clipped_model_output: bool | None) -> tuple[list[int], Cond | None, float | None, bool]:
    """What an edit's DDIM run needs for x (B, *x_shape): the ``steps`` grid (descending), the
    resolved conditioning, the x0 clipping and whether eps is recomputed from the clipped x0
    (``use_clipped_model_output``: True/False, or None for the model's default; "no" and the like are refused).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> edit_setup(m, torch.zeros(1, 3, 32, 32), 4, None, None, None, None)
    ([750, 500, 250, 0], None, 1.0, True)
    """
    clipped_eps = resolve_clipped(model, use_clipped_model_output)
    grid = ddim_timesteps(model, steps).tolist()
    c = resolve_cond(model, prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale, cond=None,
                     batch=x.shape[0])
    return grid, c, clip_range(model), clipped_eps


def edit_hint(what: str) -> str:
    """The fix a blow-up of an edit names (:func:`~diffgeo.sampling.ddim.ddim_loop`'s ``hint``).

    >>> edit_hint("strength")
    'lower strength (the edit pushed x_t off the data), or check the direction for NaN/inf values'
    """
    return f"lower {what} (the edit pushed x_t off the data), or check the direction for NaN/inf values"



def renamed(func: str, old: str, new: str, old_value: Any, new_value: Any, default: Any = None) -> Any:
    """The value of a renamed keyword: ``new_value``, or ``old_value`` (deprecated, with a
    DeprecationWarning) when only the old keyword was given; both given is an error.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     renamed("edit_x", "boost", "t_boost", 200, None)
    200
    >>> caught[0].category.__name__
    'DeprecationWarning'
    """
    if old_value is default:
        return new_value
    if new_value is not default:
        raise TypeError(f"{func}() got both {old}= (deprecated) and {new}=: give {new}= only")
    warnings.warn(f"{func}(..., {old}=) is renamed {new}=; {old}= will be removed in the next release",
                  DeprecationWarning, stacklevel=3)
    return old_value
