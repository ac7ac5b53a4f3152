"""The edits the quality table measures, how their images are read and how one edit is scored.

A :class:`Task` is one edit of one model: a factor, its target class and (digits) the class it
starts from. :func:`read` reads every factor of a batch of images (shapes: colour, shape, size,
background, x by the probe, :func:`~diffgeo.editing.factors.read_scene`; digits: the digit
classifier); :func:`pick_samples` draws samples (generated from seeded noise, or real scenes
inverted with :func:`diffgeo.invert`) that are valid and not yet at the target; :func:`score` says
per sample whether an edit succeeded, preserved every other factor and stayed valid.

Preservation on shapes: the other class factors (colour, shape) read the same, and the continuous
factors other than the edited one (size, x, y, background), read by the probe's regression (or
fitted by :func:`~diffgeo.readers.probe.fit_scene` with ``fit=True``, which the table does on a
subset of every row as a check), move by at most :data:`TOLERANCE`. Digits have no other factor: preservation is not measured there (nan).

>>> [t.name for t in TASKS["shapes"]]
['colour:blue', 'shape:square', 'size:large', 'background:dark', 'x:right']
>>> task("digits", "digit:1->7").source
'1'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from diffgeo.editing.factors import SCENE_CLASSES, read_scene
from diffgeo.models.zoo import entry
from diffgeo.readers import get_reader
from diffgeo.readers.probe import fit_scene, validity
from diffgeo.sampling.ddim import sample
from diffgeo.sampling.inversion import invert

__all__ = ["Task", "TASKS", "TOLERANCE", "task", "read", "classes", "pick_samples", "score", "Samples"]

#: Largest change of a continuous factor that still counts as preserved (px for size, x, y; grey
#: level on [-1, 1] for background): a quarter of a size bin, 1.5 px of position, a tenth of the
#: background range. The probe reads size to 0.035 px, so these are far above its noise.
TOLERANCE = {"size": 0.33, "x": 1.5, "y": 1.5, "background": 0.1}
#: fit_scene's search when ``fit``: 3 rounds of 9-point grids around the probe's read (the probe is
#: within 0.1 px already; the default 6 x 17 costs 1 s per image on one thread, this 0.2 s).
FIT_ROUNDS, FIT_GRID = 3, 9


@dataclass(frozen=True)
class Task:
    """One edit: ``factor`` to ``target`` on ``model`` (``source``: the class it starts from, or None: any other)."""

    model: str
    factor: str
    target: str
    source: str | None = None

    @property
    def name(self) -> str:
        """``factor:target`` or ``factor:source->target``."""
        return f"{self.factor}:{self.source}->{self.target}" if self.source else f"{self.factor}:{self.target}"


TASKS: dict[str, list[Task]] = {
    "shapes": [Task("shapes", "colour", "blue"), Task("shapes", "shape", "square"), Task("shapes", "size", "large"),
               Task("shapes", "background", "dark"), Task("shapes", "x", "right")],
    "digits": [Task("digits", "digit", "7", "1"), Task("digits", "digit", "8", "3")],
}


def classes(model: str) -> dict[str, tuple[str, ...]]:
    """{factor: class names} the table reads on ``model``.

    >>> classes("digits")["digit"][:3]
    ('0', '1', '2')
    """
    if model == "shapes":
        return dict(SCENE_CLASSES)
    if model == "digits":
        return {"digit": tuple(str(i) for i in range(10))}
    raise ValueError(f"the edit-quality table knows the models {', '.join(TASKS)}, not {model!r}")


def task(model: str, name: str) -> Task:
    """The task named ``name`` (``factor:target`` or ``factor:source->target``) on ``model``; bad factors
    and targets raise a ValueError listing the known ones.

    >>> task("shapes", "colour:green").target
    'green'
    """
    known = classes(model)
    factor, _, rest = str(name).partition(":")
    if factor not in known:
        raise ValueError(f"unknown factor {factor!r} on {model}: known factors are {', '.join(known)}")
    source, _, target = rest.rpartition("->")
    for c in (target, source) if source else (target,):
        if c not in known[factor]:
            raise ValueError(f"{c!r} is not a class of {factor!r}: known ones are {', '.join(known[factor])}")
    return Task(model, factor, target, source or None)


def read(model: str, images: torch.Tensor) -> dict[str, Any]:
    """Every factor of ``images`` (N, *x_shape): {factor: (N,) int64, "valid": (N,) bool}; shapes add
    "continuous" (probe's size, x, y, background).

    >>> from diffgeo.data.shapes import make_scenes
    >>> sorted(read("shapes", make_scenes(2, seed=0).images))
    ['background', 'colour', 'continuous', 'shape', 'size', 'valid', 'x']
    """
    if model == "shapes":
        return read_scene(images)
    r = dict(get_reader(entry(model).reader).read(images))
    r.setdefault("valid", torch.ones(len(images), dtype=torch.bool))
    return r


def _continuous(model: str, images: torch.Tensor, fit: bool) -> dict[str, torch.Tensor] | None:
    if model != "shapes":
        return None
    f = validity(images).factors
    if fit and len(images):
        f = fit_scene(images, f, rounds=FIT_ROUNDS, grid=FIT_GRID).factors
    return {k: getattr(f, k).float() for k in TOLERANCE}


@dataclass(frozen=True)
class Samples:
    """Samples to edit: x_T (n, *x_shape) and their unedited images (n, *x_shape), reads and
    continuous fits; ``real`` (n, *x_shape) the real scenes they were inverted from (else None)."""

    x_T: torch.Tensor
    images: torch.Tensor
    reads: dict
    continuous: dict | None
    real: torch.Tensor | None = None


def pick_samples(model: Any, t: Task, n: int, seed: int, *, steps: int = 10, real: bool = False,
                 prompt: Any = None, fit: bool = False, progress: bool | None = False, max_draws: int = 4000) -> Samples:
    """n samples of ``model`` that are valid and do not read ``t.target`` (digits: read ``t.source``),
    from seeded noise (``real=False``) or real scenes of the zoo (``real=True``, inverted on the
    ``steps`` grid). Draws batches of 64 from ``seed`` until n are found (at most ``max_draws``).

    >>> import diffgeo
    >>> s = pick_samples(diffgeo.load("shapes"), task("shapes", "colour:blue"), 2, seed=0, steps=2, fit=False)
    >>> s.x_T.shape, bool((s.reads["colour"] != 4).all())
    (torch.Size([2, 3, 32, 32]), True)
    """
    names = classes(t.model)[t.factor]
    keep_x, keep_img, keep_real, got, batch = [], [], [], 0, 0
    kw = {"prompt": prompt} if model.is_conditional else {}
    while got < n:
        if batch * 64 >= max_draws:
            raise RuntimeError(f"only {got} of {n} usable samples for {t.name} in {max_draws} draws")
        s = seed * 1000 + batch
        with torch.no_grad():
            if real:
                imgs_real = entry(model).real_images(64, s).to(model.device, model.dtype)
                x_T = invert(model, imgs_real, steps=steps, progress=progress, **kw).result
            else:
                x_T = torch.randn(64, *model.x_shape, generator=torch.Generator().manual_seed(s)).to(model.device,
                                                                                                     model.dtype)
            img = sample(model, noise=x_T, steps=steps, progress=progress, **kw).result
        r = read(t.model, img)
        ok = r["valid"] & (r[t.factor] != names.index(t.target))
        if t.source is not None:
            ok &= r[t.factor] == names.index(t.source)
        keep_x.append(x_T[ok])
        keep_img.append(img[ok])
        if real:
            keep_real.append(imgs_real[ok])
        got += int(ok.sum())
        batch += 1
    x_T, img = torch.cat(keep_x)[:n], torch.cat(keep_img)[:n]
    return Samples(x_T, img, read(t.model, img), _continuous(t.model, img, fit),
                   torch.cat(keep_real)[:n] if real else None)


def score(t: Task, base: Samples, edited: torch.Tensor, *, fit: bool = False) -> dict[str, torch.Tensor]:
    """Per sample (n,) bool: ``success`` (reads the target), ``preserved`` (every other factor kept, see
    the module docstring; all True on digits, where ``preservation_read`` is False), ``valid``, and
    ``clean`` (all three); ``kept``: {other factor: (n,) bool, that factor kept}. ``fit``: continuous factors by fit_scene (``base.continuous`` must then
    be fitted too).

    >>> from diffgeo.data.shapes import make_scenes
    >>> imgs = make_scenes(4, seed=1).images
    >>> b = Samples(torch.zeros(4, 3, 32, 32), imgs, read("shapes", imgs), _continuous("shapes", imgs, False))
    >>> s = score(Task("shapes", "colour", "blue"), b, imgs, fit=False)
    >>> s["preserved"].tolist(), s["preservation_read"]
    ([True, True, True, True], True)
    """
    r = read(t.model, edited)
    names = classes(t.model)[t.factor]
    success = r[t.factor] == names.index(t.target)
    kept = {f: r[f] == base.reads[f] for f in classes(t.model) if f != t.factor and f not in TOLERANCE}
    cont = _continuous(t.model, edited, fit)
    if cont is not None:
        kept |= {f: (cont[f] - base.continuous[f]).abs() <= tol for f, tol in TOLERANCE.items() if f != t.factor}
    preserved = torch.ones(len(edited), dtype=torch.bool)
    for k in kept.values():
        preserved &= k
    valid = r["valid"]
    return {"success": success, "preserved": preserved, "valid": valid, "clean": success & preserved & valid,
            "preservation_read": cont is not None, "kept": kept}
