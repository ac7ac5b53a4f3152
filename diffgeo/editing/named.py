"""Named edit directions shipped beside the embedded models: ``load_named("shapes", "colour:blue")``.

Each named direction is two files in ``diffgeo/embedded/directions/<model>/``: the
:class:`~diffgeo.editing.directions.Direction` or, where Asyrp's per-sample edit won, the learned f_t
(:class:`~diffgeo.editing.learned.LearnedDirection`, without its optimizer state; the row's ``kind``
says which) as safetensors, and the row of the edit-quality table
that chose it (JSON: method, space, strength, t_edit, steps, success, preservation, validity, n and
their 95% intervals; :mod:`diffgeo.editing.quality_table`). A name is ``factor:target``
(``"colour:blue"``, ``"shape:square"``, ``"size:large"``, ``"background:dark"``, ``"x:right"``) or,
for digits, ``"digit:1->7"``. :func:`named_edit` applies one as its row says (the one way to run a
named direction: x-space directions with :func:`~diffgeo.editing.xspace.edit_x` at ``t_edit``,
h-space ones and learned f_t with :func:`~diffgeo.editing.hspace.asyrp` on [T, t_edit]).

>>> "colour:blue" in list_named("shapes")
True
>>> d = load_named("shapes", "colour:blue")
>>> d.model, d.space in ("x", "h"), named_info("shapes", "colour:blue")["name"]
('shapes', True, 'colour:blue')
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from diffgeo.core.checks import check_float, check_int, check_str
from diffgeo.core.io import atomic_path
from diffgeo.editing.directions import Direction
from diffgeo.editing.hspace import asyrp
from diffgeo.editing.learned import LearnedDirection
from diffgeo.editing.xspace import edit_x
from diffgeo.sampling.ddim import ddim_timesteps, sample

__all__ = ["load_named", "list_named", "named_info", "named_edit", "ship_named", "named_file", "DIRECTIONS_DIR",
           "KINDS"]

#: The folder of the shipped named directions (one subfolder per model).
DIRECTIONS_DIR = Path(__file__).parent.parent / "embedded" / "directions"

#: What a named direction's file holds, by the row's ``kind`` (rows without one hold a Direction).
KINDS: dict[str, type] = {"Direction": Direction, "LearnedDirection": LearnedDirection}


def named_file(name: str) -> str:
    """The file stem of a direction name: ``:`` -> ``__``, ``->`` -> ``_to_`` (portable file names).

    >>> named_file("colour:blue"), named_file("digit:1->7")
    ('colour__blue', 'digit__1_to_7')
    """
    name = check_str(name, "name")
    stem = name.replace("->", "_to_").replace(":", "__")
    if not all(c.isalnum() or c in "_-." for c in stem):
        raise ValueError(f"direction name {name!r} may hold letters, digits, '_', '-', '.', one ':' and '->' only")
    return stem


def _model_name(model: Any) -> str:
    name = model if isinstance(model, str) else getattr(model, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"model must be a model name (e.g. 'shapes') or a loaded model, got {type(model).__name__}")
    return name


def _rows(model: str, folder: Path | None = None) -> dict[str, dict]:
    base = (folder or DIRECTIONS_DIR) / model
    if not base.is_dir():
        return {}
    rows = {}
    for js in sorted(base.glob("*.json")):
        row = json.loads(js.read_text())
        rows[row["name"]] = row
    return rows


def _known_models(folder: Path | None = None) -> list[str]:
    base = folder or DIRECTIONS_DIR
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def list_named(model: Any, *, folder: Path | None = None) -> list[str]:
    """The names of the directions shipped for ``model`` (a name or a loaded model), sorted.

    >>> list_named("shapes")[:1]
    ['background:dark']
    >>> list_named("no-such-model")
    []
    """
    return sorted(_rows(_model_name(model), folder))


def _row(model: Any, name: Any, folder: Path | None) -> tuple[str, dict]:
    m = _model_name(model)
    name = check_str(name, "name")
    rows = _rows(m, folder)
    if name in rows:
        return m, rows[name]
    others = [k for k in _known_models(folder) if k != m and name in _rows(k, folder)]
    if others:
        raise ValueError(f"the named direction {name!r} was made for {', '.join(others)}, not {m!r}: directions do "
                         f"not carry over between models; {m!r} has: {', '.join(sorted(rows)) or 'none'}")
    if not rows:
        raise ValueError(f"no named directions are shipped for model {m!r}; models with some: "
                         f"{', '.join(_known_models(folder)) or 'none'}")
    raise ValueError(f"unknown direction {name!r} for {m!r}: known ones are {', '.join(sorted(rows))}")


def named_info(model: Any, name: str, *, folder: Path | None = None) -> dict[str, Any]:
    """The table row that chose the named direction: name, factor, target, method, space, strength,
    t_edit, steps, success, preservation, validity (each with ``*_ci`` 95% intervals), n, ....

    >>> info = named_info("shapes", "colour:blue")
    >>> sorted(k for k in ("method", "strength", "t_edit", "success", "preservation", "validity", "n") if k in info)
    ['method', 'n', 'preservation', 'strength', 'success', 't_edit', 'validity']
    """
    return dict(_row(model, name, folder)[1])


def load_named(model: Any, name: str, *, folder: Path | None = None) -> Direction | LearnedDirection:
    """The named direction of ``model`` (``"colour:blue"``, ``"digit:1->7"``, ...; :func:`list_named`):
    a :class:`Direction`, or a :class:`~diffgeo.editing.learned.LearnedDirection` (an f_t that edits
    each sample by f_t of its own h) where the row's ``kind`` says so.

    Unknown names raise a ValueError listing the known ones; a name shipped only for another model
    says so.

    >>> load_named("shapes", "shape:square").model
    'shapes'
    """
    m, row = _row(model, name, folder)
    kind = row.get("kind", "Direction")
    if kind not in KINDS:
        raise ValueError(f"the row of {name!r} says kind {kind!r}; known kinds: {', '.join(KINDS)}")
    d = KINDS[kind].load((folder or DIRECTIONS_DIR) / m / (named_file(row["name"]) + ".safetensors"))
    if d.model != m:
        raise ValueError(f"the shipped file of {name!r} holds a direction for {d.model!r}, not {m!r}")
    return d


def ship_named(direction: Direction | LearnedDirection, row: dict[str, Any], *, folder: Path | None = None) -> Path:
    """Write a named direction (safetensors; a learned f_t without its optimizer state) and its table
    row (JSON, with ``name``, and ``kind``: what the file holds) beside the embedded models
    (``folder`` default :data:`DIRECTIONS_DIR`), each atomically. Returns the JSON path.

    >>> import tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> d = Direction(torch.ones(1, 3, 32, 32), torch.tensor([-1]), "x", "shapes")
    >>> ship_named(d, {"name": "colour:blue", "method": "toy", "space": "x", "strength": 1.0, "t_edit": 500,
    ...                "steps": 10}, folder=tmp).name
    'colour__blue.json'
    >>> list_named("shapes", folder=tmp)
    ['colour:blue']
    """
    if not isinstance(direction, tuple(KINDS.values())):
        raise TypeError(f"direction must be a Direction or a LearnedDirection, got {type(direction).__name__}")
    for key in ("name", "method", "space", "strength", "t_edit", "steps"):
        if key not in row:
            raise ValueError(f"the row of a named direction needs {key!r}; it has {', '.join(row)}")
    if row["space"] != direction.space:
        raise ValueError(f"row says space {row['space']!r}, the direction is {direction.space!r}")
    base = (folder or DIRECTIONS_DIR) / direction.model
    stem = named_file(row["name"])
    if isinstance(direction, LearnedDirection):
        direction = replace(direction, optim={})  # what edits need: the network, not the Adam state
    direction.save(base / (stem + ".safetensors"))
    js = base / (stem + ".json")
    with atomic_path(js) as tmp:
        tmp.write_text(json.dumps({**row, "model": direction.model, "kind": type(direction).__name__}, indent=1,
                                  default=str))
    return js


def named_edit(model: Any, x_T: torch.Tensor, name: str | Direction | LearnedDirection, *,
               strength: float | None = None, info: dict[str, Any] | None = None, steps: int | None = None,
               progress: bool | None = False, folder: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Edit the samples of x_T (B, *x_shape) along a named direction as its row says; returns the
    (unedited, edited) clean images, each (B, *x_shape).

    ``name``: a shipped name, or a :class:`Direction` or learned f_t with ``info`` (a row: space, t_edit, steps,
    strength; text models: the row's ``prompt``, ``""`` the empty one). ``strength``: default the row's,
    in the row's units: Asyrp (h-space rows) adds it at every step from T down to t_edit, so with
    ``steps`` other than the row's it is scaled by ``row steps / steps``, which keeps the edit's total
    (size:large, 32 fresh samples at 20 steps instead of 10: unscaled validity 0.28 and clean 0.19;
    scaled clean 0.59, against 0.62 at 10). x-space rows: DDIM from x_T to t_edit, then
    :func:`~diffgeo.editing.xspace.edit_x`; h-space rows: :func:`~diffgeo.editing.hspace.asyrp`
    (t_boost 0).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> before, after = named_edit(m, x_T, "colour:blue", steps=4)
    >>> before.shape, after.shape
    (torch.Size([1, 3, 32, 32]), torch.Size([1, 3, 32, 32]))
    """
    if isinstance(name, tuple(KINDS.values())):
        if info is None:
            raise ValueError("a Direction needs info= (a row with space, t_edit, steps and strength)")
        direction, row = name, dict(info)
    else:
        direction, row = load_named(model, name, folder=folder), named_info(model, name, folder=folder)
    s = check_float(row["strength"] if strength is None else strength, "strength")
    steps = check_int(row["steps"] if steps is None else steps, "steps", min=2)
    if row["space"] == "h" and steps != int(row["steps"]):
        s *= int(row["steps"]) / steps  # Asyrp adds s * dh at every step from T to t_edit: keep the sum
    grid = ddim_timesteps(model, steps).tolist()
    t_edit = min(grid, key=lambda t: abs(t - int(row["t_edit"])))
    direction.check(model, row["space"])
    kw = {"prompt": row.get("prompt")} if model.is_conditional else {}
    with torch.no_grad():
        if row["space"] == "h":
            base = sample(model, noise=x_T, steps=steps, progress=progress, **kw).result
            out = asyrp(model, x_T, direction, strength=s, t_edit=t_edit, t_boost=0, steps=steps,
                        progress=progress, **kw).result
            return base, out
        tr = sample(model, noise=x_T, steps=steps, progress=progress, **kw)
        x_t = tr.xs[tr.timesteps.tolist().index(t_edit)]
        out = edit_x(model, x_t, t_edit, direction, strength=s, steps=steps, progress=progress, **kw).result
        return tr.result, out
