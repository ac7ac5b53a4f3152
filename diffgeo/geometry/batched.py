"""Local bases for many points in one call, with the Jacobian products batched across the points.

The map x_t -> h is per sample, so the Jacobian of the stacked map X (B, *x_shape) -> H (B, *h_shape)
is block-diagonal: one forward-mode product with a stacked tangent (B, *x_shape) gives B products
J_i v_i at once, and one reverse-mode product with a stacked cotangent gives B products J_i^T u_i.
:func:`local_bases` runs one :class:`~diffgeo.geometry.krylov.KrylovSolver` per point (the same solver
as :func:`~diffgeo.geometry.basis.local_basis`) and each iteration stacks the pending blocks of all
unfinished points into one vmapped call (blocks of unequal size are padded with zero vectors), so a
GPU sees B times larger batches. Finished points leave the batch.

Memory-aware chunking: the points are split into groups and the products of a group into calls so
that ``(1 + products per call) * points * activations`` stays within ``max_memory`` (bytes; default
half the free memory of the model's device, :func:`diffgeo.core.device.free_memory`), the activations
estimated from one forward (:func:`diffgeo.models.hooks.output_bytes`).

>>> import torch
>>> A = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))
>>> bases = local_bases(lambda x: torch.tanh(A @ x), torch.zeros(3, 4), None, 2, seed=0, progress=False)
>>> len(bases), bases[0].s
(3, tensor([4.0000, 3.0000]))
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from diffgeo.core.checks import NonFiniteError, check_float, check_int, check_seed, check_tensor
from diffgeo.core.device import free_memory
from diffgeo.core.precision import full_precision, require_float32
from diffgeo.core.progress import progress_bar
from diffgeo.geometry.basis import DEFAULT_TOL, LocalBasis, _check_k, _default_block, _init_rows, wrap_triplets
from diffgeo.geometry.krylov import KrylovSolver
from diffgeo.geometry.pullback import HMap, _is_model, chunk_for_budget, forward_ad_ready

__all__ = ["local_bases"]

log = logging.getLogger(__name__)


@dataclass
class _Stacked:
    """The stacked map on the points ``x`` (B, *x_shape): ``fn(x_sub, idx) -> h_sub`` per sample."""

    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    x: torch.Tensor
    unet: Any
    metas: list[dict]

    def ready(self) -> AbstractContextManager:
        return forward_ad_ready(self.unet) if self.unet is not None else nullcontext()


def _stacked_model(model: Any, xs: torch.Tensor, ts: Any, kwargs: dict) -> _Stacked:
    """The stacked map of a Model: xs checked and moved to the model's device, one t per point."""
    require_float32(model.dtype, f"the geometry of {model.name} (local_bases)")
    if isinstance(xs, torch.Tensor) and xs.dim() == len(model.x_shape):
        xs = xs[None]
    x = model.check_x(xs, "xs")
    b = x.shape[0]
    t_list = _timesteps(model, ts, b)
    c = model.conditioning(kwargs.get("prompt"), negative_prompt=kwargs.get("negative_prompt"),
                           branch=kwargs.get("branch"), guidance_scale=kwargs.get("guidance_scale"),
                           cond=kwargs.get("cond"), batch=1)
    t_all = torch.tensor(t_list, dtype=torch.long, device=model.device)
    cmeta = c.meta() if c is not None else {"prompt": None, "negative_prompt": None, "branch": None,
                                            "guidance_scale": None}

    def fn(x_sub: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return model.h_fn(x_sub, t_all[idx], c)

    metas = [{"model": model.name, "t": t, **cmeta} for t in t_list]
    return _Stacked(fn, x, model.unet, metas)


def _timesteps(model: Any, ts: Any, b: int) -> list[int]:
    """One integer timestep per point, from an int or a sequence / (B,) tensor of B ints."""
    if isinstance(ts, torch.Tensor) and ts.dim() == 0:
        ts = int(ts)
    if isinstance(ts, (int, torch.Tensor)) or (hasattr(ts, "__index__") and not isinstance(ts, bool)):
        model.check_t(ts)
        if isinstance(ts, torch.Tensor):
            if ts.shape != (b,):
                raise ValueError(f"ts must be one timestep or one per point ({b}), got shape {tuple(ts.shape)}")
            return [int(t) for t in ts.tolist()]
        return [int(ts)] * b
    if not isinstance(ts, Sequence) or isinstance(ts, str):
        raise TypeError(f"ts must be an integer timestep or a sequence of {b} of them, got {type(ts).__name__}")
    if len(ts) != b:
        raise ValueError(f"ts has {len(ts)} timesteps for {b} points: pass one per point or a single integer")
    model.check_t(list(ts))
    return [int(t) for t in ts]


def _stacked_function(fn: Callable, xs: Any) -> _Stacked:
    """The stacked map of a plain function of one sample (vmapped over the points)."""
    if not isinstance(xs, torch.Tensor) or xs.dim() < 2:
        raise ValueError("xs must be a tensor (B, *x_shape) of points for a plain function, got "
                         f"{tuple(xs.shape) if isinstance(xs, torch.Tensor) else type(xs).__name__}")
    check_tensor(xs, "xs", floating=False)
    batched = torch.func.vmap(fn)
    name = getattr(fn, "__name__", type(fn).__name__)
    return _Stacked(lambda x_sub, _idx: batched(x_sub), xs.detach(), None,
                    [{"model": name, "t": None} for _ in range(xs.shape[0])])


def _pad(blocks: list[torch.Tensor], rows: int) -> torch.Tensor:
    """Blocks (b_i, n) stacked as (rows, P, n), zero rows where b_i < rows."""
    out = blocks[0].new_zeros(rows, len(blocks), blocks[0].shape[1])
    for i, blk in enumerate(blocks):
        out[: blk.shape[0], i] = blk
    return out


def _run_group(st: _Stacked, idx: list[int], solvers: list[KrylovSolver], x_shape: tuple, h_shape: tuple,
               act: int, cap: int, max_memory: int | None, counts: list[int], bar: Any) -> None:
    """Drive the solvers of the points ``idx`` to the end, stacking their products."""
    n, m = solvers[0].n, solvers[0].m
    active = [i for i in idx if not solvers[i].done]
    vjp_fn, vjp_for = None, None   # the reverse-mode forward, reused while the same points are active
    while active:
        sel = torch.tensor(active, device=st.x.device)
        x_sub = st.x[sel]
        rows = max(solvers[i].pending.shape[0] for i in active)
        per_call = chunk_for_budget(act, len(active), cap, max_memory, st.x.device)
        v = _pad([solvers[i].pending for i in active], rows).reshape(rows, len(active), *x_shape)

        def h_of(x: torch.Tensor, sel: torch.Tensor = sel) -> torch.Tensor:
            return st.fn(x, sel)

        with full_precision(), st.ready():
            jvp_one = torch.func.vmap(lambda t, x_sub=x_sub, h_of=h_of: torch.func.jvp(h_of, (x_sub,), (t,))[1])
            y = torch.cat([jvp_one(c).detach() for c in v.split(per_call)])          # (rows, P, *h)
            if vjp_for != active:
                vjp_fn = None   # free the previous graph first
                _h, vjp_fn = torch.func.vjp(h_of, x_sub)
                vjp_for = list(active)
            vjp_all = torch.func.vmap(vjp_fn)
            z = torch.cat([vjp_all(c)[0].detach() for c in y.split(per_call)])       # (rows, P, *x)
        if not (torch.isfinite(y).all() and torch.isfinite(z).all()):
            raise NonFiniteError(f"non-finite Jacobian product at the points {active}: the map overflowed there; "
                             "check those x_t (they should look like noisy samples at their t)")
        y, z = y.reshape(rows, len(active), m), z.reshape(rows, len(active), n)
        for j, i in enumerate(active):
            b = solvers[i].pending.shape[0]
            counts[i] += 2 * b
            solvers[i].feed(y[:b, j], z[:b, j])
        bar.update(1)
        active = [i for i in active if not solvers[i].done]


def local_bases(model: Any, xs: torch.Tensor, ts: Any, k: int, *, prompt: str | None = None,
                negative_prompt: str | None = None, branch: str | None = None, guidance_scale: float | None = None,
                cond: Any = None, tol: float = DEFAULT_TOL, max_iter: int = 30, block: int | None = None,
                seed: int | None = None, progress: bool | None = None, chunk_size: int = 64,
                init: Sequence[Any] | None = None, max_memory: int | None = None) -> list[LocalBasis]:
    """Top-k local bases at B points in one call: one :class:`LocalBasis` per point, in order.

    ``model``: a Model or a function of one sample (``ts=None``); ``xs``: (B, *x_shape) points on any
    device, in the model's dtype; ``ts``: one timestep for all points or B of them. Conditioning
    (``prompt`` ...), ``tol``, ``max_iter``, ``block`` and ``seed`` as in
    :func:`~diffgeo.geometry.basis.local_basis`; every point starts from the same seed, so point i's
    basis is the basis ``local_basis(model, xs[i], ts[i], k, seed=seed)`` would give (to float
    rounding of the batched products). ``init``: None or B warm starts (each None, a LocalBasis or a
    tensor). ``chunk_size`` caps the products per point in one call; ``max_memory`` (bytes; default
    half the free memory) bounds a call and a value below one product at one point raises a
    ``ValueError`` saying how much one product needs. The bases are on the model's device, in its
    dtype; ``meta["batched"]`` is True and ``n_products`` counts each point's own products.

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> xs = torch.randn(2, *model.x_shape, generator=torch.Generator().manual_seed(0))
    >>> bases = local_bases(model, xs, [700, 300], 2, seed=0, progress=False)
    >>> [b.t for b in bases], bool(max(b.residuals.max() for b in bases) <= DEFAULT_TOL)
    ([700, 300], True)
    """
    tol = check_float(tol, "tol", min=0, min_open=True)
    max_iter = check_int(max_iter, "max_iter", min=1)
    chunk_size = check_int(chunk_size, "chunk_size", min=1)
    max_memory = None if max_memory is None else check_int(max_memory, "max_memory", min=1)
    seed = check_seed(seed)
    if _is_model(model):
        if ts is None:
            raise ValueError(f"ts is required for {model.name}: one integer timestep or one per point")
        st = _stacked_model(model, xs, ts, {"prompt": prompt, "negative_prompt": negative_prompt, "branch": branch,
                                                "guidance_scale": guidance_scale, "cond": cond})
    elif callable(model):
        if ts is not None:
            raise ValueError("ts is only meaningful for a diffgeo Model; pass ts=None with a plain function")
        st = _stacked_function(model, xs)
    else:
        raise TypeError(f"model must be a diffgeo Model or a function x -> h, got {type(model).__name__}")
    b = st.x.shape[0]
    if init is not None and (not isinstance(init, Sequence) or len(init) != b):
        raise ValueError(f"init must be None or a list of {b} warm starts (one per point, each may be None)")
    # one point's map: shapes, the activation estimate and the warm starts' checks, before any product
    probe = HMap(lambda x1: st.fn(x1[None], torch.zeros(1, dtype=torch.long, device=st.x.device))[0], st.x[0],
                 unet=st.unet, chunk_size=chunk_size, max_memory=max_memory)
    n, m, x_shape, h_shape = probe.n, probe.m, probe.x_shape, probe.h_shape
    k = _check_k(k, n, m)
    act = probe.product_bytes() // 2
    chunk_for_budget(act, 1, 1, max_memory, st.x.device)   # a budget below one product fails here
    budget = max_memory if max_memory is not None else free_memory(st.x.device) // 2
    group = max(1, min(b, budget // (2 * act)))              # points per group: one product each fits
    blk = _default_block(k) if block is None else check_int(block, "block", min=1)
    starts = [None if init is None or init[i] is None else _init_rows(init[i], probe, k) for i in range(b)]
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    solvers = [KrylovSolver(n, m, k, block=blk, tol=float(tol), max_iter=max_iter, seed=seed, dtype=st.x.dtype,
                            device=st.x.device, init=starts[i]) for i in range(b)]
    counts = [0] * b
    bar = progress_bar(total=max_iter * ((b + group - 1) // group), desc=f"{b} local bases k={k}",
                       progress=progress, leave=False)
    try:
        for g0 in range(0, b, group):
            _run_group(st, list(range(g0, min(b, g0 + group))), solvers, x_shape, h_shape, act, chunk_size,
                       max_memory, counts, bar)
    finally:
        bar.close()
    out = []
    for i, sv in enumerate(solvers):
        if not sv.converged:
            _log_unconverged(i, sv, counts[i])
        out.append(wrap_triplets(st.x[i], h_shape, st.metas[i], counts[i], sv.vq, sv.uq, sv.s, sv.residuals,
                                 iterations=sv.iterations, method="block_krylov", k=k, seed=seed, tol=float(tol),
                                 block=blk, max_iter=max_iter, warm=starts[i] is not None, batched=True))
    return out


def _log_unconverged(i: int, sv: KrylovSolver, products: int) -> None:
    log.warning("local_bases: point %d: max residual %.2e after %d iterations (%d products) is above tol=%.1e; "
                "raise max_iter or tol, or check the spectral gap", i, sv.worst, sv.iterations, products, sv.tol)
