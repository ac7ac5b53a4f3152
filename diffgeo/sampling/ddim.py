"""DDIM (Song et al., 2021): the schedule, one step, the one loop every sampler, editor and
inverter drives (:func:`ddim_loop`), and sampling / denoising from any (x_t, t).

Notation (paper symbols in brackets): ``a_t`` = alpha-bar at t, ``eps`` the predicted noise,
``P_t(eps) = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)`` the predicted x0,
``D_t(eps) = sqrt(1 - a_prev - sigma_t^2) eps`` the direction term, and one step

    x_prev = sqrt(a_prev) P_t(eps) + D_t(eps) + sigma_t z,                      (1)
    sigma_t = eta sqrt((1 - a_t / a_prev) (1 - a_prev) / (1 - a_t)).            (2)

Timesteps are the scheduler's integers (0 to T-1); the clean end of a trajectory is labelled ``-1``.
The schedule follows the model's scheduler config as diffusers' ``DDIMScheduler`` does: the grid
(``timestep_spacing``, ``steps_offset``), the betas (``rescale_betas_zero_snr`` included), the
prediction type (epsilon, v_prediction, sample: converted to eps by the Model; a grid that reaches
alpha-bar 0, zero-SNR betas with trailing spacing, is refused: x0 cannot be formed from eps there),
and each step's target alpha-bar: from grid timestep t the step goes to
``t - T // steps`` (diffusers' ``prev_timestep``), and below 0 to the clean end, whose alpha-bar is
``final_alpha_cumprod`` (1 with ``set_alpha_to_one``, else ``alphas_cumprod[0]``, as in Stable
Diffusion: :func:`final_abar`). Nothing here switches gradients off: callers choose the grad mode.

The blow-up guard (NaN, inf or ``|x| > BLOWUP``) is evaluated on the device and read by the host
only every :data:`GUARD_EVERY` steps and at the end (no host synchronisation per step); it raises
:class:`~diffgeo.core.checks.NonFiniteError` naming the first bad step and its t.

``use_clipped_model_output=None`` (the default everywhere) means the model's own choice,
``model.clipped_eps`` (from its entry in :mod:`diffgeo.models.zoo`: True for the embedded models,
False for a model diffgeo does not know, diffusers' default): :func:`resolve_clipped`.

Text models take ``prompt=`` (a string or one per sample; None is the empty prompt),
``negative_prompt=`` (default ``""``) and ``guidance_scale=``: eps is the classifier-free-guided
combination when the scale is not 1 and the conditional branch otherwise; ``guidance_scale=None``
means the model's own default (:func:`diffgeo.models.conditioning.default_guidance`: 1.5 for ``shapes-text``,
2 for ``digits``, 1 for a model diffgeo does not know). The prompts are encoded once per call.
``cond=`` takes a precomputed :class:`~diffgeo.models.conditioning.Cond` instead (its own branch and scale
unless ``guidance_scale`` is given). ``Trajectory.meta`` records the conditioning used
(:class:`~diffgeo.sampling.trajectory.Trajectory`; inversion: :mod:`diffgeo.sampling.inversion`).
For latent models the trajectory holds latents: ``model.decode(traj.result)`` gives images.

>>> import diffgeo
>>> model = diffgeo.load("shapes")
>>> traj = diffgeo.sample(model, 2, steps=10, seed=0, progress=False)
>>> traj.xs.shape, traj.timesteps.tolist()[:3], int(traj.timesteps[-1])
(torch.Size([11, 2, 3, 32, 32]), [900, 800, 700], -1)
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch

from diffgeo.core.checks import NonFiniteError, check_bool, check_float, check_int, check_seed_generator
from diffgeo.core.progress import progress_bar
from diffgeo.models.conditioning import Cond, resolve_cond
from diffgeo.models.model import CondLike, Model, PromptLike
from diffgeo.sampling.schedule import (
    CLEAN,
    abar,
    clip_range,
    ddim_timesteps,
    final_abar,
    prev_timesteps,
    resolve_clipped,
    step_abars,
)
from diffgeo.sampling.trajectory import Trajectory

__all__ = ["Trajectory", "ddim_timesteps", "ddim_step", "ddim_loop", "model_eps", "abar", "final_abar", "clip_range",
           "resolve_clipped", "prev_timesteps", "step_abars", "make_generator", "sample", "denoise", "CLEAN", "BLOWUP",
           "GUARD_EVERY", "Callback", "EpsPair", "StepFn"]

logger = logging.getLogger(__name__)
#: A DDIM state beyond this magnitude is a blow-up (states of unit-variance models stay within ~10):
#: reported with its step and t (:class:`~diffgeo.core.checks.NonFiniteError`) instead of running on.
BLOWUP = 1e6
#: The host reads the device-side blow-up flag every this many steps (and after the last): a
#: blow-up costs at most this many wasted steps, and the loop never waits on the device per step.
GUARD_EVERY = 10
Callback = Callable[[dict[str, Any]], None]
#: ``(x_t, t) -> (eps for P_t, eps for D_t)``: the noise predictions of one step (t a path label,
#: ``CLEAN`` included). Plain DDIM returns one eps twice (:func:`model_eps`); Asyrp returns the eps
#: of the edited h and the plain one.
EpsPair = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
#: ``(i, x, t, t_next) -> (x_next, x0_pred, eps, extra)``: a step that is a solve rather than a forward
#: DDIM update (fixed-point inversion); ``extra`` goes into the callback's dict.
StepFn = Callable[[int, torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]]


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, a_t: float, a_prev: float, *, eta: float = 0.0,
              noise: torch.Tensor | None = None, clip: float | None = None,
              use_clipped_model_output: bool = False,
              eps_direction: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update, equations (1)-(2): returns (x_prev, x0_pred).

    Works in both directions: with a_prev < a_t it is the inversion step (eta must be 0).
    ``clip``: clamp the predicted x0 to [-clip, clip] (diffusers' ``clip_sample``). The direction
    term keeps the model's eps, as diffusers does by default, unless ``use_clipped_model_output``:
    then eps is recomputed from the clipped x0 (diffusers' keyword of the same name).
    ``eps_direction``: a separate eps for the direction term D_t (Asyrp's asymmetric step:
    ``P_t`` from ``eps`` of the edited h, ``D_t`` from the original eps); None uses ``eps``.
    With ``use_clipped_model_output`` it is recomputed from its own clipped x0, so that
    ``eps_direction=eps`` is exactly the plain step.

    >>> x, e = torch.ones(1, 2), torch.zeros(1, 2)
    >>> ddim_step(x, e, 0.25, 1.0)[0].tolist()   # eps 0: x0 = x / sqrt(a_t)
    [[2.0, 2.0]]
    >>> shifted = ddim_step(x, e, 0.25, 0.5, eps_direction=torch.ones(1, 2))[0]   # D_t alone sees the other eps
    >>> torch.allclose(shifted, ddim_step(x, e, 0.25, 0.5)[0] + 0.5 ** 0.5)
    True
    """
    def predict(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = (x_t - (1 - a_t) ** 0.5 * e) / a_t**0.5
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
            if use_clipped_model_output:
                e = (x_t - a_t**0.5 * x0) / (1 - a_t) ** 0.5
        return x0, e

    x0, eps = predict(eps)
    if eps_direction is not None:
        eps = predict(eps_direction)[1]
    sigma = 0.0
    if eta > 0:
        sigma = eta * ((1 - a_t / a_prev) * (1 - a_prev) / (1 - a_t)) ** 0.5
    x_prev = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0:
        if noise is None:
            raise ValueError("eta > 0 needs noise")
        x_prev = x_prev + sigma * noise
    return x_prev, x0


def make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The CPU generator of a run: ``generator`` when given, else one seeded with ``seed`` (None: a fresh seed).

    >>> make_generator(3, None).initial_seed(), make_generator(None, torch.Generator().manual_seed(5)).initial_seed()
    (3, 5)
    """
    if generator is not None:
        return generator
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


def _check_model(model: Any) -> None:
    if not isinstance(model, Model):
        raise TypeError(f"model must be a diffgeo Model (diffgeo.load(name)), got {type(model).__name__}")


def model_eps(model: Model, cond: Cond | None = None) -> EpsPair:
    """The plain :data:`EpsPair`: the model's eps (B, *x_shape) at (x_t, t), twice (the clean end is
    evaluated at t = 0).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> e_x0, e_dir = model_eps(m)(torch.zeros(1, 3, 32, 32), 500)
    >>> e_x0 is e_dir, tuple(e_x0.shape)
    (True, (1, 3, 32, 32))
    """
    def pair(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        eps = model.eps_fn(x, model.timesteps_tensor(0 if t == CLEAN else t, x.shape[0]), cond)
        return eps, eps

    return pair


def _blowup(model: Model, desc: str, path: list[int], i: int, meta: dict, hint: str) -> NonFiniteError:
    t, t_next = path[i], path[i + 1]
    fix = hint or (f"lower guidance_scale/eta (eta={meta.get('eta')}, guidance_scale={meta.get('guidance_scale')}) "
                   "or check the model's weights")
    return NonFiniteError(f"{desc} blew up at step {i} (t={t} -> {t_next}): x_t became NaN, infinite or larger than "
                          f"{BLOWUP:g} in magnitude (model {model.name}); {fix}")


def ddim_loop(model: Model, x: torch.Tensor, path: list[int], eps_pair: EpsPair | None = None, *,
              eta: float | Callable[[int], float] = 0.0, generator: torch.Generator | None = None,
              clip: float | None = None, clipped_eps: bool = False, step: StepFn | None = None,
              steps: int | None = None, callback: Callback | None = None, progress: bool | None = None,
              desc: str = "DDIM", meta: dict | None = None, hint: str = "") -> Trajectory:
    """The one DDIM loop: walk x (B, *x_shape) along ``path`` (S+1 timestep labels) into a Trajectory.

    Sampling, denoising, both inversions, x-space edits and Asyrp all run through here. Step i
    (t = path[i] -> t_next = path[i + 1]) asks ``eps_pair(x, t)`` for the eps of the x0 prediction
    P_t and the eps of the direction term D_t, draws z (B, *x_shape) from ``generator`` when the
    step's eta (``eta``, or ``eta(t)`` for a per-step rule) is > 0, and takes :func:`ddim_step`
    with ``clip`` / ``clipped_eps``. ``steps``: the grid the path lies on; a step from a grid
    timestep then goes to diffusers' alpha-bar (:func:`prev_timesteps`; an ascending step, an
    inversion, undoes that), otherwise (None, or t off the grid) to ``abar(t_next)``.
    ``step`` (instead of ``eps_pair``) replaces the update by a solve (fixed-point inversion).
    Every step is checked for a blow-up (NaN, inf or ``|x| > BLOWUP``) on the device; the host reads
    the flag every :data:`GUARD_EVERY` steps and at the end and raises
    :class:`~diffgeo.core.checks.NonFiniteError` with the first bad step and its t (``hint``: the fix to
    name, default: lower guidance/eta). ``callback`` gets each step as a dict (i, t, t_next, x_t, eps,
    eps_direction, eta, x0_pred, x_next, and ``step``'s extras).
    Returns xs (S+1, B, *x_shape), x0_preds (S, B, *x_shape) and ``meta``.

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> tr = ddim_loop(m, x_T, [750, 500, 250, 0, CLEAN], model_eps(m), clip=clip_range(m), clipped_eps=True,
    ...                steps=4, progress=False)
    >>> tr.xs.shape, torch.equal(tr.result, sample(m, noise=x_T, steps=4, progress=False).result)
    (torch.Size([5, 1, 3, 32, 32]), True)
    """
    if (eps_pair is None) == (step is None):
        raise TypeError("ddim_loop takes exactly one of eps_pair (the eps of each step) and step (a solve per step)")
    meta = {} if meta is None else meta
    prev = prev_timesteps(model, steps) if steps is not None else {}
    n = len(path) - 1
    abars = [step_abars(model, path[i], path[i + 1], prev) for i in range(n)]
    if step is None:
        for (a_from, a_to), t in zip(abars, path):
            if min(a_from, a_to) <= 0:
                raise ValueError(f"{desc}: alpha-bar is 0 at t={t} ({model.name}'s scheduler has "
                                 "rescale_betas_zero_snr and the grid reaches T-1): diffgeo's loop works on eps and "
                                 "cannot form x0 there; use timestep_spacing='leading' (or a grid that stops below "
                                 "T-1)")
    xs, x0s = [x], []
    oks: list[torch.Tensor] = []  # per step, on the device: x_next finite and within BLOWUP
    checked = 0
    for i in progress_bar(range(n), desc=desc, progress=progress, leave=False):
        t, t_next = path[i], path[i + 1]
        extra: dict = {}
        step_eta = 0.0
        if step is not None:
            x_next, x0, eps, extra = step(i, x, t, t_next)
            eps_dir = eps
        else:
            eps, eps_dir = eps_pair(x, t)
            step_eta = float(eta(t)) if callable(eta) else float(eta)
            z = None
            if step_eta > 0:
                if generator is None:
                    raise ValueError(f"{desc}: eta={step_eta:g} at t={t} needs a generator for its noise")
                z = torch.randn(x.shape, generator=generator).to(x.dtype)  # drawn in float32 whatever the dtype
                # pinned + non_blocking: the host does not wait for the device's queue to copy the noise
                z = z.pin_memory().to(x.device, non_blocking=True) if x.device.type == "cuda" else z.to(x.device)
            a_from, a_to = abars[i]
            x_next, x0 = ddim_step(x, eps, a_from, a_to, eta=step_eta, noise=z, clip=clip,
                                   use_clipped_model_output=clipped_eps,
                                   eps_direction=None if eps_dir is eps else eps_dir)
        oks.append(x_next.abs().amax() <= BLOWUP)  # NaN compares False; stays on the device
        if (i + 1) % GUARD_EVERY == 0 or i + 1 == n:
            flags = torch.stack(oks[checked:]).cpu()
            if not bool(flags.all()):
                raise _blowup(model, desc, path, checked + int((~flags).nonzero()[0]), meta, hint)
            checked = i + 1
        if callback is not None:
            callback({"i": i, "t": t, "t_next": t_next, "x_t": x, "eps": eps, "eps_direction": eps_dir,
                      "eta": step_eta, "x0_pred": x0, "x_next": x_next, **extra})
        xs.append(x_next)
        x0s.append(x0)
        x = x_next
    return Trajectory(torch.tensor(path, dtype=torch.long), torch.stack(xs), torch.stack(x0s), meta)


def denoise(model: Model, x_t: torch.Tensor, t: int, *, steps: int = 50, eta: float = 0.0, seed: int | None = None,
            generator: torch.Generator | None = None, prompt: PromptLike | None = None,
            negative_prompt: PromptLike | None = None, guidance_scale: float | None = None, cond: CondLike = None,
            use_clipped_model_output: bool | None = None, callback: Callback | None = None,
            progress: bool | None = None) -> Trajectory:
    """Continue DDIM from (x_t, t) to the clean end on the ``steps``-step grid.

    The path is ``[t]`` followed by the grid points below t, then ``-1``. Used to finish a
    trajectory after an edit at one timestep.
    x_t: (B, *x_shape); returns a Trajectory with ``xs[0] = x_t``. Prompt keywords: see the
    module docstring. ``use_clipped_model_output``: see :func:`sample` (None: the model's default).

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> traj = sample(model, 1, steps=10, seed=0, progress=False)
    >>> again = denoise(model, traj.xs[5], int(traj.timesteps[5]), steps=10, progress=False)
    >>> again.timesteps.tolist() == traj.timesteps[5:].tolist(), torch.allclose(again.result, traj.result, atol=1e-5)
    (True, True)
    """
    _check_model(model)
    x_t = model.check_x(x_t)
    model.check_t(t)
    if torch.as_tensor(t).dim() != 0:
        raise ValueError(f"t must be one timestep (an integer) for the whole batch, got shape "
                         f"{tuple(torch.as_tensor(t).shape)}")
    eta = check_float(eta, "eta", min=0)
    steps = check_int(steps, "steps", min=1)
    seed, generator = check_seed_generator(seed, generator)
    clipped_eps = resolve_clipped(model, use_clipped_model_output)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function of one dict (or None), got {type(callback).__name__}")
    t = int(t)
    grid = ddim_timesteps(model, steps).tolist()
    path = [t] + [s for s in grid if s < t] + [CLEAN]
    g = make_generator(seed, generator) if eta > 0 else None
    c = resolve_cond(model, prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale, cond=cond,
                     batch=x_t.shape[0])
    clip = clip_range(model)
    if seed is None and generator is None and g is not None:
        seed = g.initial_seed()  # the drawn seed, so the run can be repeated
    meta = {"model": model.name, "direction": "denoise", "eta": eta, "steps": steps, "seed": seed,
            "use_clipped_model_output": clipped_eps, **(c.meta() if c is not None else {})}
    return ddim_loop(model, x_t, path, model_eps(model, c), eta=eta, generator=g, clip=clip, clipped_eps=clipped_eps,
                     steps=steps, callback=callback, progress=progress, desc="DDIM", meta=meta)


def sample(model: Model, n: int | None = None, *, noise: torch.Tensor | None = None, steps: int = 50,
           eta: float = 0.0, seed: int | None = None, generator: torch.Generator | None = None,
           prompt: PromptLike | None = None, negative_prompt: PromptLike | None = None,
           guidance_scale: float | None = None,
           cond: CondLike = None, use_clipped_model_output: bool | None = None, callback: Callback | None = None,
           progress: bool | None = None) -> Trajectory:
    """Draw samples with DDIM: from ``noise`` (a given x_T, (B, *x_shape)) or n draws from ``seed``.

    Noise is drawn on the CPU from the seed, so a seed gives the same x_T on every device.
    Returns the Trajectory from x_T (at the first grid timestep) to the clean end. Text models:
    ``prompt`` (str or one per sample), ``negative_prompt``, ``guidance_scale`` (cfg when != 1),
    e.g. ``sample(model, noise=x_T, prompt=["a red circle"], guidance_scale=4.0, steps=50)``.

    Models whose scheduler clips x0 (``clip_sample``, as the embedded ones): ``use_clipped_model_output=True``
    recomputes eps from the clipped x0 for the direction term (diffusers' ``DDIMScheduler.step``
    keyword), False keeps the raw eps (diffusers' default); None (the default) is the model's own
    choice, ``model.clipped_eps`` from :mod:`diffgeo.models.zoo` (True for the embedded models, so
    that :func:`~diffgeo.sampling.inversion.invert` then ``sample`` round-trips; docs/models.md gives the measurements).

    >>> import diffgeo
    >>> model = diffgeo.load("digits")
    >>> traj = sample(model, noise=torch.randn(2, 1, 16, 16), prompt=["a 3", "a 7"], steps=4, progress=False)
    >>> traj.result.shape, traj.meta["branch"], traj.meta["guidance_scale"]   # the model's default guidance
    (torch.Size([2, 1, 16, 16]), 'cfg', 2.0)
    """
    _check_model(model)
    if (n is None) == (noise is None):
        raise ValueError("give exactly one of n (number of samples) and noise (a given x_T)")
    seed, generator = check_seed_generator(seed, generator)
    eta = check_float(eta, "eta", min=0)
    if use_clipped_model_output is not None:
        use_clipped_model_output = check_bool(use_clipped_model_output, "use_clipped_model_output")
    if noise is None:
        n = check_int(n, "n", min=1)
    else:
        noise = model.check_x(noise, "noise")
    g = make_generator(seed, generator)
    if seed is None and generator is None and (noise is None or eta > 0):
        seed = g.initial_seed()  # the drawn seed, recorded so the run can be repeated
    if noise is None:
        noise = torch.randn((n, *model.x_shape), generator=g).to(device=model.device, dtype=model.dtype)
    t_start = int(ddim_timesteps(model, steps)[0])
    traj = denoise(model, noise, t_start, steps=steps, eta=eta, generator=g, prompt=prompt,
                   negative_prompt=negative_prompt, guidance_scale=guidance_scale, cond=cond,
                   use_clipped_model_output=use_clipped_model_output, callback=callback, progress=progress)
    return Trajectory(traj.timesteps, traj.xs, traj.x0_preds, {**traj.meta, "direction": "sample", "seed": seed})
