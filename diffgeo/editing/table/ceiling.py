"""The ceiling of the edit-quality table: how well the table's own readers agree with themselves.

Before asking an edit for preservation >= 0.90 the table must know what the UNEDITED round trip
scores with the same readers and tolerances. :func:`ceiling` measures, on the held-out samples of a
task, at each t_edit:

- ``zero``: the edit at strength 0 (x_t at t_edit, DDIM down again; h-space: Asyrp with a zero
  direction), scored like every edit (success, preservation, validity, clean; Wilson 95% intervals);
- ``null``: a random unit x-space direction at the smallest strength the table tries (``fraction``
  of the reference norm): what a tiny edit that means nothing costs in preservation;
- ``perfect_edits`` (no model): rendered scenes re-rendered with only the edited factor changed,
  scored like an edit: what the readers make of an edit that is exactly right;
- ``readers`` (once, t-independent): the probe's continuous reads against
  :func:`~diffgeo.readers.probe.fit_scene`'s on the same unedited images: per factor the median and
  95th percentile of |probe - fit| and the fraction within :data:`~diffgeo.editing.table.tasks.TOLERANCE`.

>>> r = CeilingRow(task="colour:blue", t_edit=500, probe="zero", n=4, preservation=1.0)
>>> r.preservation, r.probe
(1.0, 'zero')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

import diffgeo.data.shapes as shapes
from diffgeo.editing.directions import Direction
from diffgeo.editing.properties import _editor
from diffgeo.editing.table.methods import reference_norm
from diffgeo.editing.table.run import _x_t_batch
from diffgeo.editing.table.tasks import TOLERANCE, Samples, Task, _continuous, classes, read, score
from diffgeo.editing.target import target_value
from diffgeo.evaluation.stats import wilson_interval

__all__ = ["CeilingRow", "ceiling", "reader_agreement", "perfect_edits"]


@dataclass(frozen=True)
class CeilingRow:
    """One probe of the ceiling: ``probe`` is "zero" (strength 0) or "null" (random direction at
    ``strength``); rates with Wilson 95% intervals (``*_ci``)."""

    task: str
    t_edit: int
    probe: str
    n: int
    strength: float = 0.0
    success: float = float("nan")
    preservation: float = float("nan")
    preservation_ci: tuple = (float("nan"), float("nan"))
    validity: float = float("nan")
    validity_ci: tuple = (float("nan"), float("nan"))
    clean: float = float("nan")
    meta: dict = field(default_factory=dict)


def reader_agreement(images: torch.Tensor) -> dict[str, dict[str, float]]:
    """The probe's continuous reads of shapes scenes ``images`` (N, 3, 32, 32) against fit_scene's:
    {factor: {"median", "p95" (of |probe - fit|), "within_tolerance" (fraction), "tolerance"}}.

    >>> from diffgeo.data.shapes import make_scenes
    >>> a = reader_agreement(make_scenes(4, seed=0).images)
    >>> sorted(a), a["x"]["within_tolerance"]
    (['background', 'size', 'x', 'y'], 1.0)
    """
    probe, fit = _continuous("shapes", images, False), _continuous("shapes", images, True)
    out = {}
    for f, tol in TOLERANCE.items():
        d = (probe[f] - fit[f]).abs()
        out[f] = {"median": float(d.median()), "p95": float(torch.quantile(d, 0.95)),
                  "within_tolerance": float((d <= tol).float().mean()), "tolerance": tol}
    return out


def perfect_edits(t: Task, n: int = 256, seed: int = 777) -> dict[str, Any]:
    """The readers on PERFECT edits: n rendered scenes (valid, not at the target) re-rendered with only
    ``t.factor`` set to the target (:func:`~diffgeo.editing.target.target_value`), scored like an
    edit: {"n", "success", "preservation", "validity", "clean" (rates), "*_ci" (Wilson 95%),
    "abs_change_p95": {other continuous factor: 95th percentile of |read change|}}. Shapes only.

    >>> r = perfect_edits(Task("shapes", "colour", "blue"), n=8)
    >>> r["n"], r["clean"]
    (8, 1.0)
    """
    if t.model != "shapes":
        raise ValueError(f"perfect edits need the scene renderer: shapes only, not {t.model!r}")
    s = shapes.make_scenes(4 * n, seed=seed)
    r = read("shapes", s.images)
    ok = r["valid"] & (r[t.factor] != classes("shapes")[t.factor].index(t.target))
    f = s.factors[ok.nonzero().flatten()[:n]]
    base_img = shapes.render(f)
    base = Samples(torch.zeros_like(base_img), base_img, read("shapes", base_img), _continuous("shapes", base_img, False))
    v = target_value(t.factor, t.target)
    old = getattr(f, t.factor)
    edited = shapes.render(f.replace(**{t.factor: torch.full_like(old, v) if old.is_floating_point()
                                        else torch.full_like(old, int(v))}))
    sc = score(t, base, edited)
    out: dict[str, Any] = {"n": len(f)}
    for key, name in (("success", "success"), ("preserved", "preservation"), ("valid", "validity"), ("clean", "clean")):
        k = int(sc[key].sum())
        out[name], out[name + "_ci"] = k / len(f), wilson_interval(k, len(f))
    cont = _continuous("shapes", edited, False)
    out["abs_change_p95"] = {k: float(torch.quantile((cont[k] - base.continuous[k]).abs(), 0.95))
                             for k in cont if k != t.factor}
    return out


def _row(t: Task, ev: Samples, out: torch.Tensor, t_edit: int, probe: str, strength: float) -> CeilingRow:
    sc = score(t, ev, out)
    n = len(out)
    k = {key: int(sc[key].sum()) for key in ("success", "preserved", "valid", "clean")}
    return CeilingRow(task=t.name, t_edit=t_edit, probe=probe, n=n, strength=strength, success=k["success"] / n,
                      preservation=k["preserved"] / n, preservation_ci=wilson_interval(k["preserved"], n),
                      validity=k["valid"] / n, validity_ci=wilson_interval(k["valid"], n), clean=k["clean"] / n,
                      meta={"kept": {f: float(v.float().mean()) for f, v in sc["kept"].items()}})


def ceiling(model: Any, t: Task, ev: Samples, *, t_edits: Sequence[int] = (100, 300, 500, 700), steps: int = 10,
            fraction: float = 0.05, seed: int = 0, prompt: Any = None) -> list[CeilingRow]:
    """The unedited round trip ("zero") and a random direction at ``fraction`` of the reference norm
    ("null") on the held-out samples ``ev`` of task ``t``, at every t_edit of ``t_edits`` (timesteps
    of the ``steps`` grid). Returns the rows, "zero" then "null" per t_edit.

    >>> import diffgeo
    >>> from diffgeo.editing.table.tasks import pick_samples, task
    >>> m = diffgeo.load("shapes")
    >>> tk = task("shapes", "colour:blue")
    >>> ev = pick_samples(m, tk, 2, seed=2, steps=4, fit=False)
    >>> rows = ceiling(m, tk, ev, t_edits=(500,), steps=4)
    >>> [(r.probe, r.preservation, r.success) for r in rows][0]
    ('zero', 1.0, 0.0)
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, *model.x_shape, generator=g).to(model.device, model.dtype)
    rnd = Direction(z / z.norm(), torch.tensor([-1]), "x", model.name, {"source": "random"})
    rows = []
    for te in t_edits:
        base, edit = _editor(model, "x", ev.x_T, te, steps, prompt)
        rows.append(_row(t, ev, edit(0.0, rnd), te, "zero", 0.0))
        ref = reference_norm(model, "x", _x_t_batch(model, ev.x_T, te, steps, prompt), te, prompt)
        rows.append(_row(t, ev, edit(1.0, rnd * (fraction * ref)), te, "null", fraction * ref))
    return rows
