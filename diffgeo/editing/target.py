"""Target-guided per-sample x-space edits: the step in x_t whose x0 change best matches a target image change.

A LOCO-style edit (:mod:`diffgeo.editing.loco`) looks for directions that change a masked region
most; it does not know which change is wanted (blue, not brighter). Here the wanted change of the
clean image is given: for a shapes scene, :func:`scene_target` fits the scene
(:func:`~diffgeo.readers.probe.fit_scene`), renders it again with one factor set to the target class
(for binned factors: the centre of the target bin) and returns the difference Delta of the two
renders (zero wherever the factor does not show, so the other factors are kept by construction).
:func:`target_steps` then takes, per sample, the Gauss-Newton step of the posterior-mean predictor
x0_hat at t towards that change: ``v = J^T Delta`` (one vector-Jacobian product) scaled by
``<J v, Delta> / ||J v||^2`` (one Jacobian-vector product), so strength 1 is the linearised step
that makes x0_hat move by the projection of Delta on J v. Finding costs two products per sample;
the edit is ``x_t + strength v`` then DDIM (:func:`~diffgeo.editing.xspace.edit_x`). ``mode="x0"``
skips the Jacobian: ``v = sqrt(abar_t) Delta`` moves the clean-image part of x_t by Delta and keeps
its noise part (an SDEdit-like edit with the sample's own noise).

>>> from diffgeo.data.shapes import make_scenes
>>> d = scene_target(make_scenes(2, seed=0).images, "colour", "blue")
>>> d.shape
torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

from typing import Any

import torch

import diffgeo.data.shapes as shapes
from diffgeo.editing.factors import BINNED, SCENE_CLASSES
from diffgeo.editing.xspace import edit_x
from diffgeo.geometry.pullback import forward_ad_ready
from diffgeo.readers.probe import fit_scene, validity
from diffgeo.sampling.ddim import sample

__all__ = ["scene_target", "target_value", "target_steps", "target_edit"]


def target_value(factor: str, target: str) -> float | int:
    """The factor value a shapes scene is rendered with for class ``target`` of ``factor``: the class
    index (colour, shape) or the centre of the target's bin (size, background, x).

    >>> round(target_value("x", "right"), 3), target_value("colour", "blue")
    (19.333, 4)
    """
    if factor not in SCENE_CLASSES:
        raise ValueError(f"unknown factor {factor!r}: known factors are {', '.join(SCENE_CLASSES)}")
    names = SCENE_CLASSES[factor]
    if target not in names:
        raise ValueError(f"{target!r} is not a class of {factor!r}: known ones are {', '.join(names)}")
    i = names.index(target)
    if factor not in BINNED:
        return i
    lo, hi = shapes.RANGES[factor]
    edges = (lo, *BINNED[factor][1], hi)
    return (edges[i] + edges[i + 1]) / 2


def scene_target(images: torch.Tensor, factor: str, target: str) -> torch.Tensor:
    """Delta (N, 3, 32, 32): each shapes scene of ``images`` (N, 3, 32, 32), fitted and rendered with
    ``factor`` set to ``target`` (:func:`target_value`), minus the same fit rendered unchanged.

    >>> from diffgeo.data.shapes import make_scenes
    >>> s = make_scenes(2, seed=1)
    >>> d = scene_target(s.images, "background", "dark")
    >>> bool(d.abs().amax() > 0)
    True
    """
    value = target_value(factor, target)
    # 3 rounds of 9-point grids around the probe's read (the probe is within 0.1 px already; the table's
    # fit_scene settings, 0.2 s per image on one thread instead of 1 s for the default search)
    f = fit_scene(images, validity(images).factors, rounds=3, grid=9).factors
    v = getattr(f, factor)
    new = torch.full_like(v, value) if factor in BINNED else torch.full_like(v, int(value))
    return (shapes.render(f.replace(**{factor: new})) - shapes.render(f)).to(images)


def target_steps(model: Any, x_t: torch.Tensor, t: int, delta: torch.Tensor, *, prompt: Any = None,
                 mode: str = "x0") -> torch.Tensor:
    """Per-sample steps (N, *x_shape) at timestep t from x_t (N, *x_shape) towards a clean image
    changed by delta (N, *x_shape); zero where delta is zero. ``mode="x0"``: ``sqrt(abar_t) delta``,
    the change of x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps when x0 moves by delta and the noise
    stays (no Jacobian); ``"gauss_newton"``: the Gauss-Newton step of x0_hat (module docstring).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> target_steps(m, x, 500, torch.zeros(2, 3, 32, 32), mode="gauss_newton").abs().max().item()
    0.0
    """
    model.check_t(t)
    x = model.check_x(x_t).detach()
    if tuple(delta.shape) != tuple(x.shape):
        raise ValueError(f"delta has shape {tuple(delta.shape)}, x_t {tuple(x.shape)}: give one target change per sample")
    if mode not in ("x0", "gauss_newton"):
        raise ValueError(f"mode must be 'x0' or 'gauss_newton', got {mode!r}")
    a = float(model.alphas_cumprod[int(t)])
    if mode == "x0":
        return a ** 0.5 * delta.to(x)
    tb = model.timesteps_tensor(int(t), len(x))
    c = model.conditioning(prompt, branch="cond", batch=len(x)) if model.is_conditional else None

    def x0(z: torch.Tensor) -> torch.Tensor:
        return (z - (1 - a) ** 0.5 * model.eps_fn(z, tb, c)) / a ** 0.5

    delta = delta.to(x)
    with forward_ad_ready(model.unet):
        _, pull = torch.func.vjp(x0, x)
        v = pull(delta)[0].detach()
        jv = torch.func.jvp(x0, (x,), (v,))[1].detach()
    dims = tuple(range(1, x.dim()))
    scale = (jv * delta).sum(dims) / (jv * jv).sum(dims).clamp_min(1e-30)
    return v * scale.view(-1, *[1] * (x.dim() - 1))


def target_edit(model: Any, x_T: torch.Tensor, factor: str, target: str, *, t_edit: int, strength: float = 1.0,
                steps: int = 10, mode: str = "x0") -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of the shapes ``model`` from x_T (N, 3, 32, 32) and the same samples edited to ``factor``
    = ``target`` by their own target steps (:func:`target_steps` at ``t_edit``, a timestep of the
    ``steps`` grid, times ``strength``): (unedited, edited) images, each (N, 3, 32, 32).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> before, after = target_edit(m, x_T, "colour", "blue", t_edit=250, strength=0.0, steps=4)
    >>> bool(torch.allclose(before, after, atol=1e-5))
    True
    """
    target_value(factor, target)  # a clear error for an unknown factor or class before any work
    with torch.no_grad():
        tr = sample(model, noise=x_T, steps=steps, progress=False)
    ts = tr.timesteps.tolist()
    if int(t_edit) not in ts:
        raise ValueError(f"t_edit={t_edit} is not on the {steps}-step grid {ts}: pick one of its timesteps")
    x_t = tr.xs[ts.index(int(t_edit))]
    v = target_steps(model, x_t, t_edit, scene_target(tr.result, factor, target), mode=mode)
    with torch.no_grad():
        after = edit_x(model, x_t, int(t_edit), v, strength=strength, steps=steps, progress=False).result
    return tr.result, after
