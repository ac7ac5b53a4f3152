"""The traversal dashboard's direction menu and the directions behind its entries that are not a
local-basis vector: the named directions shipped with the model (:mod:`diffgeo.editing.named`,
first in the menu: the edits the edit-quality table chose), mean differences of h between two
groups of scenes, and principal components of h.

>>> menu("shapes", 1)[0].startswith(NAMED), menu("shapes", 1)[-4:-2]
(True, ['mean difference: red -> blue', 'mean difference: circle -> square'])
"""

from __future__ import annotations

from typing import Any

import torch

import diffgeo.editing.directions as directions
from diffgeo.data.shapes import render, sample_factors
from diffgeo.editing.named import list_named, named_info
from diffgeo.models.zoo import entry

__all__ = ["NAMED", "MEAN_DIFFERENCES", "menu", "named_name", "named_summary", "group_direction"]

#: Menu prefix of a named direction ("named: colour:blue").
NAMED = "named: "
#: Mean-difference directions offered for models read by the shapes reader:
#: name -> (factor, class index of group a, of group b) in diffgeo.data.shapes' SHAPES / COLOURS.
MEAN_DIFFERENCES = {"mean difference: red -> blue": ("colour", 0, 4),
                    "mean difference: circle -> square": ("shape", 0, 1)}


def menu(model: Any, k: int) -> list[str]:
    """The direction menu: the model's named directions, its k local-basis vectors, the mean
    differences (models read by the shapes reader) and two principal components of h.

    >>> menu("someone/else", 2)
    ['local basis v1', 'local basis v2', 'PCA of h, component 1', 'PCA of h, component 2']
    """
    name = model if isinstance(model, str) else getattr(model, "name", "")
    names = [NAMED + n for n in list_named(name)] if name else []
    names += [f"local basis v{j + 1}" for j in range(k)]
    if entry(model).reader == "shapes":
        names += list(MEAN_DIFFERENCES)
    return names + [f"PCA of h, component {c + 1}" for c in range(2)]


def named_name(direction: str) -> str | None:
    """The shipped name of a menu entry, or None when it is not a named direction.

    >>> named_name("named: colour:blue"), named_name("local basis v1")
    ('colour:blue', None)
    """
    return direction[len(NAMED):] if direction.startswith(NAMED) else None


def named_summary(model: Any, name: str) -> str:
    """One line on how a named direction was chosen: method, space, shipped strength and t_edit,
    success and preservation with their n (or that it is provisional).

    >>> "colour:blue" in named_summary("shapes", "colour:blue")
    True
    """
    row = named_info(model, name)

    def pct(key: str) -> str:
        v = row.get(key)
        return "not measured" if v is None else f"{float(v):.0%}"

    strength = float(row.get("strength", float("nan")))
    text = (f"{name}: {row.get('method', '?')} ({row.get('space')}-space), shipped strength {strength:.3g} "
            f"at t_edit {row.get('t_edit')}; success {pct('success')}, preservation {pct('preservation')}, "
            f"clean {pct('clean')} (n = {row.get('n', 0)})")
    return text + (" - provisional" if row.get("provisional") else "")


def group_direction(model: Any, direction: str, *, seed: int, steps: int, prompt: Any = None) -> Any:
    """The h :class:`~diffgeo.editing.directions.Direction` of a mean-difference or PCA menu entry:
    mean h of 16 scenes of group b minus group a (the other factors shared, drawn with ``seed +
    20_000``), or a principal component of h over 8 samples from ``seed + 30_000``.

    >>> import diffgeo
    >>> d = group_direction(diffgeo.load("shapes"), "PCA of h, component 1", seed=0, steps=2)
    >>> d.space, d.shape
    ('h', (128, 8, 8))
    """
    if direction in MEAN_DIFFERENCES:
        factor, a, b = MEAN_DIFFERENCES[direction]
        f = sample_factors(16, seed=seed + 20_000)
        base = getattr(f, factor) * 0
        return directions.mean_difference(model, render(f.replace(**{factor: base + a})),
                                          render(f.replace(**{factor: base + b})), steps=steps, prompt=prompt)
    if not direction.startswith("PCA of h, component "):
        raise ValueError(f"{direction!r} is not a mean-difference or PCA direction")
    component = int(direction.rsplit(" ", 1)[1]) - 1
    x_T = torch.randn(8, *model.x_shape, generator=torch.Generator().manual_seed(seed + 30_000))
    return directions.pca(model, x_T.to(model.device, model.dtype), component, steps=steps, prompt=prompt)
