"""DDIM sampling, inversion and denoising from any (x_t, t) (Song et al., 2021).

Notation (paper symbols in brackets): ``a_t`` = alpha-bar at t, ``eps`` the predicted noise,
``P_t(eps) = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)`` the predicted x0,
``D_t(eps) = sqrt(1 - a_prev - sigma_t^2) eps`` the direction term, and one step

    x_prev = sqrt(a_prev) P_t(eps) + D_t(eps) + sigma_t z,                      (1)
    sigma_t = eta sqrt((1 - a_t / a_prev) (1 - a_prev) / (1 - a_t)).            (2)

Timesteps are the scheduler's integers (0 to T-1); the clean end of a trajectory, alpha-bar 1,
is labelled ``-1``. Nothing here switches gradients off: callers choose the grad mode.

Text models take ``prompt=`` (a string or one per sample; None is the empty prompt),
``negative_prompt=`` (default ``""``) and ``guidance_scale=``: eps is the classifier-free-guided
combination when the scale is not 1 and the conditional branch otherwise; ``guidance_scale=None``
means the model's own default (:func:`diffgeo.models.conditioning.default_guidance`: 1.5 for ``shapes-text``,
2 for ``digits``, 1 for a model diffgeo does not know). The prompts are encoded once per call.
``cond=`` takes a precomputed :class:`~diffgeo.models.conditioning.Cond` instead (its own branch and scale
unless ``guidance_scale`` is given). ``Trajectory.meta`` records the conditioning used.
For latent models the trajectory holds latents: ``model.decode(traj.result)`` gives images.

>>> import diffgeo
>>> model = diffgeo.load("shapes")
>>> traj = diffgeo.sample(model, 2, steps=10, seed=0, progress=False)
>>> traj.xs.shape, traj.timesteps.tolist()[:3], int(traj.timesteps[-1])
(torch.Size([11, 2, 3, 32, 32]), [900, 800, 700], -1)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from diffgeo.core.checks import NonFiniteError, check_bool, check_choice, check_float, check_int, check_seed_generator
from diffgeo.core.io import load_tensors_json, save_tensors_json
from diffgeo.models.conditioning import Cond, resolve_cond
from diffgeo.models.model import CondLike, Model, PromptLike

__all__ = ["Trajectory", "ddim_timesteps", "ddim_step", "sample", "denoise", "invert", "CLEAN"]

logger = logging.getLogger(__name__)
CLEAN = -1  # label of the clean end (alpha-bar = 1)
#: A DDIM state beyond this magnitude is a blow-up (states of unit-variance models stay within ~10):
#: reported with its step and t (:class:`~diffgeo.core.checks.NonFiniteError`) instead of running on.
BLOWUP = 1e6
Callback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Trajectory:
    """A DDIM path. S steps, B samples.

    timesteps: (S+1,) int64, the timestep of each state (``-1`` = clean end);
    xs: (S+1, B, *x_shape), ``xs[0]`` the start and ``xs[-1]`` the result;
    x0_preds: (S, B, *x_shape), the x0 predicted at each step;
    meta: how it was made (model, eta, seed, direction).
    """

    timesteps: torch.Tensor
    xs: torch.Tensor
    x0_preds: torch.Tensor
    meta: dict = field(default_factory=dict)

    @property
    def result(self) -> torch.Tensor:
        """The final state, (B, *x_shape)."""
        return self.xs[-1]

    def save(self, path: str | Path) -> Path:
        """Save as one safetensors file with the metadata inside (atomic)."""
        return save_tensors_json(path, {"timesteps": self.timesteps, "xs": self.xs, "x0_preds": self.x0_preds},
                                 {"kind": "Trajectory", **self.meta})

    @classmethod
    def load(cls, path: str | Path) -> "Trajectory":
        tensors, meta = load_tensors_json(path, kind="Trajectory")
        return cls(tensors["timesteps"], tensors["xs"], tensors["x0_preds"], meta)


def ddim_timesteps(model: Model, steps: int) -> torch.Tensor:
    """The S-step DDIM grid, descending, as diffusers' ``DDIMScheduler.set_timesteps`` makes it.

    >>> import diffgeo
    >>> ddim_timesteps(diffgeo.load("shapes"), 4).tolist()
    [750, 500, 250, 0]
    """
    steps = check_int(steps, "steps", min=1)
    if steps > model.num_train_timesteps:
        raise ValueError(f"steps={steps} exceeds the {model.num_train_timesteps} training timesteps")
    sched = model.scheduler
    sched.set_timesteps(steps)
    return sched.timesteps.clone().long().cpu()


def _abar(model: Model, t: int) -> float:
    return 1.0 if t == CLEAN else float(model.alphas_cumprod[t])


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


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
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


def _clip_range(model: Model) -> float | None:
    """The scheduler's x0 clipping for sampling (``clip_sample``/``clip_sample_range``), or None."""
    cfg = model.scheduler.config
    return float(cfg.get("clip_sample_range", 1.0)) if cfg.get("clip_sample", False) else None


def _run(model: Model, x: torch.Tensor, path: list[int], *, eta: float, g: torch.Generator | None, clip: float | None,
         clipped_eps: bool, cond: Cond | None, callback: Callback | None, progress: bool, desc: str,
         meta: dict) -> Trajectory:
    xs, x0s = [x], []
    for i in tqdm(range(len(path) - 1), desc=desc, disable=not progress, leave=False):
        t, t_next = path[i], path[i + 1]
        t_eval = 0 if t == CLEAN else t  # the clean end has no timestep: use the first one
        eps = model.eps_fn(x, model.timesteps_tensor(t_eval, x.shape[0]), cond)
        z = torch.randn(x.shape, generator=g).to(device=x.device, dtype=x.dtype) if eta > 0 else None
        x_next, x0 = ddim_step(x, eps, _abar(model, t), _abar(model, t_next), eta=eta, noise=z, clip=clip,
                                use_clipped_model_output=clipped_eps)
        if not bool(x_next.abs().max() <= BLOWUP):  # NaN compares False
            raise NonFiniteError(f"{desc} blew up at step {i} (t={t} -> {t_next}): x_t became NaN, infinite or "
                                 f"larger than {BLOWUP:g} in magnitude "
                                 f"(eta={meta.get('eta')}, guidance_scale={meta.get('guidance_scale')}, model "
                                 f"{model.name}); lower guidance_scale/eta or check the model's weights")
        if callback is not None:
            callback({"i": i, "t": t, "t_next": t_next, "x_t": x, "eps": eps, "x0_pred": x0, "x_next": x_next})
        xs.append(x_next)
        x0s.append(x0)
        x = x_next
    return Trajectory(torch.tensor(path, dtype=torch.long), torch.stack(xs), torch.stack(x0s), meta)


def denoise(model: Model, x_t: torch.Tensor, t: int, *, steps: int = 50, eta: float = 0.0, seed: int | None = None,
            generator: torch.Generator | None = None, prompt: PromptLike | None = None,
            negative_prompt: PromptLike | None = None, guidance_scale: float | None = None, cond: CondLike = None,
            use_clipped_model_output: bool = False, callback: Callback | None = None,
            progress: bool = True) -> Trajectory:
    """Continue DDIM from (x_t, t) to the clean end on the ``steps``-step grid.

    The path is ``[t]`` followed by the grid points below t, then ``-1``. Used to finish a
    trajectory after an edit at one timestep.
    x_t: (B, *x_shape); returns a Trajectory with ``xs[0] = x_t``. Prompt keywords: see the
    module docstring. ``use_clipped_model_output``: see :func:`sample`.

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
    use_clipped_model_output = check_bool(use_clipped_model_output, "use_clipped_model_output")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be a function of one dict (or None), got {type(callback).__name__}")
    t = int(t)
    grid = ddim_timesteps(model, steps).tolist()
    path = [t] + [s for s in grid if s < t] + [CLEAN]
    g = _generator(seed, generator) if eta > 0 else None
    c = resolve_cond(model, prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale, cond=cond,
                     batch=x_t.shape[0])
    clip = _clip_range(model)
    clipped_eps = bool(use_clipped_model_output) and clip is not None
    if seed is None and generator is None and g is not None:
        seed = g.initial_seed()  # the drawn seed, so the run can be repeated
    meta = {"model": model.name, "direction": "denoise", "eta": eta, "steps": steps, "seed": seed,
            "use_clipped_model_output": clipped_eps, **(c.meta() if c is not None else {})}
    return _run(model, x_t, path, eta=eta, g=g, clip=clip, clipped_eps=clipped_eps, cond=c, callback=callback,
                progress=progress, desc="DDIM", meta=meta)


def sample(model: Model, n: int | None = None, *, noise: torch.Tensor | None = None, steps: int = 50,
           eta: float = 0.0, seed: int | None = None, generator: torch.Generator | None = None,
           prompt: PromptLike | None = None, negative_prompt: PromptLike | None = None,
           guidance_scale: float | None = None,
           cond: CondLike = None, use_clipped_model_output: bool = False, callback: Callback | None = None,
           progress: bool = True) -> Trajectory:
    """Draw samples with DDIM: from ``noise`` (a given x_T, (B, *x_shape)) or n draws from ``seed``.

    Noise is drawn on the CPU from the seed, so a seed gives the same x_T on every device.
    Returns the Trajectory from x_T (at the first grid timestep) to the clean end. Text models:
    ``prompt`` (str or one per sample), ``negative_prompt``, ``guidance_scale`` (cfg when != 1),
    e.g. ``sample(model, noise=x_T, prompt=["a red circle"], guidance_scale=4.0, steps=50)``.

    Models whose scheduler clips x0 (``clip_sample``, as the embedded ones) keep the raw eps in
    the DDIM direction term, as diffusers does by default; ``use_clipped_model_output=True``
    recomputes eps from the clipped x0 (diffusers' ``DDIMScheduler.step`` keyword); which one
    suits which model is measured in the README (``python -m diffgeo alignment digits``).

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
    use_clipped_model_output = check_bool(use_clipped_model_output, "use_clipped_model_output")
    if noise is None:
        n = check_int(n, "n", min=1)
    else:
        noise = model.check_x(noise, "noise")
    g = _generator(seed, generator)
    if seed is None and generator is None and (noise is None or eta > 0):
        seed = g.initial_seed()  # the drawn seed, recorded so the run can be repeated
    if noise is None:
        noise = torch.randn((n, *model.x_shape), generator=g).to(device=model.device, dtype=model.dtype)
    t_start = int(ddim_timesteps(model, steps)[0])
    traj = denoise(model, noise, t_start, steps=steps, eta=eta, generator=g, prompt=prompt,
                   negative_prompt=negative_prompt, guidance_scale=guidance_scale, cond=cond,
                   use_clipped_model_output=use_clipped_model_output, callback=callback, progress=progress)
    return Trajectory(traj.timesteps, traj.xs, traj.x0_preds, {**traj.meta, "direction": "sample", "seed": seed})


INVERSION_METHODS = ("fixed_point", "ddim")
#: Residual stop of fixed-point inversion: RMS over one sample of (forward step of x_t) - x_{t-1}.
#: A residual left at a high-noise step is amplified by everything sampling does below it: on the
#: v-prediction ``shapes`` (32 own samples, seed 31, 50 steps) a 1e-4 residual at t ~ 850 grew to a
#: round-trip RMSE of 0.15, and 6 of 32 samples missed 0.02 (found by restarting the sampler from each
#: inverted x_t: the error entered between t = 380 and 880, not at the low-t steps that stall).
#: 1e-5 gives max 0.0075 (0 of 32 over 0.02) for 1.4x the U-Net calls; 1e-6 max 0.0013 for 1.8x.
#: The 9,050-step ``shapes`` is more sensitive still: at 1e-5 own sample 3 of seed 31 came back at
#: 0.22 RMSE (restarting from its inverted x_t at t = 580 already gave 0.08); at 1e-6, 0.0018.
INVERSION_TOL = 1e-6
INVERSION_MAX_ITER = 50
#: Stall stop of fixed-point inversion: a sample whose RMS residual fell by less than
#: ``INVERSION_STALL_GAIN`` (relative) over its last ``INVERSION_STALL_WINDOW`` U-Net calls stops
#: early (it is reported as unconverged, ``stalled``): more calls would not reach tol. Measured on
#: 8 of ``shapes``' own samples, 50 steps: 5 stall at t=20 on a residual floor (up to 1.4e-3) that
#: 50 calls do not lower either; the stop saves 11% of the U-Net calls, round trips are identical.
INVERSION_STALL_WINDOW = 8
INVERSION_STALL_GAIN = 0.01


def _pick(value: Any, idx: torch.Tensor, batch: int) -> Any:
    """Rows ``idx`` of every batch-B tensor in a (nested) conditioning structure; batch-1 tensors stay."""
    if isinstance(value, torch.Tensor):
        return value[idx] if value.dim() > 0 and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {k: _pick(v, idx, batch) for k, v in value.items()}
    return value


def _subset_cond(c: Cond | None, idx: torch.Tensor, batch: int) -> Cond | None:
    if c is None:
        return None
    return replace(c, cond=_pick(c.cond, idx, batch), uncond=_pick(c.uncond, idx, batch),
                   cond_kwargs=_pick(dict(c.cond_kwargs), idx, batch),
                   uncond_kwargs=_pick(dict(c.uncond_kwargs), idx, batch))


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).pow(2).mean(1).sqrt()


def _invert_step(model: Model, x_prev: torch.Tensor, eps_guess: torch.Tensor, t: int, a_t: float, a_prev: float, *,
                 clip: float | None, clipped_eps: bool, cond: Cond | None, tol: float, max_iter: int,
                 history: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                            torch.Tensor]:
    """Solve ``ddim_step(x_t, eps(x_t, t), a_t, a_prev, clip=...)[0] == x_prev`` for x_t, per sample.

    Start from the plain DDIM inversion step with ``eps_guess``. The residual ``r = x_prev - F(x_t)``
    (F the sampler's forward step) is preconditioned element-wise by the inverse of F's slope:
    ``g = sqrt(a_t / a_prev)`` where x0 is not clipped (at fixed eps; ``x_t + g r`` is then the
    usual fixed-point map ``sqrt(a_t) P(x_{t-1}; eps(x_t)) + sqrt(1 - a_t) eps(x_t)``) and
    ``sqrt((1 - a_t) / (1 - a_prev))`` where it is clipped (x_t acts there only through eps, which
    moves about as ``x_t / sqrt(1 - a_t)``). The map ``x -> x + g r`` is accelerated by Anderson
    mixing over the last ``history`` iterates (AIDI, Pan et al. 2023), safeguarded: a trial that
    does not lower the sample's RMS residual is rejected, its history cleared and its step halved,
    so the residual never grows. A sample stops once its RMS residual is <= tol, or when it stalls
    (less than ``INVERSION_STALL_GAIN`` relative progress over ``INVERSION_STALL_WINDOW`` calls).
    Only the samples still running are passed to the U-Net: a converged sample costs nothing more.
    Returns (x_t, eps(x_t), x0_pred, U-Net calls (B,), residual (B,), stalled (B,) bool).
    """
    b = x_prev.shape[0]
    x_try, _ = ddim_step(x_prev, eps_guess, a_prev, a_t)
    x_cur, f_cur = x_try.clone(), torch.zeros_like(x_prev)
    eps, x0 = torch.empty_like(x_prev), torch.empty_like(x_prev)
    calls = torch.zeros(b, dtype=torch.long)
    resid = torch.full((b,), float("inf"), dtype=torch.float64)
    damp = torch.ones(b, dtype=x_prev.dtype, device=x_prev.device)
    hist_x: list[list[torch.Tensor]] = [[] for _ in range(b)]  # accepted iterates and their g r, per sample
    hist_f: list[list[torch.Tensor]] = [[] for _ in range(b)]
    active = torch.arange(b, device=x_prev.device)
    trace: list[list[float]] = [[] for _ in range(b)]  # best residual after each call, per sample
    stalled = torch.zeros(b, dtype=torch.bool)
    g_free = (a_t / a_prev) ** 0.5
    g_clip = ((1 - a_t) / (1 - a_prev)) ** 0.5 if a_prev < 1 else g_free
    for _ in range(max_iter):
        xa = x_try[active]
        c = cond if len(active) == b else _subset_cond(cond, active, b)
        e = model.eps_fn(xa, model.timesteps_tensor(t, len(active)), c)
        fwd, x0a = ddim_step(xa, e, a_t, a_prev, clip=clip, use_clipped_model_output=clipped_eps)
        r = x_prev[active] - fwd
        gain = torch.full_like(xa, g_free)
        if clip is not None:
            raw_x0 = (xa - (1 - a_t) ** 0.5 * e) / a_t**0.5
            gain = torch.where(raw_x0.abs() > clip, torch.full_like(xa, g_clip), gain)
        f = gain * r
        res = _rms(r).double().cpu()
        for j, i in enumerate(active.tolist()):
            calls[i] += 1
            if res[j] <= resid[i]:  # accept (the first evaluation always is: resid starts at inf)
                x_cur[i], f_cur[i], eps[i], x0[i], resid[i] = xa[j], f[j], e[j], x0a[j], res[j]
                hist_x[i], hist_f[i] = (hist_x[i] + [xa[j].flatten()])[-history - 1:], \
                    (hist_f[i] + [f[j].flatten()])[-history - 1:]
                damp[i] = min(1.0, float(damp[i]) * 2)
            else:  # reject: plain damped step from the last accepted iterate
                hist_x[i], hist_f[i] = hist_x[i][-1:], hist_f[i][-1:]
                damp[i] = float(damp[i]) / 2
            trace[i].append(float(resid[i]))
            w, tr = INVERSION_STALL_WINDOW, trace[i]
            if len(tr) > w and tr[-1] > tol and tr[-1] >= (1 - INVERSION_STALL_GAIN) * tr[-1 - w]:
                stalled[i] = True
        keep = (resid[active.cpu()] > tol) & ~stalled[active.cpu()]
        active = active[keep.to(active.device)]
        if len(active) == 0:
            break
        x_try = x_cur.clone()
        for i in active.tolist():
            step = float(damp[i]) * f_cur[i]
            if len(hist_f[i]) > 1 and float(damp[i]) == 1.0:
                fs, xs_ = torch.stack(hist_f[i], 1), torch.stack(hist_x[i], 1)  # (N, m+1)
                d_f, d_x = fs[:, 1:] - fs[:, :-1], xs_[:, 1:] - xs_[:, :-1]
                gamma = torch.linalg.lstsq(d_f.double(), fs[:, -1:].double()).solution.to(d_f.dtype)
                step = (f_cur[i].flatten() - ((d_x + d_f) @ gamma).flatten()).view_as(f_cur[i])
            x_try[i] = x_cur[i] + step
    return x_cur, eps, x0, calls, resid, stalled


def invert(model: Model, x0: torch.Tensor, *, steps: int = 50, method: str = "fixed_point",
           tol: float = INVERSION_TOL, max_iter: int = INVERSION_MAX_ITER, prompt: PromptLike | None = None,
           negative_prompt: PromptLike | None = None, guidance_scale: float | None = None, cond: CondLike = None,
           use_clipped_model_output: bool = False, callback: Callback | None = None,
           progress: bool = True) -> Trajectory:
    """Invert clean x0 (B, *x_shape) to the first sampling timestep, so that :func:`sample` gives it back.

    The path is ``-1, 0, grid..., t_start``: it ends exactly where :func:`sample` starts.

    ``method="fixed_point"`` (default): each step solves for the x_t whose forward DDIM step, as
    :func:`sample` takes it (x0 clipping and ``use_clipped_model_output`` included: pass the same
    values and prompt keywords to both), lands on the given x_{t-1}: fixed-point iteration from the
    plain inversion step, preconditioned and Anderson-accelerated (AIDI / ReNoise / Pan et al.
    2023), until the RMS residual of the forward step is <= ``tol`` (per sample, at most
    ``max_iter`` U-Net calls per step; a sample that stalls stops earlier). Per-sample stopping:
    a converged sample leaves the batch, the U-Net only sees the samples still iterating.
    ``meta`` records ``iterations`` (U-Net calls) and ``residual`` per step (lists over steps of
    per-sample lists), their summaries ``iterations_per_step`` (mean over samples) and
    ``max_residual_per_step``, and ``unet_calls`` (per-sample U-Net evaluations in all, the
    start included). A step that does not converge is logged as a warning with its step, t,
    samples and residual and listed in ``meta["unconverged"]`` (step, t, samples, their
    residuals and calls, whether each stalled), and a summary warning closes the run.

    Clipping models (``clip_sample``, as the embedded ones): round trips are exact with
    ``use_clipped_model_output=True`` on both sides (the README gives the measured errors). With
    the raw eps (``sample``'s default) the clipped forward step is flat in x0 wherever x0 is
    clipped, so it is neither one-to-one nor onto: some steps cannot converge, the round trip is
    only closer than plain inversion, and the unconverged steps are reported.

    ``method="ddim"``: plain DDIM inversion, eps evaluated at x_{t-1} (one U-Net call per step,
    not exact; x0 is never clipped).

    Text models: the prompt keywords as in :func:`sample`. Latent models invert latents:
    ``model.encode_image(images)`` first. x0: (B, *x_shape), in [-clip, clip] when the
    scheduler clips (sampling can only return values in that range).

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> x0 = diffgeo.data.shapes.make_scenes(1, seed=7).images
    >>> inv = invert(model, x0, steps=5, use_clipped_model_output=True, progress=False)
    >>> back = sample(model, noise=inv.result, steps=5, use_clipped_model_output=True, progress=False).result
    >>> bool((back - x0).pow(2).mean().sqrt() < 0.02), len(inv.meta["iterations"])
    (True, 5)
    """
    x0 = model.check_x(x0, "x0")
    method = check_choice(method, "method", INVERSION_METHODS)
    tol = check_float(tol, "tol", min=0, min_open=True)
    max_iter = check_int(max_iter, "max_iter", min=1)
    use_clipped_model_output = check_bool(use_clipped_model_output, "use_clipped_model_output")
    clip = _clip_range(model)
    if method == "fixed_point" and clip is not None and float(x0.abs().max()) > clip + 1e-6:
        raise ValueError(f"x0 has values in [{float(x0.min()):.3g}, {float(x0.max()):.3g}], outside the model's "
                         f"clipping range [-{clip:g}, {clip:g}]: sampling can never return such an image; map images "
                         "to [-1, 1] (2 * x - 1 for [0, 1] data)")
    grid = ddim_timesteps(model, steps).tolist()[::-1]
    path = [CLEAN] + grid
    c = resolve_cond(model, prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale, cond=cond,
                     batch=x0.shape[0])
    clipped_eps = use_clipped_model_output and clip is not None
    meta = {"model": model.name, "direction": "invert", "eta": 0.0, "steps": steps, "seed": None,
            "method": method, **(c.meta() if c is not None else {})}
    if method == "ddim":
        return _run(model, x0, path, eta=0.0, g=None, clip=None, clipped_eps=False, cond=c, callback=callback,
                    progress=progress, desc="DDIM inversion", meta=meta)
    b = x0.shape[0]
    xs, x0s, iterations, residuals, unconverged = [x0], [], [], [], []
    x = x0
    eps = model.eps_fn(x0, model.timesteps_tensor(0, b), c)
    for i in tqdm(range(len(path) - 1), desc="fixed-point inversion", disable=not progress, leave=False):
        t_prev, t = path[i], path[i + 1]
        x_t, eps, x0_pred, iters, resid, stalled = _invert_step(
            model, x, eps, t, _abar(model, t), _abar(model, t_prev), clip=clip, clipped_eps=clipped_eps, cond=c,
            tol=float(tol), max_iter=max_iter)
        iterations.append(iters.tolist())
        residuals.append(resid.tolist())
        bad = resid > tol
        if bool(bad.any()):
            worst = float(resid.max())
            idx = bad.nonzero().flatten()
            unconverged.append({"step": i, "t": t, "samples": idx.tolist(), "residual": worst,
                                "residuals": resid[idx].tolist(), "stalled": stalled[idx].tolist(),
                                "iterations": iters[idx].tolist()})
            logger.warning("fixed-point inversion: step %d (t=%d) did not converge for %d of %d samples (%d stalled "
                           "before max_iter=%d; RMS residual up to %.3g > tol %.3g, samples %s)", i, t, int(bad.sum()),
                           b, int(stalled[idx].sum()), max_iter, worst, tol, idx.tolist()[:10])
        if callback is not None:
            callback({"i": i, "t": t_prev, "t_next": t, "x_t": x, "eps": eps, "x0_pred": x0_pred, "x_next": x_t,
                      "iterations": iters, "residual": resid})
        xs.append(x_t)
        x0s.append(x0_pred)
        x = x_t
    meta.update({"tol": float(tol), "max_iter": max_iter, "use_clipped_model_output": clipped_eps,
                 "iterations": iterations, "residual": residuals, "unconverged": unconverged,
                 "iterations_per_step": [sum(row) / b for row in iterations],
                 "max_residual_per_step": [max(row) for row in residuals],
                 "unet_calls": sum(map(sum, iterations)) + b})
    if unconverged:
        logger.warning("fixed-point inversion: %d of %d steps left samples above tol %.3g (worst RMS residual %.3g at "
                       "t=%d); the round trip is only as exact as these residuals (meta['unconverged'])",
                       len(unconverged), len(path) - 1, tol, max(u["residual"] for u in unconverged),
                       max(unconverged, key=lambda u: u["residual"])["t"])
    return Trajectory(torch.tensor(path, dtype=torch.long), torch.stack(xs), torch.stack(x0s), meta)
