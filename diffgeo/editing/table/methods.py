"""The edit methods of the quality table, each as a finder of candidate directions.

A finder takes the model, the :class:`~diffgeo.editing.table.tasks.Task` and the calibration
samples and returns :class:`Candidate` directions; the table picks one candidate and one strength
per method on the calibration samples (:mod:`diffgeo.editing.table.run`). Candidates are unit-norm;
their strengths are multiples of a reference norm (:func:`reference_norm`), or, for directions made
to edit at their own scale (mean differences, learned f_t), of that scale (:func:`natural`).

- ``pullback``: Park et al.'s x-space step along the local basis v_1..v_k of x_t -> h at t_edit
  of ONE calibration sample (both signs; the reader picks the vector);
- ``loco``: LOCO-style directions of ONE calibration sample (:mod:`diffgeo.editing.loco`), the mask
  from the scene's own shape (background: everything but the shape; digits: the strokes);
- ``mean_difference_h`` / ``mean_difference_x``: groups of scenes that differ only in the factor
  (:func:`~diffgeo.editing.factors.factor_directions`), Asyrp in h / a step in x;
- ``pca_h``: principal components of h over the calibration samples (both signs);
- ``learned_h``: Asyrp's f_t trained against the probe, keeping the other factors
  (:func:`~diffgeo.editing.objectives.probe_objective` with ``keep``), as a per-timestep direction
  (its average over samples: one direction to ship and transfer);
- ``learned_ft``: the same f_t applied as Asyrp does, each sample's dh = f_t of its own h
  (``Candidate.meta["f_t"]``, the :class:`~diffgeo.editing.learned.LearnedDirection`; strengths are
  multiples of f_t's own output); one network for every sample, shipped as it is;
- ``target_x`` / ``target_gn`` (per sample, shapes only): x_t moved towards the sample's own fitted
  scene re-rendered with the target (:mod:`diffgeo.editing.target`): its clean-image part moved by the
  change (``x0``) / the Gauss-Newton step of x0_hat; found again on every edited sample
  (``Candidate.meta["per_sample"]``: the (n, *x_shape) steps), so they have no transfer.

>>> sorted(METHODS)
['learned_ft', 'learned_h', 'loco', 'mean_difference_h', 'mean_difference_x', 'pca_h', 'pullback', 'target_gn', 'target_x']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from diffgeo.editing.directions import Direction, pca
from diffgeo.editing.factors import FACTOR_DEFAULTS, factor_directions
from diffgeo.editing.learned import train_direction
from diffgeo.editing.loco import loco_directions, scene_mask
from diffgeo.editing.objectives import probe_objective
from diffgeo.editing.target import scene_target, target_steps
from diffgeo.editing.table.tasks import Samples, Task, classes
from diffgeo.geometry.basis import local_basis
from diffgeo.sampling.ddim import sample

__all__ = ["Candidate", "METHODS", "SPACE", "reference_norm", "unit", "natural"]


@dataclass(frozen=True)
class Candidate:
    """A unit-norm direction and how it was found (``label``: e.g. ``v3-``)."""

    direction: Direction
    label: str
    meta: dict = field(default_factory=dict)


def natural(d: Direction) -> float:
    """The norm of ``d``'s largest per-timestep vector (its own scale, at which it was made to edit).

    >>> natural(Direction(torch.full((1, 4), 0.5), torch.tensor([-1]), "x", "toy"))
    1.0
    """
    return float(d.vectors.flatten(1).norm(dim=1).max())


def unit(d: Direction) -> Direction:
    """``d`` scaled so that its largest per-timestep vector has norm 1.

    >>> unit(Direction(torch.full((1, 2), 3.0), torch.tensor([-1]), "x", "toy")).vectors.norm().item()
    1.0
    """
    return d * (1.0 / float(d.vectors.flatten(1).norm(dim=1).max().clamp_min(1e-12)))


def reference_norm(model: Any, space: str, x_t: torch.Tensor, t: int, prompt: Any = None) -> float:
    """The typical norm of one sample in ``space`` at t: ||x_t|| (x) or ||h(x_t)|| (h), the mean over x_t (n, ...).

    >>> import diffgeo
    >>> round(reference_norm(diffgeo.load("shapes"), "x", torch.ones(2, 3, 32, 32), 500), 3)
    55.426
    """
    if space == "x":
        return float(x_t.flatten(1).norm(dim=1).mean())
    kw = {"prompt": prompt} if model.is_conditional else {}
    with torch.no_grad():
        h = model.h(x_t, t, **kw)
    return float(h.flatten(1).norm(dim=1).mean())


def _x_t(model: Any, cal: Samples, t: int, steps: int, prompt: Any, i: int = 0) -> torch.Tensor:
    kw = {"prompt": prompt} if model.is_conditional else {}
    with torch.no_grad():
        tr = sample(model, noise=cal.x_T[i:i + 1], steps=steps, progress=False, **kw)
    return tr.xs[tr.timesteps.tolist().index(t)]


def _signed(ds: list[Direction], labels: list[str]) -> list[Candidate]:
    out = []
    for d, lab in zip(ds, labels):
        out += [Candidate(unit(d), lab + "+"), Candidate(unit(-d), lab + "-")]
    return out


def _mask(t: Task, image: torch.Tensor) -> torch.Tensor:
    if t.model != "shapes":
        return F.max_pool2d((image[:, :1] > -0.5).float(), 3, stride=1, padding=1)[0, 0] > 0
    grow = {"x": 4, "size": 3}.get(t.factor, 1)
    m = scene_mask(image, dilate=grow)[0]
    return ~scene_mask(image, dilate=0)[0] if t.factor == "background" else m


def _find_pullback(model: Any, t: Task, cal: Samples, *, t_edit: int, steps: int, prompt: Any = None,
                  k: int = 3, seed: int = 0) -> list[Candidate]:
    x = _x_t(model, cal, t_edit, steps, prompt)
    b = local_basis(model, x, t_edit, k, seed=seed, progress=False, **({"prompt": prompt} if prompt is not None else {}))
    ds = [Direction(b.v[i][None], torch.tensor([-1]), "x", model.name, {"source": "pullback", "index": i})
          for i in range(k)]
    return _signed(ds, [f"v{i + 1}" for i in range(k)])


def _find_loco(model: Any, t: Task, cal: Samples, *, t_edit: int, steps: int, prompt: Any = None,
              k: int = 2, r: int = 8, seed: int = 0) -> list[Candidate]:
    x = _x_t(model, cal, t_edit, steps, prompt)
    d = loco_directions(model, x, t_edit, _mask(t, cal.images[:1]), k=k, r=r, prompt=prompt, seed=seed)
    return _signed([d.direction(model.name, i) for i in range(k)], [f"loco{i + 1}" for i in range(k)])


def _groups(t: Task) -> tuple[str, str]:
    if t.source is not None:
        return t.source, t.target
    a = FACTOR_DEFAULTS[t.factor][0] if t.factor in FACTOR_DEFAULTS else {"background": "light", "x": "left"}[t.factor]
    if a == t.target:
        a = next(c for c in classes(t.model)[t.factor] if c != t.target)
    return a, t.target


def _find_mean_difference(space: str) -> Callable[..., list[Candidate]]:
    def find(model: Any, t: Task, cal: Samples, *, t_edit: int, steps: int, prompt: Any = None, seed: int = 0,
             n: int = 32) -> list[Candidate]:
        a, b = _groups(t)
        dx, dh = factor_directions(model, t.factor, a, b, n=n, steps=steps, t_edit=t_edit, prompt=prompt, seed=seed)
        d = dx if space == "x" else dh
        return [Candidate(unit(d), f"{a}->{b}", {"natural": natural(d)})]
    return find


def _find_pca(model: Any, t: Task, cal: Samples, *, t_edit: int, steps: int, prompt: Any = None,
             components: int = 2, seed: int = 0) -> list[Candidate]:
    ds = [pca(model, cal.x_T, c, steps=steps, prompt=prompt) for c in range(components)]
    return _signed(ds, [f"pc{c + 1}" for c in range(components)])


def _find_learned(per_sample: bool) -> Callable[..., list[Candidate]]:
    def find(model: Any, t: Task, cal: Samples, *, t_edit: int, steps: int, prompt: Any = None,
             train_steps: int = 100, seed: int = 0) -> list[Candidate]:
        if t.model != "shapes":
            return []  # the digits reader has no differentiable scores: nothing to train against
        obj = probe_objective(model, t.factor, t.target, keep=True)
        ld = train_direction(model, obj, steps=train_steps, t_edit=t_edit, seed=seed, progress=False)
        d = ld.to_direction(model, n=16, steps=steps)
        if per_sample:
            return [Candidate(unit(d), "f_t(h)", {"train_steps": train_steps, "natural": 1.0, "f_t": ld})]
        return [Candidate(unit(d), "f_t", {"train_steps": train_steps, "natural": natural(d)})]
    return find


def _find_target(mode: str) -> Callable[..., list[Candidate]]:
    def find(model: Any, t: Task, cal: Samples, *, t_edit: int, steps: int, prompt: Any = None) -> list[Candidate]:
        if t.model != "shapes":
            return []  # the target change needs the scene renderer
        delta = scene_target(cal.images, t.factor, t.target)
        v = target_steps(model, _x_t_all(model, cal, t_edit, steps, prompt), t_edit, delta, prompt=prompt, mode=mode)
        d = Direction(v[:1], torch.tensor([-1]), "x", model.name, {"source": "target", "mode": mode})
        return [Candidate(d, f"target_{mode}", {"natural": 1.0, "per_sample": v, "grid": PER_SAMPLE_GRID})]
    return find


def _x_t_all(model: Any, cal: Samples, t: int, steps: int, prompt: Any) -> torch.Tensor:
    kw = {"prompt": prompt} if model.is_conditional else {}
    with torch.no_grad():
        tr = sample(model, noise=cal.x_T, steps=steps, progress=False, **kw)
    return tr.xs[tr.timesteps.tolist().index(t)]


#: Strengths of per-sample target steps, as multiples of the step :func:`target_steps` returns.
PER_SAMPLE_GRID = (0.5, 1.0, 1.5, 2.0, 4.0)

#: method -> (space, finder)
METHODS: dict[str, tuple[str, Callable[..., list[Candidate]]]] = {
    "pullback": ("x", _find_pullback),
    "loco": ("x", _find_loco),
    "mean_difference_x": ("x", _find_mean_difference("x")),
    "mean_difference_h": ("h", _find_mean_difference("h")),
    "pca_h": ("h", _find_pca),
    "learned_h": ("h", _find_learned(per_sample=False)),
    "learned_ft": ("h", _find_learned(per_sample=True)),
    "target_x": ("x", _find_target("x0")),
    "target_gn": ("x", _find_target("gauss_newton")),
}
SPACE = {k: v[0] for k, v in METHODS.items()}
