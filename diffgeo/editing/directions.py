"""Edit directions: one type for x-space and h-space directions from every source.

A :class:`Direction` holds K vectors (K, *shape) for K timesteps (K = 1 with timesteps ``[-1]``:
the same vector at every t), the space it lives in (``"x"`` or ``"h"``) and the name of the model
it was made for (editing another model is refused). Directions scale (``2 * d``), negate (``-d``)
and add (``d_a + d_b``), and save/load as one safetensors file.

Sources: :func:`mean_difference` (mean h of one labelled group of images minus another's, per
timestep), :func:`pca` (principal components of h per timestep over samples, Haas et al., arXiv
2303.11073, with scikit-learn) and :func:`tangent` (a local-basis vector: v_i in x or u_i in h).

>>> import torch, diffgeo
>>> d = Direction(torch.ones(1, 2, 3), torch.tensor([-1]), "h", "toy")
>>> (2 * d - d).at(500).tolist()
[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

import diffgeo.models.hooks as hooks
from diffgeo.core.checks import SEED_MAX, check_int
from diffgeo.core.io import load_tensors_json, save_tensors_json
from diffgeo.models.conditioning import resolve_cond
from diffgeo.sampling.ddim import ddim_timesteps, sample

__all__ = ["Direction", "mean_difference", "pca", "tangent", "SPACES"]

SPACES = ("x", "h")
ALL_T = -1  # timestep label of a direction used at every t


@dataclass(frozen=True)
class Direction:
    """An edit direction. vectors: (K, *shape) float; timesteps: (K,) int64 ascending, or ``[-1]``
    (K = 1, every t); space: ``"x"`` or ``"h"``; model: the model's name; meta: how it was made.
    :meth:`at` picks the vector of the nearest timestep."""

    vectors: torch.Tensor
    timesteps: torch.Tensor
    space: str
    model: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be 'x' or 'h', got {self.space!r}")
        if not isinstance(self.vectors, torch.Tensor) or self.vectors.dim() < 2:
            raise ValueError("vectors must be a tensor (K, *shape), one vector per timestep")
        ts = torch.as_tensor(self.timesteps, dtype=torch.long)
        if ts.dim() != 1 or len(ts) != len(self.vectors):
            raise ValueError(f"timesteps has shape {tuple(ts.shape)} for {len(self.vectors)} vectors")
        if len(ts) > 1 and (ts[1:] <= ts[:-1]).any():
            raise ValueError("timesteps must be strictly increasing")
        if not torch.isfinite(self.vectors).all():
            raise ValueError("direction vectors contain NaN or infinite values")
        object.__setattr__(self, "timesteps", ts)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one vector."""
        return tuple(self.vectors.shape[1:])

    @property
    def constant(self) -> bool:
        return len(self.timesteps) == 1 and int(self.timesteps[0]) == ALL_T

    def at(self, t: int) -> torch.Tensor:
        """The vector (*shape) for timestep t (the nearest stored timestep)."""
        if self.constant:
            return self.vectors[0]
        return self.vectors[int((self.timesteps - int(t)).abs().argmin())]

    def check(self, model: Any, space: str) -> None:
        """Raise a ValueError unless this direction fits ``model`` in ``space`` (name and shape)."""
        if self.space != space:
            raise ValueError(f"this is an {self.space}-space direction; an {space}-space one is needed here")
        if self.model != model.name:
            raise ValueError(f"this direction was made for model {self.model!r}, not {model.name!r}: directions do not "
                             "carry over between models; make one for this model")
        want = tuple(model.h_shape if space == "h" else model.x_shape)
        if self.shape != want:
            raise ValueError(f"direction has shape {self.shape}, {model.name}'s {space} has shape {want}")

    def _combine(self, other: "Direction") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(other, Direction):
            raise TypeError(f"can only add a Direction to a Direction, not {type(other).__name__}")
        if (other.space, other.model, other.shape) != (self.space, self.model, self.shape):
            raise ValueError(f"cannot add directions of different space/model/shape: ({self.space}, {self.model}, "
                             f"{self.shape}) and ({other.space}, {other.model}, {other.shape})")
        if self.constant:
            return other.timesteps, self.vectors.expand_as(other.vectors), other.vectors
        if other.constant or torch.equal(self.timesteps, other.timesteps):
            return self.timesteps, self.vectors, other.vectors.expand_as(self.vectors)
        ts = torch.unique(torch.cat([self.timesteps, other.timesteps]))
        return ts, torch.stack([self.at(int(t)) for t in ts]), torch.stack([other.at(int(t)) for t in ts])

    def __add__(self, other: "Direction") -> "Direction":
        ts, a, b = self._combine(other)
        return Direction(a + b, ts, self.space, self.model, {"source": "sum", "terms": [self.meta, other.meta]})

    def __sub__(self, other: "Direction") -> "Direction":
        return self + (-other)

    def __mul__(self, scale: float) -> "Direction":
        if not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"a direction scales by a finite number, got {scale!r}")
        return Direction(self.vectors * float(scale), self.timesteps, self.space, self.model,
                         {**self.meta, "scale": float(scale) * float(self.meta.get("scale", 1.0))})

    __rmul__ = __mul__

    def __neg__(self) -> "Direction":
        return self * -1.0

    def save(self, path: str | Path) -> Path:
        """One safetensors file (atomic), metadata inside."""
        return save_tensors_json(path, {"vectors": self.vectors, "timesteps": self.timesteps},
                                 {"kind": "Direction", "space": self.space, "model": self.model, "meta": self.meta})

    @classmethod
    def load(cls, path: str | Path) -> "Direction":
        tensors, meta = load_tensors_json(path, kind="Direction")
        return cls(tensors["vectors"], tensors["timesteps"], meta["space"], meta["model"], meta.get("meta", {}))


def _timesteps_arg(model: Any, timesteps: Sequence[int] | None, steps: int) -> list[int]:
    """The timesteps, ascending: each an integer (not 500.7, not the string "500") of the schedule, no repeats."""
    if timesteps is None:
        return sorted(int(t) for t in ddim_timesteps(model, check_int(steps, "steps", min=1)).tolist())
    if isinstance(timesteps, (str, bytes)):
        raise TypeError(f"timesteps must be a sequence of integer timesteps, got the string {timesteps!r} "
                        "(write [500], not '500')")
    if isinstance(timesteps, torch.Tensor):
        if timesteps.is_floating_point() or timesteps.is_complex() or timesteps.dtype == torch.bool:
            raise TypeError(f"timesteps must be integer timesteps, got a {timesteps.dtype} tensor")
        timesteps = timesteps.reshape(-1).tolist()
    try:
        values = list(timesteps)
    except TypeError:
        raise TypeError(f"timesteps must be a sequence of integer timesteps, got {type(timesteps).__name__}") from None
    if not values:
        raise ValueError("timesteps is empty; give at least one timestep (or None for the steps-step DDIM grid)")
    ts = sorted(check_int(t, f"timesteps[{i}]", min=0, max=model.num_train_timesteps - 1)
                for i, t in enumerate(values))
    if len(set(ts)) != len(ts):
        raise ValueError(f"timesteps has repeated values {values}; give each timestep once")
    return ts


def _noised(model: Any, x0: torch.Tensor, t: int, seed: int) -> torch.Tensor:
    a = float(model.alphas_cumprod[t])
    g = torch.Generator().manual_seed(seed + t)
    z = torch.randn(x0.shape, generator=g).to(device=x0.device, dtype=x0.dtype)
    return a**0.5 * x0 + (1 - a) ** 0.5 * z


def _h_of(model: Any, x_t: torch.Tensor, t: int, prompt: Any, batch_size: int = 64) -> torch.Tensor:
    out = []
    for chunk in x_t.split(batch_size):
        c = resolve_cond(model, prompt, default_branch="cond", batch=len(chunk))
        out.append(model.h_fn(chunk, model.timesteps_tensor(t, len(chunk)), c))
    return torch.cat(out)


def mean_difference(model: Any, images_a: torch.Tensor, images_b: torch.Tensor, *,
                    timesteps: Sequence[int] | None = None, steps: int = 50, prompt: Any = None,
                    seed: int = 0) -> Direction:
    """mean h(x_t of group b) - mean h(x_t of group a), per timestep: the direction from a to b.

    images_a, images_b: clean images (N_a / N_b, *x_shape) of two labelled groups (e.g. shapes
    scenes that differ only in colour). Each is noised to x_t (seeded, the same noise for every
    image index) at each timestep of ``timesteps`` (default: the ``steps``-step DDIM grid).
    Text models: ``prompt`` for h (required; ``""`` is the empty prompt).
    Returns an h-space Direction with one vector per timestep.

    >>> import diffgeo
    >>> from diffgeo.data import shapes
    >>> m = diffgeo.load("shapes")
    >>> f = shapes.sample_factors(8, seed=1)
    >>> a, b = shapes.render(f.replace(colour=f.colour * 0)), shapes.render(f.replace(colour=f.colour * 0 + 4))
    >>> d = mean_difference(m, a, b, timesteps=[500])
    >>> d.shape, d.space
    ((128, 8, 8), 'h')
    """
    for name, x in (("images_a", images_a), ("images_b", images_b)):
        model.check_x(x, name)
        if not model.is_latent and float(x.detach().abs().max()) > 1.01:
            raise ValueError(f"{name} must be images in [-1, 1], got values up to {float(x.detach().abs().max()):g} "
                             "(map [0, 255] images with x / 127.5 - 1, [0, 1] images with 2 * x - 1)")
    if model.is_conditional and prompt is None:
        raise ValueError(f"{model.name} is text-conditioned: pass prompt= for h (prompt='' is the empty prompt)")
    ts = _timesteps_arg(model, timesteps, steps)
    seed = check_int(seed, "seed", min=0, max=SEED_MAX - model.num_train_timesteps)
    vecs = []
    with torch.no_grad():
        for t in ts:
            ha = _h_of(model, _noised(model, images_a, t, seed), t, prompt).mean(0)
            hb = _h_of(model, _noised(model, images_b, t, seed), t, prompt).mean(0)
            vecs.append(hb - ha)
    return Direction(torch.stack(vecs).cpu(), torch.tensor(ts), "h", model.name,
                     {"source": "mean_difference", "n_a": len(images_a), "n_b": len(images_b), "seed": seed,
                      "prompt": prompt})


def pca(model: Any, x_T: torch.Tensor, component: int = 0, *, steps: int = 50, prompt: Any = None,
        progress: bool = False) -> Direction:
    """The ``component``-th principal component of h per timestep over DDIM trajectories from x_T.

    x_T: (N, *x_shape) starting noise; the h of each sample is taken along its own DDIM path at
    every grid timestep; scikit-learn's PCA per timestep. Each component is unit norm, with its
    sign fixed so that its largest entry is positive (signs of components are arbitrary).
    Haas et al. edit with scales of about +-5 in h units.

    >>> import torch, diffgeo
    >>> m = diffgeo.load("shapes")
    >>> d = pca(m, torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), steps=3)
    >>> d.vectors.shape, d.timesteps.tolist()
    (torch.Size([3, 128, 8, 8]), [0, 333, 666])
    """
    from sklearn.decomposition import PCA


    x_T = model.check_x(x_T, "x_T")
    if len(x_T) < 2:
        raise ValueError(f"pca needs at least 2 samples in x_T, got {len(x_T)}: one sample has no variance, so "
                         "no principal component (its 'component' would be an arbitrary axis)")
    if model.is_conditional and prompt is None:
        raise ValueError(f"{model.name} is text-conditioned: pass prompt= for h (prompt='' is the empty prompt)")
    component = check_int(component, "component", min=0)
    if component >= len(x_T) - 1:
        raise ValueError(f"component must be an integer in [0, {len(x_T) - 2}]: N={len(x_T)} centred samples span "
                         f"at most N - 1 = {len(x_T) - 1} components")
    steps = check_int(steps, "steps", min=1)
    hs: list[torch.Tensor] = []
    with torch.no_grad(), hooks.capture(model.unet, model.h_module) as cap:
        traj = sample(model, noise=x_T, steps=steps, prompt=prompt, progress=progress,
                      callback=lambda _info: hs.append(cap.value.detach().cpu()))
    ts = traj.timesteps[:-1].tolist()
    vecs = []
    for h in hs:
        p = PCA(n_components=component + 1).fit(h.flatten(1).double().numpy())
        v = torch.as_tensor(p.components_[component], dtype=torch.float32)
        vecs.append((v * torch.sign(v[v.abs().argmax()])).view(h.shape[1:]))
    order = torch.tensor(ts).argsort()
    return Direction(torch.stack(vecs)[order], torch.tensor(ts)[order], "h", model.name,
                     {"source": "pca", "component": component, "n": len(x_T), "steps": steps, "prompt": prompt})


def tangent(basis: Any, index: int = 0, *, space: str = "x", model: str | None = None) -> Direction:
    """Local-basis vector ``index`` of a :class:`~diffgeo.LocalBasis` of one sample: v_i in x
    (``space="x"``) or u_i in h (``space="h"``), unit norm, used at every timestep.

    >>> import torch, diffgeo
    >>> m = diffgeo.load("shapes")
    >>> b = diffgeo.local_basis(m, torch.randn(1, 3, 32, 32), 500, k=2, seed=0)
    >>> tangent(b, 1, space="h").shape
    (128, 8, 8)
    """
    if space not in SPACES:
        raise ValueError(f"space must be 'x' or 'h', got {space!r}")
    k = len(basis.s)
    if not isinstance(index, int) or not 0 <= index < k:
        raise ValueError(f"index must be an integer in [0, {k - 1}] (the basis has k={k} vectors)")
    vec = (basis.v if space == "x" else basis.u)[index]
    if vec.dim() > 1 and vec.shape[0] == 1 and space == "x" and vec.dim() == 4:
        vec = vec[0]
    name = model or basis.meta.get("model")
    if name is None:
        raise ValueError("the basis does not record its model; pass model=")
    return Direction(vec[None].detach().cpu().float(), torch.tensor([ALL_T]), space, str(name),
                     {"source": "tangent", "index": index, "t": basis.meta.get("t"), "s": float(basis.s[index])})
