"""The DDIM schedule of a model as diffusers' ``DDIMScheduler`` takes it from the scheduler config:
the grid (:func:`ddim_timesteps`: ``timestep_spacing``, ``steps_offset``), alpha-bar at a timestep
(:func:`abar`; betas with ``rescale_betas_zero_snr`` as the scheduler computes them), the clean end's
alpha-bar (:func:`final_abar`: ``set_alpha_to_one``), where each step goes (:func:`prev_timesteps`,
:func:`step_abars`), the x0 clipping (:func:`clip_range`) and which eps the clipped step uses
(:func:`resolve_clipped`). The loop that uses them is :func:`diffgeo.sampling.ddim.ddim_loop`.

>>> import diffgeo
>>> m = diffgeo.load("shapes")
>>> ddim_timesteps(m, 4).tolist(), prev_timesteps(m, 4)[0], final_abar(m)
([750, 500, 250, 0], -1, 1.0)
"""

from __future__ import annotations

import torch

from diffgeo.core.checks import check_bool, check_int
from diffgeo.models.model import Model

__all__ = ["CLEAN", "ddim_timesteps", "abar", "final_abar", "prev_timesteps", "step_abars", "clip_range",
           "resolve_clipped"]

CLEAN = -1  # label of the clean end (alpha-bar: final_abar, 1 unless set_alpha_to_one is false)


def ddim_timesteps(model: Model, steps: int) -> torch.Tensor:
    """The S-step DDIM grid (S,), descending, as diffusers' ``DDIMScheduler.set_timesteps`` makes it.

    Computed on a fresh scheduler of the model's configuration: ``model.scheduler`` is left as it was.

    >>> import diffgeo
    >>> ddim_timesteps(diffgeo.load("shapes"), 4).tolist()
    [750, 500, 250, 0]
    """
    steps = check_int(steps, "steps", min=1)
    if steps > model.num_train_timesteps:
        raise ValueError(f"steps={steps} exceeds the {model.num_train_timesteps} training timesteps")
    sched = type(model.scheduler).from_config(model.scheduler.config)
    sched.set_timesteps(steps)
    return sched.timesteps.clone().long().cpu()


def final_abar(model: Model) -> float:
    """Alpha-bar of the clean end ``CLEAN``: diffusers' ``final_alpha_cumprod``, 1 with the scheduler's
    ``set_alpha_to_one`` (its default, and the embedded models'), else ``alphas_cumprod[0]`` (Stable Diffusion).

    >>> import diffgeo
    >>> final_abar(diffgeo.load("shapes"))
    1.0
    """
    if model.scheduler.config.get("set_alpha_to_one", True):
        return 1.0
    return float(model.alphas_cumprod[0])


def abar(model: Model, t: int) -> float:
    """Alpha-bar at timestep t (a float; :func:`final_abar` at the clean end ``CLEAN``).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> abar(m, CLEAN), round(abar(m, 0), 4)
    (1.0, 0.9999)
    """
    return final_abar(model) if t == CLEAN else float(model.alphas_cumprod[t])


def prev_timesteps(model: Model, steps: int) -> dict[int, int]:
    """For each timestep t of the ``steps`` grid, the timestep whose alpha-bar the DDIM step from t
    goes to, as diffusers' ``DDIMScheduler.step`` takes it: ``t - T // steps``, or ``CLEAN`` below 0.

    With ``"leading"`` spacing (and ``"trailing"`` when steps divides T) that is the next grid
    timestep; ``"linspace"`` and other trailing grids step to a level between grid points, as diffusers does.

    >>> import diffgeo
    >>> prev_timesteps(diffgeo.load("shapes"), 4)
    {750: 500, 500: 250, 250: 0, 0: -1}
    """
    stride = model.num_train_timesteps // check_int(steps, "steps", min=1)
    return {t: (t - stride if t - stride >= 0 else CLEAN) for t in ddim_timesteps(model, steps).tolist()}


def step_abars(model: Model, t: int, t_next: int, prev: dict[int, int] | None = None) -> tuple[float, float]:
    """(alpha-bar of the state at t, alpha-bar of the state at t_next) for one step of a path.

    A sampling step (t_next below t, or the clean end) from a grid timestep goes to diffusers'
    ``prev[t]`` (:func:`prev_timesteps`); an inversion step (t_next above t) undoes the sampling step
    from t_next, so its start is at ``prev[t_next]``. Off the grid (or ``prev`` None) the labels' own alpha-bars.

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> [round(a, 4) for a in step_abars(m, 0, CLEAN)], step_abars(m, CLEAN, 0) == step_abars(m, 0, CLEAN)[::-1]
    ([0.9999, 1.0], True)
    """
    prev = prev or {}
    if t_next == CLEAN or (t != CLEAN and t_next < t):
        return abar(model, t), abar(model, prev.get(t, t_next))
    return abar(model, prev.get(t_next, t)), abar(model, t_next)


def resolve_clipped(model: Model, use_clipped_model_output: bool | None) -> bool:
    """Whether a step recomputes eps from the clipped x0: ``use_clipped_model_output`` (True/False), or,
    for None, the model's own default ``model.clipped_eps`` (:mod:`diffgeo.models.zoo`); always False
    when the scheduler does not clip x0. "no", 0 and the like are refused.

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> resolve_clipped(m, None), resolve_clipped(m, False)
    (True, False)
    """
    if use_clipped_model_output is None:
        value = bool(getattr(model, "clipped_eps", False))
    else:
        value = check_bool(use_clipped_model_output, "use_clipped_model_output")
    return value and clip_range(model) is not None


def clip_range(model: Model) -> float | None:
    """The scheduler's x0 clipping for sampling (``clip_sample``/``clip_sample_range``), or None.

    >>> import diffgeo
    >>> clip_range(diffgeo.load("shapes"))
    1.0
    """
    cfg = model.scheduler.config
    return float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample", False) else None
