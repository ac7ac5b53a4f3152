"""Local bases of x_t -> h: the top-k singular triplets of J = dh/dx_t (Park et al., NeurIPS 2023).

* :class:`LocalBasis` holds v (the local latent basis), u = J v / s (the local tangent basis), s and
  the residuals, and saves to one safetensors file.
* :func:`local_basis` finds the top-k triplets with a block Krylov method (block Lanczos on
  ``J^T J`` with full reorthogonalisation and Rayleigh-Ritz on ``J Q``), stopping on the residual
  ``||J^T J v - s^2 v|| / s^2`` (a subspace criterion; signs play no part).
* :func:`exact_basis` builds the full Jacobian (chunked) and takes its SVD, for checks.

The products come from :class:`~diffgeo.geometry.pullback.HMap`.

>>> import torch
>>> A = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))
>>> basis = local_basis(lambda x: A @ x, torch.zeros(4), None, 2, seed=0, progress=False)
>>> basis.s
tensor([4.0000, 3.0000])
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffgeo.core.checks import check_float, check_int, check_seed
from diffgeo.core.io import load_tensors_json, save_tensors_json
from diffgeo.core.progress import progress_bar
from diffgeo.geometry.krylov import KrylovSolver
from diffgeo.geometry.pullback import HMap, h_map

__all__ = ["LocalBasis", "local_basis", "exact_basis", "DEFAULT_TOL", "wrap_triplets"]

log = logging.getLogger(__name__)

DEFAULT_TOL = 1e-3


# -- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalBasis:
    """Top-k singular triplets of J = dh/dx_t at one point.

    v: (k, *x_shape), the local latent basis (unit, orthonormal); u: (k, *h_shape), the local
    tangent basis ``J v_i / s_i``; s: (k,) singular values, descending; residuals: (k,)
    ``||J^T J v_i - s_i^2 v_i|| / s_i^2``; x: (*x_shape), the point. ``iterations`` and
    ``n_products`` (Jacobian-vector products, J v and J^T u each counting one) say what it cost;
    ``meta`` holds model, t, k, seed, prompt, branch, method and tol.
    """

    v: torch.Tensor
    u: torch.Tensor
    s: torch.Tensor
    residuals: torch.Tensor
    x: torch.Tensor
    iterations: int
    n_products: int
    meta: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.s.shape[0])

    @property
    def t(self) -> int | None:
        return self.meta.get("t")

    @property
    def v_flat(self) -> torch.Tensor:
        """v as a (k, n) matrix with orthonormal rows."""
        return self.v.reshape(self.k, -1)

    @property
    def u_flat(self) -> torch.Tensor:
        """u as a (k, m) matrix with orthonormal rows."""
        return self.u.reshape(self.k, -1)

    def save(self, path: str | Path) -> Path:
        """Save as one safetensors file with the metadata inside (atomic)."""
        tensors = {"v": self.v, "u": self.u, "s": self.s, "residuals": self.residuals, "x": self.x}
        meta = {"kind": "LocalBasis", "iterations": self.iterations, "n_products": self.n_products, **self.meta}
        return save_tensors_json(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> "LocalBasis":
        """Inverse of :meth:`save`."""
        tensors, meta = load_tensors_json(path, kind="LocalBasis")
        it, n_products = int(meta.pop("iterations")), int(meta.pop("n_products"))
        return cls(tensors["v"], tensors["u"], tensors["s"], tensors["residuals"], tensors["x"], it, n_products, meta)


def _align_signs(v: torch.Tensor) -> torch.Tensor:
    """+1/-1 per row making each row's largest-magnitude entry (first on ties) positive."""
    idx = v.abs().argmax(dim=1)
    sign = torch.sign(v.gather(1, idx[:, None]))[:, 0]
    return torch.where(sign == 0, torch.ones_like(sign), sign)


def _check_k(k: int, n: int, m: int) -> int:
    k = check_int(k, "k")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > min(n, m):
        raise ValueError(f"k={k} exceeds the rank bound min(dim x, dim h) = min({n}, {m}) = {min(n, m)}")
    return k


def _finish(f: HMap, vq: torch.Tensor, uq: torch.Tensor, s: torch.Tensor, residuals: torch.Tensor, *,
            iterations: int, method: str, k: int, seed: int | None, tol: float | None, **extra: Any) -> LocalBasis:
    """Sign-align, reshape and wrap the triplets; vq (k, n), uq (k, m) = J v / s."""
    return wrap_triplets(f.x, f.h_shape, f.meta, f.n_products, vq, uq, s, residuals, iterations=iterations,
                         method=method, k=k, seed=seed, tol=tol, **extra)


def wrap_triplets(x: torch.Tensor, h_shape: tuple[int, ...], map_meta: dict, n_products: int, vq: torch.Tensor,
                  uq: torch.Tensor, s: torch.Tensor, residuals: torch.Tensor, *, iterations: int, method: str, k: int,
                  seed: int | None, tol: float | None, **extra: Any) -> LocalBasis:
    """A :class:`LocalBasis` from float64 triplets at the point x (*x_shape): vq (k, n), uq = J v / s
    (k, m), s (k,), residuals (k,); signs aligned, results in x's dtype on x's device.

    >>> vq = -torch.eye(2, dtype=torch.float64)          # signs flipped: each row's largest entry is made positive
    >>> b = wrap_triplets(torch.zeros(2), (2,), {"model": "A", "t": None}, 4, vq, torch.eye(2, dtype=torch.float64),
    ...                   torch.ones(2), torch.zeros(2), iterations=1, method="exact", k=2, seed=None, tol=None)
    >>> b.v.diagonal(), b.u.diagonal(), b.v.dtype, b.meta["method"]
    (tensor([1., 1.]), tensor([-1., -1.]), torch.float32, 'exact')
    """
    sign = _align_signs(vq)
    dtype, device = x.dtype, x.device
    v = (vq * sign[:, None]).to(device=device, dtype=dtype).reshape(k, *x.shape)
    u = (uq * sign[:, None]).to(device=device, dtype=dtype).reshape(k, *h_shape)
    meta = {**map_meta, "k": k, "seed": seed, "method": method, "tol": tol, **extra}
    meta.setdefault("prompt", None)
    meta.setdefault("branch", None)
    return LocalBasis(v, u, s.to(device=device, dtype=dtype), residuals.to(device=device, dtype=dtype), x.clone(),
                      iterations, n_products, meta)


# -- the block Krylov solver (diffgeo.geometry.krylov) driven by one point's products ---------------
def _block_krylov(f: HMap, k: int, *, block: int, tol: float, max_iter: int, seed: int,
                  progress: bool, init: torch.Tensor | None = None) -> LocalBasis:
    """Block Krylov on J^T J at one point (:class:`~diffgeo.geometry.krylov.KrylovSolver`). ``init``
    (k0, n): a starting subspace (warm start); then the first block is init plus ``WARM_GUARD`` random
    vectors and every later block is the Ritz residuals ``J^T J v - s^2 v`` of the still unconverged
    top-k (block Davidson without preconditioning), which refine a good start in few products."""
    solver = KrylovSolver(f.n, f.m, k, block=block, tol=tol, max_iter=max_iter, seed=seed, dtype=f.x.dtype,
                          device=f.x.device, init=init)
    bar = progress_bar(total=max_iter, desc=f"local basis k={k}", progress=progress, leave=False)
    try:
        while not solver.done:
            qi = solver.pending
            yi = f.jvp(qi.reshape(-1, *f.x_shape)).reshape(-1, f.m)   # J Q_i
            zi = f.vjp(yi.reshape(-1, *f.h_shape)).reshape(-1, f.n)   # J^T J Q_i
            solver.feed(yi, zi)
            bar.update(1)
            if solver.residuals is not None:
                bar.set_postfix(residual=f"{solver.worst:.1e}", products=f.n_products)
    finally:
        bar.close()
    _warn_unconverged(solver, f.n_products)
    return _finish(f, solver.vq, solver.uq, solver.s, solver.residuals, iterations=solver.iterations,
                   method="block_krylov", k=k, seed=seed, tol=tol, block=block, max_iter=max_iter)


def _warn_unconverged(solver: KrylovSolver, n_products: int) -> None:
    if not solver.converged:
        log.warning("local_basis: max residual %.2e after %d iterations (%d products) is above tol=%.1e; "
                    "raise max_iter or tol, or check the spectral gap", solver.worst, solver.iterations,
                    n_products, solver.tol)


def _default_block(k: int) -> int:
    """Block size: k up to 8, then max(8, k/6). Chosen by measurement (benchmarks/README.md): on the
    embedded model the time hardly depends on the block size while the product count grows with it."""
    return min(k, max(8, math.ceil(k / 6)))


def local_basis(model: Any, x_t: torch.Tensor, t: int | None, k: int, *, prompt: str | None = None,
                negative_prompt: str | None = None, branch: str | None = None, guidance_scale: float | None = None,
                cond: Any = None, tol: float = DEFAULT_TOL,
                max_iter: int = 30, block: int | None = None, seed: int | None = None, progress: bool | None = None,
                chunk_size: int = 64, init: "LocalBasis | torch.Tensor | None" = None,
                max_memory: int | None = None) -> LocalBasis:
    """Top-k local latent basis of x_t under the pullback metric of x_t -> h at t.

    ``model``: a :class:`~diffgeo.models.model.Model` (or a function of one sample, with ``t=None``);
    ``x_t``: (1, *x_shape) or (*x_shape). Returns a :class:`LocalBasis` with v (k, *x_shape),
    u = J v / s (k, *h_shape), s (k,) and the residuals.

    Method: block Krylov (block Lanczos on ``J^T J`` with full reorthogonalisation). Each
    iteration pushes ``block`` vectors through J (forward mode) and back through J^T (reverse
    mode), all batched; the Ritz triplets come from the eigendecomposition of ``(J Q)(J Q)^T``
    over the whole Krylov basis Q (float64). It stops when every relative residual
    ``||J^T J v - s^2 v|| / s^2 <= tol`` (a subspace criterion, independent of signs) or after
    ``max_iter`` iterations (a warning is logged). Signs are fixed so that each v's
    largest-magnitude entry is positive. ``block`` (default ``min(k, max(8, ceil(k/6)))``,
    chosen by measurement, see benchmarks/README.md) must be at least the largest multiplicity
    among the top-k singular values. ``seed=None`` draws a seed, recorded in ``meta``.

    Devices and precision: ``x_t`` may be on any device (it is moved to the model's); the products
    run on the model's device with TF32 off (:func:`diffgeo.core.precision.full_precision`) and the
    basis is returned there, in the model's dtype. Half-precision models raise a ``TypeError``.
    ``chunk_size`` caps the products per vmapped call; ``max_memory`` (bytes; default half the free
    memory of the device) may lower it, and a value below one product raises a ``ValueError`` that
    says how much one product needs. For many points at once see
    :func:`~diffgeo.geometry.batched.local_bases`.

    Warm start: ``init`` is a starting subspace, a :class:`LocalBasis` (e.g. the basis at the
    previous timestep or a neighbouring point) or a tensor (k0, *x_shape) / (k0, n) of spanning
    vectors, k0 <= k (missing directions are drawn at random). The first block is then init plus two
    random guard vectors (without them a start orthogonal to the answer would converge to other
    singular vectors) and later blocks are the residuals of the unconverged Ritz vectors. The
    stopping test is the same as for a cold start, but a cold run overshoots it in its last
    iteration while a warm one stops just below it: for the accuracy of a cold basis at ``tol``
    pass about ``tol / 3``. A start at the answer costs one block product; the saving shrinks
    with the start's angle to the answer: on the embedded model, bases 50 timesteps apart on a
    trajectory differ by 0.1 to 1.5 rad, and a warm basis there costs 0.6 to 0.9 of a cold one
    (``meta["warm"]`` is True; benchmarks/bench_trajectory_basis.py measures it). A start spanning
    exactly other singular vectors with larger singular values than the guards see is a fixed
    point: it is returned with small residuals (no finite test can tell it from the answer).

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> b = local_basis(model, torch.zeros(1, 3, 32, 32), 700, 2, seed=0, progress=False)
    >>> b.v.shape, b.meta["t"], b.meta["seed"], bool(b.residuals.max() <= DEFAULT_TOL)
    (torch.Size([2, 3, 32, 32]), 700, 0, True)
    >>> warm = local_basis(model, torch.zeros(1, 3, 32, 32), 690, 2, seed=0, progress=False, init=b)
    >>> warm.meta["warm"], warm.n_products < b.n_products, bool(warm.residuals.max() <= DEFAULT_TOL)
    (True, True, True)
    """
    tol = check_float(tol, "tol", min=0, min_open=True)
    max_iter = check_int(max_iter, "max_iter", min=1)
    seed = check_seed(seed)
    f = h_map(model, x_t, t, prompt=prompt, negative_prompt=negative_prompt, branch=branch,
              guidance_scale=guidance_scale, cond=cond, chunk_size=chunk_size, max_memory=max_memory)
    k = _check_k(k, f.n, f.m)
    f.products_per_call()  # a max_memory below one product fails here, before any product
    block = _default_block(k) if block is None else check_int(block, "block", min=1)
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    start = None if init is None else _init_rows(init, f, k)
    basis = _block_krylov(f, k, block=block, tol=float(tol), max_iter=max_iter, seed=seed, progress=progress,
                          init=start)
    basis.meta["warm"] = start is not None
    return basis


def _init_rows(init: Any, f: HMap, k: int) -> torch.Tensor:
    """A warm start as a (k0, n) matrix of spanning vectors, checked against the map."""
    v = init.v if isinstance(init, LocalBasis) else init
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"init must be a LocalBasis or a tensor (k0, {', '.join(map(str, f.x_shape))}), "
                        f"got {type(init).__name__}")
    if v.dim() == 0 or (tuple(v.shape[1:]) != f.x_shape and not (v.dim() == 2 and v.shape[1] == f.n)):
        raise ValueError(f"init has shape {tuple(v.shape)}; expected (k0, {', '.join(map(str, f.x_shape))}) or "
                         f"(k0, {f.n}) with the basis vectors in its rows")
    if not 1 <= v.shape[0] <= k:
        raise ValueError(f"init holds {v.shape[0]} vectors; pass between 1 and k={k}")
    if not torch.isfinite(v).all():
        raise ValueError("init contains NaN or infinite values")
    return v.detach().reshape(v.shape[0], -1).to(device=f.x.device, dtype=f.x.dtype)


def exact_basis(model: Any, x_t: torch.Tensor, t: int | None, k: int | None = None, *, prompt: str | None = None,
                negative_prompt: str | None = None, branch: str | None = None, guidance_scale: float | None = None,
                cond: Any = None, chunk_size: int = 64, max_memory: int | None = None) -> LocalBasis:
    """The top-k triplets from the full Jacobian (min(n, m) products, chunked) and its SVD.

    For small models and checks: the embedded model needs 3072 forward products (seconds).
    ``k=None`` keeps all min(n, m). The SVD runs in float64; residuals are computed with the
    explicit Jacobian.

    >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    >>> b = exact_basis(lambda x: A @ x, torch.zeros(3), None, 2)
    >>> b.s, b.v
    (tensor([3., 2.]), tensor([[1., 0., 0.],
            [0., 1., 0.]]))
    """
    f = h_map(model, x_t, t, prompt=prompt, negative_prompt=negative_prompt, branch=branch,
              guidance_scale=guidance_scale, cond=cond, chunk_size=chunk_size, max_memory=max_memory)
    k = min(f.n, f.m) if k is None else _check_k(k, f.n, f.m)
    f.products_per_call()
    jac = f.jacobian().double()
    u_full, s_all, vh = torch.linalg.svd(jac, full_matrices=False)
    vq, s = vh[:k], s_all[:k]
    jv = vq @ jac.T
    r = jv @ jac - (s ** 2)[:, None] * vq
    denom = torch.clamp(s ** 2, min=float(s_all[0] ** 2) * 1e-12 + torch.finfo(torch.float64).tiny)
    uq = jv / s.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
    return _finish(f, vq, uq, s, r.norm(dim=1) / denom, iterations=0, method="exact", k=k, seed=None, tol=None)
