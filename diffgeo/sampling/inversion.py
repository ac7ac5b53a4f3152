"""DDIM inversion: clean x0 back to the first sampling timestep, so that :func:`~diffgeo.sampling.ddim.sample`
gives it back. Plain DDIM inversion (one U-Net call per step) or the fixed-point solve of each
step (:func:`invert`); both walk the path with :func:`~diffgeo.sampling.ddim.ddim_loop`.

>>> import diffgeo
>>> model = diffgeo.load("shapes")
>>> x0 = diffgeo.data.shapes.make_scenes(1, seed=7).images
>>> invert(model, x0, steps=3, method="ddim", progress=False).timesteps.tolist()
[-1, 0, 333, 666]
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import torch

from diffgeo.core.checks import NonFiniteError, check_choice, check_float, check_int
from diffgeo.core.precision import full_precision
from diffgeo.models.conditioning import Cond, resolve_cond
from diffgeo.models.model import CondLike, Model, PromptLike
from diffgeo.sampling.ddim import (
    CLEAN,
    Callback,
    clip_range,
    ddim_loop,
    ddim_step,
    ddim_timesteps,
    model_eps,
    prev_timesteps,
    resolve_clipped,
    step_abars,
)
from diffgeo.sampling.trajectory import Trajectory

__all__ = ["invert", "invert_step", "INVERSION_METHODS", "INVERSION_TOL", "INVERSION_MAX_ITER", "INVERSION_MAX_RMS"]

logger = logging.getLogger(__name__)

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
#: A state of fixed-point inversion on a clipping model whose RMS over one sample exceeds this has run
#: away (such a model's states are x0 in [-clip, clip] plus unit noise: RMS about 1 at every t):
#: :func:`invert` raises with the step instead of returning it. The raw-eps inversion of ``shapes``
#: returned x_T of std 2e8 (issue 26); scene 1 of ``make_scenes(2, seed=424_242)`` passes RMS 50 at
#: step 7 (t = 140) with its residual at 1.2e-6: the clipped raw-eps step is not one-to-one.
INVERSION_MAX_RMS = 50.0


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


@full_precision()  # no TF32: its 1e-3 rounding stalls the solve (issue 28)
def invert_step(model: Model, x_prev: torch.Tensor, eps_guess: torch.Tensor, t: int, a_t: float, a_prev: float, *,
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
    x_prev, eps_guess: (B, *x_shape). Returns (x_t, eps(x_t), x0_pred, U-Net calls (B,),
    residual (B,), stalled (B,) bool).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> x_prev = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5
    >>> from diffgeo.sampling.ddim import abar
    >>> a, ap = abar(m, 500), abar(m, 250)
    >>> guess = m.eps_fn(x_prev, m.timesteps_tensor(250, 2), None)
    >>> x_t, eps, x0, calls, resid, stalled = invert_step(m, x_prev, guess, 500, a, ap, clip=None,
    ...                                                   clipped_eps=False, cond=None, tol=1e-4, max_iter=20)
    >>> x_t.shape, bool((resid <= 1e-4).all())
    (torch.Size([2, 3, 32, 32]), True)
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
           use_clipped_model_output: bool | None = None, callback: Callback | None = None,
           progress: bool | None = None) -> Trajectory:
    """Invert clean x0 (B, *x_shape) to the first sampling timestep, so that :func:`~diffgeo.sampling.ddim.sample` gives it back.

    The path is ``-1, 0, grid..., t_start``: it ends exactly where :func:`~diffgeo.sampling.ddim.sample` starts.

    ``method="fixed_point"`` (default): each step solves for the x_t whose forward DDIM step, as
    :func:`~diffgeo.sampling.ddim.sample` takes it (x0 clipping and ``use_clipped_model_output`` included: pass the same
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
    ``use_clipped_model_output=True`` on both sides (docs/measurements.md gives the measured errors);
    None, the default of both ``invert`` and ``sample``, is the model's own choice (``model.clipped_eps``,
    True for the embedded models), so the defaults round-trip. With the raw eps (False) the clipped
    forward step is flat in x0 wherever x0 is clipped, so it is neither one-to-one nor onto: some
    steps cannot converge, and where the solve runs away (a state NaN, infinite or with RMS above
    :data:`INVERSION_MAX_RMS`) :func:`invert` raises :class:`~diffgeo.core.checks.NonFiniteError`
    naming the step and the fix.

    ``method="ddim"``: plain DDIM inversion, eps evaluated at x_{t-1} (one U-Net call per step,
    not exact; x0 is never clipped).

    Text models: the prompt keywords as in :func:`~diffgeo.sampling.ddim.sample`. Latent models invert latents:
    ``model.encode_image(images)`` first. x0: (B, *x_shape), in [-clip, clip] when the scheduler
    clips (the embedded models: [-1, 1]; sampling can only return values in that range).

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> x0 = diffgeo.data.shapes.make_scenes(1, seed=7).images
    >>> inv = invert(model, x0, steps=5, progress=False)
    >>> back = diffgeo.sample(model, noise=inv.result, steps=5, progress=False).result
    >>> bool((back - x0).pow(2).mean().sqrt() < 0.02), len(inv.meta["iterations"])
    (True, 5)
    """
    x0 = model.check_x(x0, "x0")
    method = check_choice(method, "method", INVERSION_METHODS)
    tol = check_float(tol, "tol", min=0, min_open=True)
    max_iter = check_int(max_iter, "max_iter", min=1)
    clipped_eps = resolve_clipped(model, use_clipped_model_output)
    clip = clip_range(model)
    if clip is not None and float(x0.abs().max()) > clip + 1e-6:  # both methods: refused before any work
        raise ValueError(f"x0 has values in [{float(x0.min()):.3g}, {float(x0.max()):.3g}], outside the model's "
                         f"clipping range [-{clip:g}, {clip:g}]: sampling can never return such an image; map images "
                         "to [-1, 1] (2 * x - 1 for [0, 1] data, x / 127.5 - 1 for [0, 255])")
    grid = ddim_timesteps(model, steps).tolist()[::-1]
    path = [CLEAN] + grid
    c = resolve_cond(model, prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale, cond=cond,
                     batch=x0.shape[0])
    meta = {"model": model.name, "direction": "invert", "eta": 0.0, "steps": steps, "seed": None,
            "method": method, **(c.meta() if c is not None else {})}
    hint = ("the inversion cannot be solved here; with a clipping scheduler invert and sample with "
            "use_clipped_model_output=True (the embedded models' default), or use fewer steps or method='ddim'")
    if method == "ddim":
        return ddim_loop(model, x0, path, model_eps(model, c), clip=None, clipped_eps=False, steps=steps,
                         callback=callback, progress=progress, desc="DDIM inversion", meta=meta, hint=hint)
    b = x0.shape[0]
    iterations: list[list[int]] = []
    residuals: list[list[float]] = []
    unconverged: list[dict[str, Any]] = []
    state = {"eps": model.eps_fn(x0, model.timesteps_tensor(0, b), c)}

    prev = prev_timesteps(model, steps)

    def solve(i: int, x: torch.Tensor, t_prev: int, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        a_prev, a_t = step_abars(model, t_prev, t, prev)
        x_t, eps, x0_pred, iters, resid, stalled = invert_step(
            model, x, state["eps"], t, a_t, a_prev, clip=clip, clipped_eps=clipped_eps,
            cond=c, tol=float(tol), max_iter=max_iter)
        state["eps"] = eps
        rms = _rms(x_t)
        # a clipping model's states are x0 in [-clip, clip] plus unit noise; without clipping the step is smooth
        # and one-to-one, so a converged x_t of any size is the answer (the loop's guard still catches NaN/inf)
        if clip is not None and not bool((rms <= INVERSION_MAX_RMS).all()):  # NaN compares False
            k = int((~(rms <= INVERSION_MAX_RMS)).nonzero()[0])
            raise NonFiniteError(f"fixed-point inversion of {model.name} diverged at step {i} (t={t_prev} -> {t}): "
                                 f"sample {k}'s state reached RMS {float(rms[k]):.3g} > {INVERSION_MAX_RMS:g} "
                                 f"(residual {float(resid[k]):.3g}); {hint}")
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
        return x_t, x0_pred, eps, {"iterations": iters, "residual": resid}

    traj = ddim_loop(model, x0, path, step=solve, callback=callback, progress=progress, desc="fixed-point inversion",
                     meta=meta, hint=hint)
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
    return replace(traj, meta=meta)
