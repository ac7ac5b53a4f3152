"""The notebooks' disk cache: what a dashboard's first view costs most (local bases) is kept on
disk across sessions, so a notebook opened a second time (the next lesson, a restarted kernel)
shows its dashboards without computing them again.

:func:`notebook_cache` is the folder (``$DIFFGEO_CACHE/notebooks/<name>``, default
``~/.cache/diffgeo``); :func:`cached_basis` is :func:`diffgeo.geometry.basis.local_basis` through
:func:`diffgeo.core.sweep.sweep` with that folder: one safetensors entry per basis, keyed by the
model's fingerprint, the SHA-256 of x_t's bytes, t, k, prompt, seed and tolerance (an entry of
any other model, point or setting is never used; a corrupt one is recomputed, see
:mod:`diffgeo.core.sweep`). With ``cache=None`` it is plain ``local_basis``.

>>> import tempfile, diffgeo
>>> m = diffgeo.load("shapes")
>>> x = torch.randn(1, *m.x_shape, generator=torch.Generator().manual_seed(0))
>>> folder = tempfile.mkdtemp()
>>> a = cached_basis(m, x, 500, 1, tol=1e-2, cache=folder)   # computed and written
>>> b = cached_basis(m, x, 500, 1, tol=1e-2, cache=folder)   # read back
>>> torch.equal(a.v, b.v), b.meta["t"]
(True, 500)
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path
from typing import Any

import torch

from diffgeo.core.sweep import model_fingerprint, sweep
from diffgeo.geometry.basis import LocalBasis, local_basis

__all__ = ["notebook_cache", "cached_basis", "tensor_digest"]

_FINGERPRINTS: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()


def notebook_cache(name: str = "alignment") -> Path:
    """The notebooks' cache folder for ``name``: ``$DIFFGEO_CACHE/notebooks/name`` (default
    ``~/.cache/diffgeo``).

    >>> notebook_cache("x").name
    'x'
    """
    root = Path(os.environ.get("DIFFGEO_CACHE") or Path.home() / ".cache" / "diffgeo")
    return root / "notebooks" / name


def tensor_digest(x: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (on the CPU, contiguous).

    >>> tensor_digest(torch.zeros(2)) == tensor_digest(torch.zeros(2)), tensor_digest(torch.zeros(2)) == tensor_digest(torch.zeros(3))
    (True, False)
    """
    x = x.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    h.update(x.view(torch.uint8).numpy().tobytes() if x.numel() else b"")
    return h.hexdigest()


def _fingerprint(model: Any) -> str:
    try:
        return _FINGERPRINTS[model]
    except (KeyError, TypeError):
        fp = model_fingerprint(model)
        try:
            _FINGERPRINTS[model] = fp
        except TypeError:  # not weak-referenceable: fingerprint every time
            pass
        return fp


def cached_basis(model: Any, x: torch.Tensor, t: int, k: int, *, prompt: str | None = None, seed: int = 0,
                 tol: float = 1e-3, cache: str | Path | None = None) -> LocalBasis:
    """:func:`~diffgeo.geometry.basis.local_basis` of x (1, *x_shape) at t with k vectors, read
    from the disk cache folder ``cache`` when it holds it, else computed and written there
    (``cache=None``: computed, nothing written). Returns the :class:`LocalBasis`: v (k, *x_shape),
    u (k, *h_shape), s (k,).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> cached_basis(m, torch.zeros(1, *m.x_shape), 500, 1, tol=1e-2).v.shape
    torch.Size([1, 3, 32, 32])
    """

    def compute() -> LocalBasis:
        return local_basis(model, x, t, k, prompt=prompt, seed=seed, tol=tol, progress=False)

    if cache is None:
        return compute()

    def part(**_: Any) -> dict:
        b = compute()
        return {"v": b.v, "u": b.u, "s": b.s, "residuals": b.residuals, "x": b.x, "iterations": int(b.iterations),
                "n_products": int(b.n_products), "meta": b.meta}

    point = {"x": tensor_digest(x), "t": int(t), "k": int(k), "prompt": prompt, "seed": int(seed), "tol": float(tol)}
    r = sweep(part, [point], cache=Path(cache), name="notebook-basis", version="1",
              context={"model": _fingerprint(model)}, progress=False).results[0]
    return LocalBasis(r["v"], r["u"], r["s"], r["residuals"], r["x"], int(r["iterations"]), int(r["n_products"]),
                      dict(r["meta"]))
