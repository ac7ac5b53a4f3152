"""Edits of one factor: the mean-difference directions of a factor's classes, the defaults of
``python -m diffgeo edit properties`` and the figure of its property tables.

>>> FACTOR_DEFAULTS["colour"][:2], properties_stem("shapes", "colour", "red", "blue")
(('red', 'blue'), 'edit_properties_shapes_colour')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

import diffgeo.data.shapes as shapes
from diffgeo.data.digits import load_digits_images
from diffgeo.editing.directions import Direction, mean_difference
from diffgeo.editing.properties import EditProperties, _default_t_edit
from diffgeo.readers.probe import validity
from diffgeo.readers.shapes import SIZE_EDGES, SIZES
from diffgeo.viz.figures import figure, save_figure
from diffgeo.viz.results import draw_edit_properties

__all__ = ["FACTOR_DEFAULTS", "factor_directions", "properties_stem", "save_properties_figure", "SCENE_CLASSES",
           "read_scene", "BINNED"]

#: Continuous shapes factors the table reads as classes: factor -> (class names, inner bin edges), equal
#: thirds of the factor's range in :data:`diffgeo.data.shapes.RANGES` (size: :data:`~diffgeo.readers.shapes.SIZES`).
BINNED: dict[str, tuple[tuple[str, ...], tuple[float, float]]] = {
    "size": (SIZES, SIZE_EDGES),
    "background": (("dark", "medium", "light"), (-0.8 + 1.0 / 3.0, -0.8 + 2.0 / 3.0)),
    "x": (("left", "centre", "right"), (11.0 + 10.0 / 3.0, 11.0 + 20.0 / 3.0)),
}
#: Every factor of a shapes scene the edit-quality table edits, with its classes.
SCENE_CLASSES: dict[str, tuple[str, ...]] = {"colour": shapes.COLOURS, "shape": shapes.SHAPES,
                                             **{k: v[0] for k, v in BINNED.items()}}

#: factor -> (a, b, second factor, (second a, second b)): the default edit a -> b of the command line
#: and the direction it is composed with (None: the reader reads no second factor, e.g. digits).
FACTOR_DEFAULTS: dict[str, tuple[str, str, str | None, tuple[str, str] | None]] = {
    "colour": ("red", "blue", "shape", ("circle", "square")),
    "shape": ("circle", "square", "colour", ("red", "blue")),
    "size": ("small", "large", "colour", ("red", "blue")),
    "digit": ("1", "7", None, None),
}


def read_scene(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every factor of shapes scenes (N, 3, 32, 32) in [-1, 1], read by the probe (:func:`~diffgeo.readers.probe.validity`):
    {"colour", "shape", "size", "background", "x": (N,) int64 class indices into :data:`SCENE_CLASSES`,
    "valid": (N,) bool, "continuous": {"size", "x", "y", "background": (N,) float}}.

    >>> from diffgeo.data.shapes import make_scenes
    >>> s = make_scenes(16, seed=2)
    >>> r = read_scene(s.images)
    >>> bool((r["colour"] == s.factors.colour).float().mean() > 0.9), sorted(r["continuous"])
    (True, ['background', 'size', 'x', 'y'])
    """
    val = validity(images)
    f = val.factors
    out: dict[str, Any] = {"colour": f.colour, "shape": f.shape, "valid": val.valid,
                           "continuous": {k: getattr(f, k).float() for k in shapes.CONTINUOUS}}
    for name, (_classes, edges) in BINNED.items():
        out[name] = torch.bucketize(getattr(f, name).float(), torch.tensor(edges))
    return out


def _group_images(model: Any, factor: str, a: str, b: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean images (n, *x_shape) of the groups a and b of ``factor``: shapes scenes that differ only
    in the factor (size: the middle of the size bin), or real UCI digits of classes a and b."""
    if factor == "digit":

        if tuple(model.x_shape) != (1, 16, 16):
            raise ValueError(f"factor 'digit' needs the digits model (x of shape (1, 16, 16)), not {model.name}")
        d = load_digits_images()
        g = torch.Generator().manual_seed(seed)
        out = []
        for c in (a, b):
            if str(c) not in [str(i) for i in range(10)]:
                raise ValueError(f"digit classes are '0'..'9', got {c!r}")
            idx = (d.labels == int(c)).nonzero().flatten()
            out.append(d.images[idx[torch.randperm(len(idx), generator=g)[:n]]].clamp(-1, 1))
        return out[0], out[1]

    if tuple(model.x_shape) != (3, shapes.RESOLUTION, shapes.RESOLUTION):
        raise ValueError(f"factor {factor!r} needs a shapes model (x of shape (3, 32, 32)), not {model.name}")
    names = SCENE_CLASSES
    if factor not in names:
        raise ValueError(f"factor must be one of {', '.join([*names, 'digit'])}, got {factor!r}")
    for c in (a, b):
        if c not in names[factor]:
            raise ValueError(f"{c!r} is not a class of {factor!r}: one of {', '.join(names[factor])}")
    f = shapes.sample_factors(n, seed=seed)
    if factor in BINNED:
        lo, hi = shapes.RANGES[factor]
        edges = [lo, *BINNED[factor][1], hi]
        mid = {c: (edges[i] + edges[i + 1]) / 2 for i, c in enumerate(names[factor])}
        return (shapes.render(f.replace(**{factor: torch.full((n,), mid[a])})),
                shapes.render(f.replace(**{factor: torch.full((n,), mid[b])})))
    ia, ib = names[factor].index(a), names[factor].index(b)
    field_ = getattr(f, factor)
    return (shapes.render(f.replace(**{factor: field_ * 0 + ia})),
            shapes.render(f.replace(**{factor: field_ * 0 + ib})))


def factor_directions(model: Any, factor: str, a: str, b: str, *, n: int = 16, steps: int = 20,
                      t_edit: int | None = None, prompt: Any = None, seed: int = 1) -> tuple[Direction, Direction]:
    """x- and h-space mean-difference directions from class ``a`` to class ``b`` of ``factor``.

    Groups: n shapes scenes that differ only in the factor (``colour`` / ``shape`` / ``size``, the
    size classes of :data:`diffgeo.readers.shapes.SIZES` rendered at the middle of their bin), or n
    real UCI digits of each class (``factor="digit"``, ``a``/``b`` in '0'..'9'), drawn with ``seed``.
    x: ``sqrt(abar_t) (mean_b - mean_a)`` at ``t_edit`` (default: the ``steps``-grid timestep
    nearest 500): the move of x_t that moves its clean component by the groups' mean difference
    (the raw pixel difference overshoots by 1 / sqrt(abar_t), 3.6x at t = 500, and wrecks
    images). h: :func:`diffgeo.editing.directions.mean_difference` on the ``steps`` grid (``prompt``
    for text models). Returns (dx, dh).

    >>> import diffgeo
    >>> dx, dh = factor_directions(diffgeo.load("shapes"), "size", "small", "large", n=2, steps=2)
    >>> dx.shape, dh.shape, dh.timesteps.tolist()
    ((3, 32, 32), (128, 8, 8), [0, 500])
    """

    xa, xb = _group_images(model, factor, a, b, n, seed)
    t = _default_t_edit(model, steps) if t_edit is None else int(t_edit)
    scale = float(model.alphas_cumprod[t]) ** 0.5
    dx = Direction(scale * (xb - xa).mean(0)[None], torch.tensor([-1]), "x", model.name,
                   {"source": "x_mean_difference", "factor": factor, "a": a, "b": b, "n": n, "seed": seed,
                    "scaled_to_t": t, "scale": scale})
    dh = mean_difference(model, xa, xb, steps=steps, seed=seed, prompt=prompt)
    dh = Direction(dh.vectors, dh.timesteps, "h", model.name,
                   {**dh.meta, "factor": factor, "a": a, "b": b})
    return dx, dh


def properties_stem(model_name: str, factor: str, a: str, b: str) -> str:
    """File stem of a factor's tables: ``edit_properties_<model>_<factor>`` (digits add ``_<a>-<b>``).

    >>> properties_stem("digits", "digit", "1", "7")
    'edit_properties_digits_digit_1-7'
    """
    return f"edit_properties_{model_name}_{factor}" + (f"_{a}-{b}" if factor == "digit" else "")


def save_properties_figure(tables: Sequence[EditProperties], path: str | Path) -> Path:
    """One panel per table (:func:`diffgeo.viz.draw.draw_edit_properties`: change, spread and validity
    against strength), side by side, saved as a PNG (atomic, :func:`diffgeo.viz.figures.save_figure`).

    >>> import tempfile, pathlib
    >>> t = EditProperties(model="shapes", space="x", factor="colour", target="blue", n=2, steps=2, t_edit=500,
    ...                    strengths=[-1.0, 0.0, 1.0], mean_change=[-0.5, 0.0, 0.5], spread=[0.1, 0.0, 0.1],
    ...                    validity=[1.0, 1.0, 1.0], specificity={"shape": [0.0, 0.0, 0.0]}, slope=0.5, r2=1.0,
    ...                    sign_flip=True)
    >>> save_properties_figure([t], pathlib.Path(tempfile.mkdtemp()) / "p.png").name
    'p.png'
    """
    tables = list(tables)
    if not tables:
        raise ValueError("no tables to draw")

    def draw(fig: Any) -> None:
        for ax, table in zip(fig.subplots(1, len(tables), squeeze=False)[0], tables):
            draw_edit_properties(ax, table)

    return save_figure(figure(draw, size=(4 * len(tables), 3)), path)
