"""Asyrp's claimed edit properties, each as a number, for x-space and h-space edits alike.

:func:`edit_properties` edits n samples of a model along a direction at several strengths (x-space:
:func:`diffgeo.editing.xspace.edit_x` at ``t_edit``; h-space: :func:`diffgeo.editing.hspace.asyrp` on
[T, t_edit], boosting off), reads every edited image with the model's reader (:mod:`diffgeo.models.zoo`
names it) and reduces the reads with the pure function :func:`edit_statistics`:

- change: per strength, the mean over samples of ``[factor == target] - [unedited factor == target]``
  (in [-1, 1]); specificity: per other factor, the fraction of samples whose read changed;
- homogeneity: the spread (standard deviation over samples) of the per-sample change;
- linearity: R^2 of a least-squares line through (strength, mean change) and whether the sign of
  the change flips with the strength's sign;
- composition (given a second direction): the change of both factors under ``d_a + d_b`` against
  each alone (at the largest strength); robustness: validity with Gaussian noise (relative norm
  ``noise``) added to the direction, against without; timestep consistency: cosine similarity of
  the direction's vectors across its timesteps (h-space directions made per timestep).

The table keeps the per-sample reads behind every mean (``per_sample``) so that
:mod:`diffgeo.analyses.asyrp` can put bootstrap intervals over samples on each property.
:func:`~diffgeo.editing.factors.factor_directions` makes the x- and h-space mean-difference directions of
one factor (shapes colour / shape / size, digit classes) that ``python -m diffgeo edit properties`` evaluates.

>>> import torch
>>> s = torch.tensor([-2., -1., 0., 1., 2.])
>>> st = edit_statistics(s, 0.25 * s[:, None].expand(5, 8), {}, torch.ones(5, 8, dtype=torch.bool))
>>> round(st["r2"], 6), st["sign_flip"], st["spread"]
(1.0, True, [0.0, 0.0, 0.0, 0.0, 0.0])
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from diffgeo.core.io import save_json_csv
from diffgeo.core.progress import progress_bar
from diffgeo.core.sweep import model_fingerprint
from diffgeo.editing.directions import Direction
from diffgeo.editing.hspace import asyrp
from diffgeo.editing.xspace import edit_x
from diffgeo.models.zoo import entry
from diffgeo.readers import get_reader
from diffgeo.sampling.ddim import ddim_timesteps, denoise, sample

__all__ = ["EditProperties", "edit_properties", "evaluate", "edit_statistics", "timestep_consistency", "timestep_cosines"]

logger = logging.getLogger(__name__)


def edit_statistics(strengths: torch.Tensor, change: torch.Tensor, other_changed: dict[str, torch.Tensor],
                    valid: torch.Tensor) -> dict[str, Any]:
    """Reduce per-sample reads to the property table (pure; no model).

    strengths: (S,) with 0 among them; change: (S, n) per-sample change of the intended factor;
    other_changed: {factor: (S, n) bool, the read differs from the unedited one}; valid: (S, n) bool.
    Returns mean_change (S,), spread (S,) (population std over n), slope and r2 of the line
    mean_change ~ a + b strength, sign_flip (for every s > 0 with -s present and a nonzero change
    at s: sign(change(-s)) = -sign(change(s)), and at least one such s), specificity
    {factor: (S,) fraction changed} and validity (S,).

    >>> s = torch.tensor([-1., 0., 1.])
    >>> edit_statistics(s, torch.tensor([[1.], [0.], [1.]]), {}, torch.ones(3, 1, dtype=torch.bool))["sign_flip"]
    False
    """
    strengths = torch.as_tensor(strengths, dtype=torch.float64)
    change = torch.as_tensor(change, dtype=torch.float64)
    if change.dim() != 2 or change.shape[0] != strengths.numel():
        raise ValueError(f"change must be (S, n) with S = len(strengths) = {strengths.numel()}, got "
                         f"{tuple(change.shape)}")
    mean = change.mean(1)
    spread = change.std(1, unbiased=False)
    x = strengths - strengths.mean()
    sxx = float((x * x).sum())
    slope = float((x * (mean - mean.mean())).sum()) / sxx if sxx > 0 else float("nan")
    fit = mean.mean() + slope * x
    sst = float(((mean - mean.mean()) ** 2).sum())
    # A flat response has no linear trend to explain: R^2 is undefined there (nan), not 1.
    r2 = 1.0 - float(((mean - fit) ** 2).sum()) / sst if sst > 0 else float("nan")
    pairs = []
    for i, s in enumerate(strengths.tolist()):
        if s > 0 and float(mean[i]) != 0.0:
            j = [k for k, u in enumerate(strengths.tolist()) if u == -s]
            if j:
                pairs.append(math.copysign(1, float(mean[i])) == -math.copysign(1, float(mean[j[0]]))
                             and float(mean[j[0]]) != 0.0)
    return {"mean_change": mean.tolist(), "spread": spread.tolist(), "slope": slope, "r2": r2,
            "sign_flip": bool(pairs) and all(pairs),
            "specificity": {k: torch.as_tensor(v, dtype=torch.float64).mean(1).tolist()
                            for k, v in other_changed.items()},
            "validity": torch.as_tensor(valid, dtype=torch.float64).mean(1).tolist()}


def timestep_cosines(direction: Direction) -> torch.Tensor:
    """(K, K) cosine similarities between the direction's vectors at its K timesteps.

    >>> d = Direction(torch.tensor([[1., 0.], [1., 1.]]), torch.tensor([10, 20]), "h", "toy")
    >>> timestep_cosines(d).diagonal().tolist()
    [1.0, 1.0]
    """
    v = direction.vectors.flatten(1).double()
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return v @ v.T


def timestep_consistency(direction: Direction) -> float | None:
    """Mean cosine similarity between the direction's vectors at different timesteps (None for one vector).

    >>> d = Direction(torch.tensor([[1., 0.], [1., 1.]]), torch.tensor([10, 20]), "h", "toy")
    >>> round(timestep_consistency(d), 4)
    0.7071
    """
    if len(direction.vectors) < 2:
        return None
    c = timestep_cosines(direction)
    k = len(c)
    return float((c.sum() - c.diagonal().sum()) / (k * (k - 1)))


@dataclass(frozen=True)
class EditProperties:
    """The property table of one direction on one model (see the module docstring).

    per_sample: the reads behind the means, for bootstrap intervals over the n samples:
    ``change`` (S, n) per-sample change of the target indicator, ``base_target`` (n,) 0/1: the
    unedited sample already reads as the target, ``valid`` (S, n) 0/1,
    ``other_changed`` {factor: (S, n) 0/1}, ``robust`` {``valid``, ``valid_noisy``, ``change_noisy``:
    (n,)} at the largest strength, ``composition`` {``a_alone``, ``a_in_sum``, ``b_alone``,
    ``b_in_sum``: (n,)} (absent without a second direction); all nested lists, saved in the JSON.
    meta["timestep_cosines"]: {"timesteps": (K,), "cosines": (K, K)} of a per-timestep direction;
    meta["validity_read"]: whether the reader tells valid images from failed ones (the digits
    reader does not: its validity column is then all ones and says nothing).
    """

    model: str
    space: str
    factor: str
    target: str
    strengths: list
    mean_change: list
    spread: list
    slope: float
    r2: float
    sign_flip: bool
    specificity: dict
    validity: list
    n: int
    steps: int
    t_edit: int
    composition: dict | None = None
    robustness: dict | None = None
    timestep_consistency: float | None = None
    meta: dict = field(default_factory=dict)
    per_sample: dict = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One CSV row per strength."""
        return [{"strength": s, "mean_change": self.mean_change[i], "spread": self.spread[i],
                 "validity": self.validity[i], **{f"changed_{k}": v[i] for k, v in self.specificity.items()}}
                for i, s in enumerate(self.strengths)]

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """``path``.json (everything) and ``path``.csv (per-strength rows), each written atomically."""
        return save_json_csv(path, asdict(self), self.rows())

    @classmethod
    def load(cls, path: str | Path) -> "EditProperties":
        path = Path(path)
        if path.suffix != ".json":
            path = path.with_name(path.name + ".json")
        return cls(**json.loads(path.read_text()))


# -- running the edits -----------------------------------------------------------------------------
def _class_index(reader: Any, factor: str, target: Any) -> int | None:
    if target is None:
        return None
    names = list(reader.classes[factor])
    if isinstance(target, str):
        if target not in names:
            raise ValueError(f"target {target!r} is not a class of {factor!r}: one of {', '.join(names)}")
        return names.index(target)
    return int(target)


def _editor(model: Any, space: str, x_T: torch.Tensor, t_edit: int, steps: int, prompt: Any = None):
    """strength, direction -> edited clean images (n, *x_shape); and the unedited images."""

    def run(fn: Any) -> Any:
        with torch.no_grad():
            return fn()

    if space == "h":
        base = run(lambda: sample(model, noise=x_T, steps=steps, prompt=prompt, progress=False).result)
        return base, lambda s, d: run(lambda: asyrp(model, x_T, d, strength=s, t_edit=t_edit, t_boost=0, steps=steps,
                                                    prompt=prompt, progress=False).result)
    tr = run(lambda: sample(model, noise=x_T, steps=steps, prompt=prompt, progress=False))
    ts = tr.timesteps.tolist()
    if t_edit not in ts:
        raise ValueError(f"t_edit={t_edit} is not on the {steps}-step grid {ts}: pick one of its timesteps")
    x_t = tr.xs[ts.index(t_edit)]
    base = run(lambda: denoise(model, x_t, t_edit, steps=steps, prompt=prompt, progress=False).result)
    return base, lambda s, d: run(lambda: edit_x(model, x_t, t_edit, d, strength=s, steps=steps, prompt=prompt,
                                                 progress=False).result)


def _noisy(direction: Direction, scale: float, seed: int) -> Direction:
    g = torch.Generator().manual_seed(seed)
    v = direction.vectors
    z = torch.randn(v.shape, generator=g, dtype=v.dtype)
    z = z * (v.flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, *[1] * (v.dim() - 1))
    return Direction(v + scale * z, direction.timesteps, direction.space, direction.model,
                     {**direction.meta, "noise": scale})


def edit_properties(model: Any, direction: Direction, *, space: str = "x", factor: str, target: Any = None,
             strengths: Sequence[float] = (-2, -1, 0, 1, 2), n: int = 16, steps: int = 20, t_edit: int | None = None,
             second: Direction | None = None, second_factor: str | None = None, second_target: Any = None,
             noise: float = 0.5, seed: int = 0, prompt: Any = None, progress: bool | None = None) -> EditProperties:
    """The property table of ``direction`` on ``model`` (n samples from ``seed``).

    space: ``"x"`` (direction x-space; edit_x at t_edit, default the grid step nearest 500) or
    ``"h"`` (asyrp on [T, t_edit], default the same, boosting off). factor: a factor the model's
    reader reads (shapes: ``"colour"``, ``"shape"``, ``"size"``; digits: ``"digit"``); target: the
    class the edit aims for (name or index; None: the class whose fraction grows most at the
    largest strength). second /
    second_factor / second_target: a second direction for the composition test (edit with
    ``d + second`` at the largest strength). noise: relative norm of the Gaussian noise of the
    robustness test (at the largest strength). prompt: the generation prompt of a text model
    (required there; the same prompt is used for every edit). Costs (len(strengths) + 3 or 5)
    edits of n samples.

    >>> import diffgeo
    >>> d = Direction(0.1 * torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([-1]),
    ...               "x", "shapes")
    >>> t = edit_properties(diffgeo.load("shapes"), d, factor="colour", strengths=(-1, 0, 1), n=2, steps=2, progress=False)
    >>> t.space, t.factor, len(t.mean_change)
    ('x', 'colour', 3)
    """

    if space not in ("x", "h"):
        raise ValueError(f"space must be 'x' or 'h', got {space!r}")
    if not isinstance(direction, Direction):
        raise TypeError(f"direction must be a diffgeo.editing.directions.Direction, got {type(direction).__name__}")
    direction.check(model, space)
    name = entry(model).reader
    if name is None:
        raise ValueError(f"no reader is registered for {model.name} in diffgeo.models.zoo: edit_properties needs one")
    reader = get_reader(name)
    if factor not in reader.classes:
        raise ValueError(f"factor {factor!r} is not read by the {name} reader: one of {', '.join(reader.classes)}")
    strengths = [float(s) for s in strengths]
    if 0.0 not in strengths or not all(math.isfinite(s) for s in strengths):
        raise ValueError(f"strengths must be finite and include 0, got {strengths}")
    if n < 1 or steps < 2:
        raise ValueError(f"n must be >= 1 and steps >= 2, got n={n}, steps={steps}")
    t_edit = _default_t_edit(model, steps) if t_edit is None else int(t_edit)
    x_T = torch.randn(n, *model.x_shape, generator=torch.Generator().manual_seed(seed)).to(model.device, model.dtype)
    base, edit = _editor(model, space, x_T, t_edit, steps, prompt)
    base_read = reader.read(base)
    reads = []
    for s in progress_bar(strengths, desc="edit properties", progress=progress):
        reads.append(reader.read(edit(s, direction)))
    top = strengths.index(max(strengths))
    tgt = _class_index(reader, factor, target)
    if tgt is None:
        k = len(reader.classes[factor])
        gain = torch.bincount(reads[top][factor], minlength=k) - torch.bincount(base_read[factor], minlength=k)
        tgt = int(gain.argmax())

    def hit(r: dict, f: str, c: int) -> torch.Tensor:
        return (r[f] == c).double()

    change = torch.stack([hit(r, factor, tgt) - hit(base_read, factor, tgt) for r in reads])
    others = [f for f in reader.classes if f != factor]
    other_changed = {f: torch.stack([r[f] != base_read[f] for r in reads]) for f in others}
    valid = torch.stack([r.get("valid", torch.ones(n, dtype=torch.bool)) for r in reads])
    st = edit_statistics(torch.tensor(strengths), change, other_changed, valid)
    # Identity at strength 0: the strength-0 edit must reproduce the unedited images bit for bit.
    zero_err = float((edit(0.0, direction) - base).abs().max())
    smax = max(strengths)
    robust = {"noise": noise, "strength": smax, "validity": st["validity"][top]}
    r_noisy = reader.read(edit(smax, _noisy(direction, noise, seed + 1)))
    robust["validity_noisy"] = float(r_noisy.get("valid", torch.ones(n, dtype=torch.bool)).double().mean())
    robust["change_noisy"] = float((hit(r_noisy, factor, tgt) - hit(base_read, factor, tgt)).mean())
    per_sample: dict[str, Any] = {
        "change": change.tolist(), "valid": valid.double().tolist(),
        "base_target": hit(base_read, factor, tgt).tolist(),
        "other_changed": {f: v.double().tolist() for f, v in other_changed.items()},
        "robust": {"valid": valid[top].double().tolist(),
                   "valid_noisy": r_noisy.get("valid", torch.ones(n, dtype=torch.bool)).double().tolist(),
                   "change_noisy": (hit(r_noisy, factor, tgt) - hit(base_read, factor, tgt)).tolist()}}
    comp = None
    if second is not None:
        if second_factor is None or second_factor not in reader.classes:
            raise ValueError(f"second_factor must be one of {', '.join(reader.classes)} with second=, got "
                             f"{second_factor!r}")
        second.check(model, space)
        r_b = reader.read(edit(smax, second))
        t2 = _class_index(reader, second_factor, second_target)
        if t2 is None:
            k = len(reader.classes[second_factor])
            t2 = int((torch.bincount(r_b[second_factor], minlength=k)
                      - torch.bincount(base_read[second_factor], minlength=k)).argmax())
        r_ab = reader.read(edit(smax, direction + second))
        r_a = reads[top]
        d = lambda r, f, c: hit(r, f, c) - hit(base_read, f, c)  # noqa: E731
        parts = {"a_alone": d(r_a, factor, tgt), "a_in_sum": d(r_ab, factor, tgt),
                 "b_alone": d(r_b, second_factor, t2), "b_in_sum": d(r_ab, second_factor, t2)}
        comp = {"factor_b": second_factor, "target_b": reader.classes[second_factor][t2], "strength": smax,
                **{k: float(v.mean()) for k, v in parts.items()}}
        per_sample["composition"] = {k: v.tolist() for k, v in parts.items()}
    cos = None
    if not direction.constant and len(direction.vectors) > 1:
        cos = {"timesteps": direction.timesteps.tolist(), "cosines": timestep_cosines(direction).tolist()}
    return EditProperties(model=model.name, space=space, factor=factor, target=str(reader.classes[factor][tgt]),
                          strengths=strengths, mean_change=st["mean_change"], spread=st["spread"],
                          slope=st["slope"], r2=st["r2"], sign_flip=st["sign_flip"],
                          specificity=st["specificity"], validity=st["validity"], n=n, steps=steps, t_edit=t_edit,
                          composition=comp, robustness=robust,
                          timestep_consistency=timestep_consistency(direction),
                          meta={"seed": seed, "direction": direction.meta, "strength0_max_abs_diff": zero_err,
                                "base_fraction_target": float(hit(base_read, factor, tgt).mean()),
                                "prompt": prompt, "timestep_cosines": cos, "validity_read": "valid" in base_read,
                                "model_fingerprint": model_fingerprint(model)},
                          per_sample=per_sample)


def _default_t_edit(model: Any, steps: int) -> int:
    """The timestep of the ``steps``-step DDIM grid nearest 500 (the default t_edit)."""
    return min(ddim_timesteps(model, steps).tolist(), key=lambda t: abs(t - 500))


def evaluate(*args: Any, **kwargs: Any) -> EditProperties:
    """Deprecated name of :func:`edit_properties` (it read like the sample-quality evaluation of
    :mod:`diffgeo.evaluation`); it warns and will be removed in the next release.

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     evaluate(None, None)
    Traceback (most recent call last):
    ...
    TypeError: ...
    >>> caught[0].category.__name__
    'DeprecationWarning'
    """
    warnings.warn("diffgeo.editing.properties.evaluate is now edit_properties; the old name will be removed in the "
                  "next release", DeprecationWarning, stacklevel=2)
    return edit_properties(*args, **kwargs)
