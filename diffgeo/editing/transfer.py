"""Edit transfer across samples: carry a direction found on sample A to samples B, C, ... by parallel
transport (:func:`diffgeo.transport`, both variants) and measure how consistent the edit is.

(Not to be confused with analysis 4b's ``edit_transfer`` in :mod:`diffgeo.analyses.discrepancy`,
which carries a direction across *timesteps* of one trajectory.)

:func:`transfer_edit` takes local bases at one timestep (A's and one per target, from
:func:`diffgeo.local_basis`), transports A's v_i (or a vector in A's tangent space) into each
target's tangent space ``via="h"`` (Park et al.: through H with the tangent bases u) and
``via="x"`` (projection in X), edits every target with :func:`diffgeo.edit_x` along its transported
direction, and reports:

- geometry: ``cos_nearest``, the |cosine| between the transported direction and the target's own
  nearest basis vector (1: the direction is one of B's basis vectors; 1/sqrt(k) at worst), its index
  ``nearest``, and ``agreement``, the |cosine| between the two transports;
- the reader (:mod:`diffgeo.readers`, the model's one from :mod:`diffgeo.models.zoo`): the intended factor
  (given, or the first one A's own edit changes), its class before and after each target's edit,
  the fraction of targets whose factor changes (``changed``) and the fraction that change the same
  way as A (``same_way``: they end in the class A's edit ends in, having started elsewhere), with
  Wilson 95% intervals in :meth:`Transfer.summary`.

>>> import torch, diffgeo
>>> from diffgeo.geometry.basis import exact_basis
>>> f = lambda x: torch.tanh(x) * torch.arange(1.0, 4.0)
>>> a = exact_basis(f, torch.zeros(3), None, 2)
>>> d, cos, idx = transport_all(a, [a, exact_basis(f, torch.full((3,), 0.1), None, 2)], 0, via="x")
>>> [round(c, 6) for c in cos.tolist()], idx.tolist()
([1.0, 1.0], [0, 0])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from diffgeo.core.checks import check_float, check_int
from diffgeo.core.io import load_tensors_json, save_tensors_json
from diffgeo.evaluation.stats import wilson_interval
from diffgeo.editing.xspace import edit_x
from diffgeo.geometry.basis import LocalBasis
from diffgeo.geometry.subspaces import transport
from diffgeo.models.zoo import entry
from diffgeo.readers import get_reader

__all__ = ["Transfer", "transfer_edit", "transport_all", "wilson", "VIAS"]

logger = logging.getLogger(__name__)
VIAS = ("h", "x")


#: The old name of :func:`diffgeo.evaluation.stats.wilson_interval` (deprecated: removed in the next release).
wilson = wilson_interval


@dataclass(frozen=True)
class Transfer:
    """A direction of A carried to B targets and the edits it makes. V = len(vias).

    directions: (V, B, *x_shape) transported unit directions; cos_nearest: (V, B) float64 |cos|
    with the target's nearest basis vector, nearest: (V, B) its index; agreement: (B,) |cos|
    between the via-h and via-x transports (nan unless both were run). factor: the reader's
    intended factor (None without a reader, or when A's own edit changes nothing);
    source_before / source_after: A's class of it before / after its own edit (-1: none);
    before: (B,) the targets' class unedited; after: (V, B) edited; valid: (V, B) reader validity
    of the edited targets (True where the reader cannot tell).
    """

    model: str
    t: int
    strength: float
    vias: tuple[str, ...]
    directions: torch.Tensor
    cos_nearest: torch.Tensor
    nearest: torch.Tensor
    agreement: torch.Tensor
    factor: str | None
    source_before: int
    source_after: int
    before: torch.Tensor
    after: torch.Tensor
    valid: torch.Tensor
    meta: dict = field(default_factory=dict)

    @property
    def changed(self) -> torch.Tensor:
        """(V,) fraction of targets whose intended factor changed (nan without a factor)."""
        if self.factor is None:
            return torch.full((len(self.vias),), float("nan"), dtype=torch.float64)
        return (self.after != self.before[None]).double().mean(1)

    @property
    def same_way(self) -> torch.Tensor:
        """(V,) fraction of targets that end in A's edited class, having started in another one."""
        if self.factor is None:
            return torch.full((len(self.vias),), float("nan"), dtype=torch.float64)
        hit = (self.after == self.source_after) & (self.before[None] != self.source_after)
        return hit.double().mean(1)

    def summary(self) -> dict:
        """Per via: mean cos_nearest, agreement, changed and same_way with Wilson 95% intervals."""
        n = int(self.before.shape[0])
        out: dict = {"model": self.model, "t": self.t, "strength": self.strength, "factor": self.factor, "n": n,
                     "agreement_mean": float(self.agreement.mean())}
        for j, via in enumerate(self.vias):
            row = {"cos_nearest_mean": float(self.cos_nearest[j].mean()),
                   "valid": float(self.valid[j].double().mean())}
            for name in ("changed", "same_way"):
                frac = float(getattr(self, name)[j])
                row[name] = frac
                row[name + "_ci"] = list(wilson_interval(round(frac * n), n)) if frac == frac else [float("nan")] * 2
            out[f"via_{via}"] = row
        return out

    def save(self, path: str | Path) -> Path:
        """Save as one safetensors file with the metadata inside (atomic)."""
        tensors = {"directions": self.directions, "cos_nearest": self.cos_nearest, "nearest": self.nearest,
                   "agreement": self.agreement, "before": self.before, "after": self.after, "valid": self.valid}
        meta = {"kind": "Transfer", "model": self.model, "t": self.t, "strength": self.strength,
                "vias": list(self.vias), "factor": self.factor, "source_before": self.source_before,
                "source_after": self.source_after, "meta": self.meta}
        return save_tensors_json(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> "Transfer":
        """Inverse of :meth:`save`."""
        tensors, meta = load_tensors_json(path, kind="Transfer")
        return cls(model=meta["model"], t=int(meta["t"]), strength=float(meta["strength"]),
                   vias=tuple(meta["vias"]), factor=meta["factor"], source_before=int(meta["source_before"]),
                   source_after=int(meta["source_after"]), meta=meta.get("meta", {}), **tensors)


def _check_bases(source: Any, targets: Any) -> list[LocalBasis]:
    if not isinstance(source, LocalBasis):
        raise TypeError(f"source must be a LocalBasis (diffgeo.local_basis at A's x_t), got {type(source).__name__}")
    if isinstance(targets, LocalBasis) or not isinstance(targets, Sequence) or len(targets) == 0:
        raise TypeError("targets must be a non-empty list of LocalBasis (one per target sample, same t as source)")
    for j, b in enumerate(targets):
        if not isinstance(b, LocalBasis):
            raise TypeError(f"targets[{j}] must be a LocalBasis, got {type(b).__name__}")
        if b.t != source.t:
            raise ValueError(f"targets[{j}] is a basis at t={b.t}, the source's at t={source.t}: transfer works "
                             "at one timestep; compute every basis at the same t")
        if tuple(b.v.shape[1:]) != tuple(source.v.shape[1:]):
            raise ValueError(f"targets[{j}] lives in {tuple(b.v.shape[1:])}, the source in "
                             f"{tuple(source.v.shape[1:])}")
    return list(targets)


def _check_in_tangent_space(source: LocalBasis, direction: int | torch.Tensor) -> None:
    """Refuse a vector direction with (numerically) no part in A's tangent space: its coordinates
    V_A d are then rounding noise, |V_A d| ~ eps |d|, and transporting them as a unit vector would
    edit along noise. The bound sqrt(eps) of the working precision (3.5e-4 in float32) can fire there."""
    if not isinstance(direction, torch.Tensor):
        k = len(source.s)
        if check_int(direction, "direction", min=0) >= k:
            raise ValueError(f"direction index {direction} is out of range: the source basis has k={k} vectors")
        return
    if tuple(direction.shape) != tuple(source.v.shape[1:]):
        raise ValueError(f"direction has shape {tuple(direction.shape)}; A's tangent vectors have shape "
                         f"{tuple(source.v.shape[1:])}")
    if not direction.is_floating_point() or not bool(torch.isfinite(direction).all()):
        raise ValueError("direction must be a finite floating-point vector")
    d = direction.reshape(-1).double()
    norm = float(d.norm())
    if norm == 0.0:
        raise ValueError("direction is the zero vector: it has no direction to transport")
    eps = max(torch.finfo(direction.dtype).eps, torch.finfo(source.v.dtype).eps)
    inside = float((source.v_flat.double() @ d).norm()) / norm
    if inside <= eps ** 0.5:
        raise ValueError(f"direction is orthogonal to A's tangent space: only {inside:.1e} of its norm lies in "
                         f"span(v_A) (below sqrt(eps) = {eps ** 0.5:.1e} of {direction.dtype}), which is rounding "
                         "noise; transport a vector of A's tangent space (e.g. an index i for v_i)")


def transport_all(source: LocalBasis, targets: Sequence[LocalBasis], direction: int | torch.Tensor, *,
                  via: str = "h") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Transport ``direction`` of ``source`` into each target: (directions (B, *x_shape), |cos| with each
    target's nearest basis vector (B,) float64, its index (B,) int64). See :func:`diffgeo.transport`.

    >>> from diffgeo.geometry.basis import exact_basis
    >>> a = exact_basis(lambda x: torch.tanh(x) * torch.arange(1.0, 4.0), torch.zeros(3), None, 2)
    >>> dirs, cos, idx = transport_all(a, [a], 1)   # onto itself: v_1, |cos| 1 with v_1
    >>> dirs.shape, [round(c, 4) for c in cos.tolist()], idx.tolist()
    (torch.Size([1, 3]), [1.0], [1])
    """
    targets = _check_bases(source, targets)
    dirs = torch.stack([transport(source, b, direction, via=via) for b in targets])
    cos = torch.stack([(b.v_flat.double() @ d.reshape(-1).double()).abs() for b, d in zip(targets, dirs)])
    best = cos.max(1)
    return dirs, best.values, best.indices


def _reader(model: Any, reader: Any) -> Any:
    if reader is False:
        return None
    if reader is None:

        name = entry(model).reader
        if name is None:
            return None
        reader = name
    if isinstance(reader, str):

        return get_reader(reader)
    if not callable(getattr(reader, "read", None)):
        raise TypeError(f"reader must be a reader name, an object with .read(images), None or False; got "
                        f"{type(reader).__name__}")
    return reader


def transfer_edit(model: Any, source: LocalBasis, targets: Sequence[LocalBasis],
                  direction: int | torch.Tensor = 0, *, strength: float, vias: Sequence[str] = VIAS, steps: int = 50,
                  reader: Any = None, factor: str | None = None, progress: bool | None = None,
                  **edit_kwargs: Any) -> Transfer:
    """Carry A's ``direction`` to every target by parallel transport, edit each, and measure consistency.

    source: A's :class:`~diffgeo.geometry.basis.LocalBasis` at x_t (its ``x`` and ``meta["t"]`` give the
    point); targets: one basis per target sample at the same t; direction: an index i (A's v_i)
    or a vector (*x_shape) in A's tangent space. Each target is edited with
    :func:`diffgeo.edit_x` (``x_t + strength d`` by default, then ``steps`` DDIM steps; other
    keywords such as ``method``, ``prompt``, ``use_clipped_model_output`` go to it), A along its own
    (unit) direction. ``reader``: a reader name or object (default: the model's, from
    :mod:`diffgeo.models.zoo`; ``False`` or no registered reader: only the geometric numbers); ``factor``: the intended factor
    (default: the first factor A's own edit changes; if it changes none a warning is logged and the
    reader numbers are nan). Cost: (1 + V) edits of B + 1 samples, V = len(vias).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> bases = [diffgeo.local_basis(m, x[i:i + 1], 500, 1, seed=0, progress=False) for i in range(2)]
    >>> r = transfer_edit(m, bases[0], bases, 0, strength=5.0, steps=2, reader=False, progress=False)
    >>> r.directions.shape, [round(c, 4) for c in r.cos_nearest[:, 0].tolist()]   # onto itself: v_0
    (torch.Size([2, 2, 3, 32, 32]), [1.0, 1.0])
    """

    targets = _check_bases(source, targets)
    strength = check_float(strength, "strength")
    steps = check_int(steps, "steps", min=1, max=model.num_train_timesteps)
    if isinstance(vias, (str, bytes)):
        raise TypeError(f"vias must be a sequence of values among {VIAS}, got the string {vias!r} (write ['h'])")
    vias = tuple(vias)
    if not vias or any(v not in VIAS for v in vias) or len(set(vias)) != len(vias):
        raise ValueError(f"vias must be distinct values among {VIAS}, got {vias!r}")
    for what, b in [("source", source), *((f"targets[{j}]", b) for j, b in enumerate(targets))]:
        made_on = b.meta.get("model")
        if made_on is not None and made_on != model.name:
            raise ValueError(f"{what} is a basis of model {made_on!r}, not {model.name!r}: compute every basis on "
                             "the model you edit with")
    _check_in_tangent_space(source, direction)
    t = int(source.t)
    rd = _reader(model, reader)
    if rd is not None and factor is not None and factor not in rd.classes:
        raise ValueError(f"factor {factor!r} is not read by the {rd.name} reader: one of {', '.join(rd.classes)}")
    results = [transport_all(source, targets, direction, via=via) for via in vias]
    dirs = torch.stack([r[0] for r in results])
    cos = torch.stack([r[1] for r in results])
    idx = torch.stack([r[2] for r in results])
    if set(vias) == set(VIAS):
        dh, dx = dirs[vias.index("h")], dirs[vias.index("x")]
        agreement = (dh.flatten(1).double() * dx.flatten(1).double()).sum(1).abs()
    else:
        agreement = torch.full((len(targets),), float("nan"), dtype=torch.float64)
    # A's own direction, unit (an index is v_i; a vector is used as given, normalised)
    v_a = source.v[direction] if not isinstance(direction, torch.Tensor) else direction
    v_a = v_a / v_a.norm()
    x_a = source.x.reshape(1, *source.v.shape[1:]).to(model.dtype)
    x_b = torch.stack([b.x.reshape(source.v.shape[1:]) for b in targets]).to(model.dtype)
    kw = dict(steps=steps, progress=progress, **edit_kwargs)

    def run(x: torch.Tensor, d: torch.Tensor, s: float) -> torch.Tensor:
        with torch.no_grad():
            out = edit_x(model, x, t, d.to(model.dtype), strength=s, **kw).result
            return model.decode(out) if getattr(model, "is_latent", False) else out

    zero = torch.zeros_like(x_b[:1])
    imgs_a = torch.cat([run(x_a, zero, 0.0), run(x_a, v_a[None], strength)])   # A unedited, A edited
    base_b = run(x_b, zero, 0.0)
    edited = [run(x_b, dirs[j], strength) for j in range(len(vias))]
    fac, s_before, s_after = None, -1, -1
    before = torch.full((len(targets),), -1, dtype=torch.long)
    after = torch.full((len(vias), len(targets)), -1, dtype=torch.long)
    valid = torch.ones(len(vias), len(targets), dtype=torch.bool)
    if rd is not None:
        read_a = rd.read(imgs_a)
        fac = factor
        if fac is None:
            moved = [f for f in rd.classes if int(read_a[f][0]) != int(read_a[f][1])]
            fac = moved[0] if moved else None
            if fac is None:
                logger.warning("transfer: A's own edit (strength %g at t=%d) changes none of the %s reader's factors "
                               "(%s); the reader's consistency numbers are nan: raise strength or pass factor=",
                               strength, t, rd.name, ", ".join(rd.classes))
        read_b = rd.read(base_b)
        reads = [rd.read(e) for e in edited]
        if "valid" in read_b:
            valid = torch.stack([r["valid"].bool() for r in reads])
        if fac is not None:
            s_before, s_after = int(read_a[fac][0]), int(read_a[fac][1])
            before = read_b[fac].long()
            after = torch.stack([r[fac].long() for r in reads])
    meta = {"k_source": source.k, "k_targets": [b.k for b in targets], "steps": steps,
            "direction": direction if not isinstance(direction, torch.Tensor) else "vector",
            "reader": getattr(rd, "name", None), "edit_kwargs": {k: v for k, v in edit_kwargs.items()
                                                                 if isinstance(v, (str, int, float, bool, type(None)))}}
    return Transfer(model=model.name, t=t, strength=strength, vias=vias, directions=dirs, cos_nearest=cos,
                    nearest=idx, agreement=agreement, factor=fac, source_before=s_before, source_after=s_after,
                    before=before, after=after, valid=valid, meta=meta)
