"""Pullback geometry of x_t -> h: Jacobian products and local bases (Park et al., NeurIPS 2023).

For ``f_t : x_t -> h`` (the mid-block output) with Jacobian ``J = dh/dx_t`` (m x n, n the size
of x_t, m the size of h), the pullback metric on X is ``J^T J``. Its top-k eigenvectors, the top
right singular vectors ``v_i`` of J, form the *local latent basis*; ``u_i = J v_i / s_i`` the
*local tangent basis* in H.

* :class:`HMap` is the map at one point with batched products: ``jvp`` (J v, forward mode,
  ``torch.func.vmap`` over the vectors) and ``vjp`` (J^T u, reverse mode, the forward pass done
  once and reused for every u). Only the encoder half of the U-Net runs (``Model.h_fn``).
* :func:`local_basis` finds the top-k triplets with a block Krylov method (block Lanczos on
  ``J^T J`` with full reorthogonalisation and Rayleigh-Ritz on ``J Q``), stopping on the residual
  ``||J^T J v - s^2 v|| / s^2`` (a subspace criterion; signs play no part).
* :func:`exact_basis` builds the full Jacobian (chunked) and takes its SVD, for checks.

Forward-mode AD through diffusers' fused attention fails on CPU torch; :func:`forward_ad_ready`
switches the fix on (math SDPA kernel + contiguous GroupNorm inputs) and restores everything on
exit. Every product here runs inside it.

>>> import torch, diffgeo
>>> model = diffgeo.load("shapes")
>>> x = torch.randn(1, *model.x_shape, generator=torch.Generator().manual_seed(0))
>>> basis = diffgeo.local_basis(model, x, 500, k=3, seed=0, progress=False)
>>> basis.v.shape, basis.u.shape, basis.s.shape
(torch.Size([3, 3, 32, 32]), torch.Size([3, 128, 8, 8]), torch.Size([3]))
>>> bool(basis.residuals.max() <= 1e-3), bool((basis.s[:-1] >= basis.s[1:]).all())
(True, True)
"""

from __future__ import annotations

import logging
import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from diffgeo.core.checks import NonFiniteError, check_float, check_int, check_seed
from diffgeo.core.io import load_tensors_json, save_tensors_json

__all__ = ["HMap", "LocalBasis", "h_map", "jvp", "vjp", "local_basis", "exact_basis", "forward_ad_ready",
           "DEFAULT_TOL"]

log = logging.getLogger(__name__)

DEFAULT_TOL = 1e-3
_FIX_METHODS = ("sdpa_math", "attn_processor")


# -- forward-mode AD fix -----------------------------------------------------------------------
def _contiguous_first_input(_module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])


@contextmanager
def forward_ad_ready(unet: nn.Module, method: str = "sdpa_math") -> Iterator[None]:
    """Make forward-mode AD (``torch.func.jvp``) work through a diffusers U-Net inside the body.

    Two changes, both undone on exit (also when the body raises):

    * attention: ``"sdpa_math"`` (default) runs ``scaled_dot_product_attention`` with the math
      kernel only (``torch.nn.attention.sdpa_kernel``); fused kernels have no forward-mode
      derivative. ``"attn_processor"`` instead gives every diffusers ``Attention`` module the
      plain ``AttnProcessor`` and puts the original processor objects back on exit. The default
      leaves custom processors (LoRA, IP-Adapter) in place, so it cannot change the function;
      both cost the same on the embedded model (see benchmarks/README.md).
    * a forward pre-hook on every ``GroupNorm`` makes its input contiguous (``UNet2DModel``'s
      attention normalises a transposed view, which forward-mode group norm rejects).

    >>> import torch
    >>> from diffusers import UNet2DModel
    >>> unet = UNet2DModel(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4,
    ...     down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ...     layers_per_block=1, attention_head_dim=8).eval()
    >>> x, v, t = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8), torch.tensor([10])
    >>> with forward_ad_ready(unet):
    ...     out, tangent = torch.func.jvp(lambda x: unet(x, t).sample, (x,), (v,))
    >>> tangent.shape, sum(len(m._forward_pre_hooks) for m in unet.modules())
    (torch.Size([1, 3, 8, 8]), 0)
    """
    if method not in _FIX_METHODS:
        raise ValueError(f"method must be one of {_FIX_METHODS}, got {method!r}")
    handles = [m.register_forward_pre_hook(_contiguous_first_input) for m in unet.modules()
               if isinstance(m, nn.GroupNorm)]
    swapped: list[tuple[nn.Module, Any]] = []
    try:
        with ExitStack() as stack:
            if method == "sdpa_math":
                stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
            else:
                from diffusers.models.attention_processor import Attention, AttnProcessor

                for m in unet.modules():
                    if isinstance(m, Attention):
                        swapped.append((m, m.processor))
                        m.set_processor(AttnProcessor())
            yield
    finally:
        for m, processor in reversed(swapped):
            m.set_processor(processor)
        for handle in handles:
            handle.remove()


# -- the map at one point ----------------------------------------------------------------------
def _is_model(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("h_fn", "unet", "x_shape", "check_x", "check_t"))


class HMap:
    """The map ``x -> h`` around one point ``x``, with batched Jacobian products.

    Build it with :func:`h_map` from a :class:`~diffgeo.models.model.Model` (x_t -> mid-block output at
    timestep t), or directly from any function of one sample: ``HMap(fn, x)`` with
    ``fn: (*x_shape) -> (*h_shape)``, e.g. an analytic map for tests.

    ``jvp(v)``: v (B, *x_shape) -> J v (B, *h_shape); ``vjp(u)``: u (B, *h_shape) -> J^T u
    (B, *x_shape). Both run ``chunk_size`` vectors at a time under ``torch.func.vmap``;
    ``n_products`` counts the vectors pushed through so far.

    >>> A = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> f = HMap(lambda x: A @ x, torch.zeros(2))
    >>> f.jvp(torch.eye(2))   # columns of A, one per row
    tensor([[2., 0., 1.],
            [0., 1., 1.]])
    >>> f.vjp(torch.tensor([[1.0, 0.0, 0.0]])), f.n_products
    (tensor([[2., 0.]]), 3)
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                 chunk_size: int = 64, unet: nn.Module | None = None, meta: dict | None = None):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        chunk_size = check_int(chunk_size, "chunk_size", min=1)
        self.fn = fn
        self.x = x.detach()
        self.chunk_size = int(chunk_size)
        self.unet = unet
        self.meta = dict(meta or {})
        self.n_products = 0
        self._vjp_fn: Callable | None = None
        self._h: torch.Tensor | None = None

    # shapes
    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)

    @property
    def h_shape(self) -> tuple[int, ...]:
        return tuple(self.value().shape)

    @property
    def n(self) -> int:
        """Dimension of x."""
        return self.x.numel()

    @property
    def m(self) -> int:
        """Dimension of h."""
        return math.prod(self.h_shape)

    @contextmanager
    def _ready(self) -> Iterator[None]:
        if self.unet is None:
            yield
        else:
            with forward_ad_ready(self.unet):
                yield

    def value(self) -> torch.Tensor:
        """h at the point, (*h_shape)."""
        if self._h is None:
            with torch.no_grad(), self._ready():
                self._h = self.fn(self.x).detach()
        return self._h

    def _check(self, vecs: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
        if not isinstance(vecs, torch.Tensor) or tuple(vecs.shape[1:]) != shape or vecs.dim() != len(shape) + 1:
            got = tuple(vecs.shape) if isinstance(vecs, torch.Tensor) else type(vecs).__name__
            raise ValueError(f"{what} must have shape (B, {', '.join(map(str, shape))}), got {got}")
        return vecs.to(device=self.x.device, dtype=self.x.dtype)

    def _finite(self, out: torch.Tensor, what: str) -> torch.Tensor:
        if not torch.isfinite(out).all():
            where = f" at t={self.meta['t']}" if self.meta.get("t") is not None else ""
            raise NonFiniteError(
                f"non-finite {what} product{where} for {self.meta.get('model', 'the map')}: the Jacobian overflowed. "
                "Try float32 instead of float16/bfloat16, a timestep further from the ends of the schedule, or "
                "check x_t (it should look like a noisy sample at that t)")
        return out

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """J v for a batch: v (B, *x_shape) -> (B, *h_shape), forward mode."""
        v = self._check(v, self.x_shape, "v")
        out = []
        with self._ready():
            f = torch.func.vmap(lambda t: torch.func.jvp(self.fn, (self.x,), (t,))[1])
            for chunk in v.split(self.chunk_size):
                out.append(f(chunk).detach())
                self.n_products += chunk.shape[0]
        return self._finite(torch.cat(out), "J v")

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """J^T u for a batch: u (B, *h_shape) -> (B, *x_shape), reverse mode (one shared forward)."""
        u = self._check(u, self.h_shape, "u")
        out = []
        with self._ready():
            if self._vjp_fn is None:
                h, self._vjp_fn = torch.func.vjp(self.fn, self.x)
                self._h = h.detach()
            f = torch.func.vmap(self._vjp_fn)
            for chunk in u.split(self.chunk_size):
                out.append(f(chunk)[0].detach())
                self.n_products += chunk.shape[0]
        return self._finite(torch.cat(out), "J^T u")

    def jacobian(self) -> torch.Tensor:
        """The full Jacobian (m, n), by the cheaper of n forward or m reverse products (chunked)."""
        n, m = self.n, self.m
        if n <= m:
            eye = torch.eye(n, dtype=self.x.dtype, device=self.x.device)
            cols = [self.jvp(e.reshape(-1, *self.x_shape)).reshape(-1, m) for e in eye.split(self.chunk_size * 4)]
            return torch.cat(cols).T
        eye = torch.eye(m, dtype=self.x.dtype, device=self.x.device)
        rows = [self.vjp(e.reshape(-1, *self.h_shape)).reshape(-1, n) for e in eye.split(self.chunk_size * 4)]
        return torch.cat(rows)


def _single_x(model: Any, x_t: torch.Tensor) -> torch.Tensor:
    """x_t as one sample (*x_shape), from (*x_shape) or (1, *x_shape), checked by the Model."""
    if isinstance(x_t, torch.Tensor) and tuple(x_t.shape) == tuple(model.x_shape):
        x_t = x_t[None]
    if isinstance(x_t, torch.Tensor) and x_t.dim() == len(model.x_shape) + 1 and x_t.shape[0] != 1:
        raise ValueError(f"x_t has shape {tuple(x_t.shape)}: pass one sample, (1, {', '.join(map(str, model.x_shape))}) "
                         "or without the batch axis; loop over samples for a batch")
    return model.check_x(x_t)[0]


def h_map(model: Any, x_t: torch.Tensor, t: int | None = None, *, prompt: str | None = None,
          negative_prompt: str | None = None, branch: str | None = None, guidance_scale: float | None = None,
          cond: Any = None, chunk_size: int = 64) -> HMap:
    """The map x_t -> h of ``model`` at timestep t around ``x_t``, as an :class:`HMap`.

    ``model`` is a :class:`~diffgeo.models.model.Model`, or any function of one sample
    ``fn: (*x_shape) -> (*h_shape)`` (then ``t`` is ``None``). ``x_t``: (*x_shape) or
    (1, *x_shape). Text models take ``prompt`` / ``negative_prompt`` / ``branch`` /
    ``guidance_scale`` as in ``Model.h`` (the reference code's Jacobian is ``branch="cond"`` with
    the edit prompt), or an explicit ``cond`` (a ``Cond`` or dict with batch 1).

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> f = h_map(model, torch.zeros(1, 3, 32, 32), 500)
    >>> f.x_shape, f.h_shape, f.meta["t"]
    ((3, 32, 32), (128, 8, 8), 500)
    """
    if isinstance(model, HMap):
        raise TypeError("model is already an HMap; pass the Model (or the function) it was built from")
    if not _is_model(model):
        if not callable(model):
            raise TypeError(f"model must be a diffgeo Model or a function x -> h, got {type(model).__name__}")
        if t is not None:
            raise ValueError("t is only meaningful for a diffgeo Model; pass t=None with a plain function")
        if not isinstance(x_t, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x_t).__name__}")
        if not torch.isfinite(x_t).all():
            raise ValueError("x contains NaN or infinite values")
        name = getattr(model, "__name__", type(model).__name__)
        return HMap(model, x_t, chunk_size=chunk_size, meta={"model": name, "t": None})
    if t is None:
        raise ValueError(f"t is required for {model.name}: an integer timestep in [0, {model.num_train_timesteps - 1}]")
    model.check_t(t)
    if torch.as_tensor(t).dim() != 0:
        raise ValueError(f"t must be one integer timestep, got {t!r}")
    t = int(t)
    x = _single_x(model, x_t)
    c = model.conditioning(prompt, negative_prompt=negative_prompt, branch=branch, guidance_scale=guidance_scale,
                           cond=cond, batch=1)
    t_b = model.timesteps_tensor(t, 1)

    def fn(x1: torch.Tensor) -> torch.Tensor:
        return model.h_fn(x1[None], t_b, c)[0]

    meta = {"model": model.name, "t": t, **(c.meta() if c is not None else
                                            {"prompt": None, "negative_prompt": None, "branch": None,
                                             "guidance_scale": None})}
    return HMap(fn, x, chunk_size=chunk_size, unet=model.unet, meta=meta)


def jvp(model: Any, x_t: torch.Tensor, t: int | None, v: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """J v of x_t -> h at t for a batch of vectors: v (B, *x_shape) -> (B, *h_shape).

    Keywords go to :func:`h_map` (prompt, negative_prompt, branch, guidance_scale, cond, chunk_size).

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> jvp(model, torch.zeros(1, 3, 32, 32), 500, torch.randn(4, 3, 32, 32)).shape
    torch.Size([4, 128, 8, 8])
    """
    return h_map(model, x_t, t, **kwargs).jvp(v)


def vjp(model: Any, x_t: torch.Tensor, t: int | None, u: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """J^T u of x_t -> h at t for a batch: u (B, *h_shape) -> (B, *x_shape).

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> vjp(model, torch.zeros(1, 3, 32, 32), 500, torch.randn(4, 128, 8, 8)).shape
    torch.Size([4, 3, 32, 32])
    """
    return h_map(model, x_t, t, **kwargs).vjp(u)


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
    sign = _align_signs(vq)
    dtype = f.x.dtype
    v = (vq * sign[:, None]).to(dtype).reshape(k, *f.x_shape)
    u = (uq * sign[:, None]).to(dtype).reshape(k, *f.h_shape)
    meta = {**f.meta, "k": k, "seed": seed, "method": method, "tol": tol, **extra}
    meta.setdefault("prompt", None)
    meta.setdefault("branch", None)
    return LocalBasis(v, u, s.to(dtype), residuals.to(dtype), f.x.clone(), iterations, f.n_products, meta)


# -- the block Krylov solver -------------------------------------------------------------------
def _orthonormalise_against(new: torch.Tensor, q: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    """Rows of ``new`` made orthonormal and orthogonal to the rows of ``q`` (CGS2 + QR).

    Directions lost to cancellation (the Krylov space became invariant) are replaced by random
    ones, so the space keeps growing (needed for maps of low rank or repeated singular values).
    """
    dtype = new.dtype
    thresh = 1e3 * torch.finfo(dtype).eps
    out = new
    for attempt in range(3):
        norms = out.norm(dim=1).clamp_min(torch.finfo(dtype).tiny)
        for _ in range(2):
            if q is not None and q.shape[0]:
                out = out - (out @ q.T) @ q
        qr_q, qr_r = torch.linalg.qr(out.double().T)
        keep = qr_r.diagonal().abs() > thresh * norms.double()
        if bool(keep.all()):
            return qr_q.T.to(dtype).contiguous()
        # replace the lost directions by random vectors and redo
        fresh = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device=out.device, dtype=dtype)
        out = torch.where(keep[:, None].to(out.device), out, fresh)
    return torch.linalg.qr(out.double().T)[0].T.to(dtype).contiguous()


# Random vectors added to a warm start. The complement of the top-k right singular space is invariant
# under J^T J, so a start orthogonal to the answer would otherwise stay orthogonal to it and converge,
# with small residuals, to the wrong singular vectors; the guards give the Ritz vectors components along
# the answer, which the residual blocks then grow. Two cost 4 products per basis
# (benchmarks/README.md, "Bases along a trajectory").
_WARM_GUARD = 2


def _block_krylov(f: HMap, k: int, *, block: int, tol: float, max_iter: int, seed: int,
                  progress: bool, init: torch.Tensor | None = None) -> LocalBasis:
    """Block Krylov on J^T J. ``init`` (k0, n): a starting subspace (warm start); then the first
    block is init plus ``_WARM_GUARD`` random vectors and every later block is the Ritz residuals
    ``J^T J v - s^2 v`` of the still unconverged top-k (block Davidson without preconditioning),
    which refine a good start in few products."""
    n, m = f.n, f.m
    dtype, device = f.x.dtype, f.x.device
    gen = torch.Generator().manual_seed(seed)  # CPU generator: the same start on every device
    q_blocks: list[torch.Tensor] = []
    y_blocks: list[torch.Tensor] = []
    z_blocks: list[torch.Tensor] = []
    gram = torch.zeros(0, 0, dtype=torch.float64, device=device)  # Y Y^T = Q J^T J Q^T, float64
    if init is None:
        start = torch.randn(min(block, n), n, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    else:  # the warm subspace plus a few random guard vectors (see _WARM_GUARD)
        guard = min(_WARM_GUARD, n - init.shape[0])
        start = torch.cat([init.to(device=device, dtype=dtype),
                           torch.randn(guard, n, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)])
    qi = _orthonormalise_against(start, None, gen)
    bar = tqdm(total=max_iter, desc=f"local basis k={k}", disable=not progress, leave=False)
    it = 0
    try:
        while True:
            it += 1
            yi = f.jvp(qi.reshape(-1, *f.x_shape)).reshape(-1, m)   # J Q_i
            zi = f.vjp(yi.reshape(-1, *f.h_shape)).reshape(-1, n)   # J^T J Q_i
            q_blocks.append(qi)
            y_blocks.append(yi)
            z_blocks.append(zi)
            y = torch.cat(y_blocks)
            cross = yi.double() @ y.double().T                      # (b, d)
            d_old = gram.shape[0]
            gram = torch.cat([torch.cat([gram, cross[:, :d_old].T], 1), cross], 0)
            d = gram.shape[0]
            if d < k and d < n:  # fewer Ritz vectors than asked for yet (block < k): grow first
                grow = zi if init is None else torch.randn(k - d, n, generator=gen, dtype=torch.float64).to(zi)
                qi = _orthonormalise_against(grow[: min(block if init is None else k - d, n - d)],
                                             torch.cat(q_blocks), gen)
                bar.update(1)
                continue
            # Rayleigh-Ritz on span(Q): Q J^T J Q^T = Y Y^T = A diag(s^2) A^T; the Ritz vectors are
            # v = A^T Q (rows), J v = A^T Y, and J^T J v = A^T Z gives the residuals.
            evals, evecs = torch.linalg.eigh(gram)
            a = evecs[:, -k:].flip(1)
            s_sq = evals[-k:].flip(0).clamp_min(0)
            s = s_sq.sqrt()
            q, z = torch.cat(q_blocks), torch.cat(z_blocks)
            vq = a.T @ q.double()
            r = a.T @ z.double() - s_sq[:, None] * vq
            denom = torch.clamp(s_sq, min=float(evals[-1].clamp_min(0)) * 1e-12 + torch.finfo(torch.float64).tiny)
            residuals = r.norm(dim=1) / denom
            worst = float(residuals.max())
            bar.update(1)
            bar.set_postfix(residual=f"{worst:.1e}", products=f.n_products)
            d = q.shape[0]
            if worst <= tol or it >= max_iter or d >= n:
                break
            if init is None:
                qi = _orthonormalise_against(zi[: min(block, n - d)], q, gen)
            else:  # residuals of the unconverged Ritz vectors, largest first
                todo = (residuals > tol).nonzero()[:, 0][: min(k, n - d)]
                qi = _orthonormalise_against(r[todo].to(dtype), q, gen)
    finally:
        bar.close()
    if worst > tol and d < n:
        log.warning("local_basis: max residual %.2e after %d iterations (%d products) is above tol=%.1e; "
                    "raise max_iter or tol, or check the spectral gap", worst, it, f.n_products, tol)
    uq = (a.T @ y.double()) / s.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
    return _finish(f, vq, uq, s, residuals, iterations=it, method="block_krylov", k=k, seed=seed, tol=tol,
                   block=block, max_iter=max_iter)


def _default_block(k: int) -> int:
    """Block size: k up to 8, then max(8, k/6). Chosen by measurement (benchmarks/README.md): on the
    embedded model the time hardly depends on the block size while the product count grows with it."""
    return min(k, max(8, math.ceil(k / 6)))


def local_basis(model: Any, x_t: torch.Tensor, t: int | None, k: int, *, prompt: str | None = None,
                negative_prompt: str | None = None, branch: str | None = None, guidance_scale: float | None = None,
                cond: Any = None, tol: float = DEFAULT_TOL,
                max_iter: int = 30, block: int | None = None, seed: int | None = None, progress: bool = True,
                chunk_size: int = 64, init: "LocalBasis | torch.Tensor | None" = None) -> LocalBasis:
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
              guidance_scale=guidance_scale, cond=cond, chunk_size=chunk_size)
    k = _check_k(k, f.n, f.m)
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
                cond: Any = None, chunk_size: int = 64) -> LocalBasis:
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
              guidance_scale=guidance_scale, cond=cond, chunk_size=chunk_size)
    k = min(f.n, f.m) if k is None else _check_k(k, f.n, f.m)
    jac = f.jacobian().double()
    u_full, s_all, vh = torch.linalg.svd(jac, full_matrices=False)
    vq, s = vh[:k], s_all[:k]
    jv = vq @ jac.T
    r = jv @ jac - (s ** 2)[:, None] * vq
    denom = torch.clamp(s ** 2, min=float(s_all[0] ** 2) * 1e-12 + torch.finfo(torch.float64).tiny)
    uq = jv / s.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
    return _finish(f, vq, uq, s, r.norm(dim=1) / denom, iterations=0, method="exact", k=k, seed=None, tol=None)
