"""Pullback geometry of x_t -> h: the map at one point and its Jacobian products (Park et al., NeurIPS 2023).

For ``f_t : x_t -> h`` (the mid-block output) with Jacobian ``J = dh/dx_t`` (m x n, n the size
of x_t, m the size of h), the pullback metric on X is ``J^T J``. Its top-k eigenvectors, the top
right singular vectors ``v_i`` of J, form the *local latent basis*; ``u_i = J v_i / s_i`` the
*local tangent basis* in H.

* :class:`HMap` is the map at one point with batched products: ``jvp`` (J v, forward mode,
  ``torch.func.vmap`` over the vectors) and ``vjp`` (J^T u, reverse mode, the forward pass done
  once and reused for every u). Only the encoder half of the U-Net runs (``Model.h_fn``).
* :func:`~diffgeo.geometry.basis.local_basis` (in :mod:`diffgeo.geometry.basis`) finds the top-k triplets with a block Krylov method (block Lanczos on
  ``J^T J`` with full reorthogonalisation and Rayleigh-Ritz on ``J Q``), stopping on the residual
  ``||J^T J v - s^2 v|| / s^2`` (a subspace criterion; signs play no part).
* :func:`~diffgeo.geometry.basis.exact_basis` builds the full Jacobian (chunked) and takes its SVD, for checks.

Forward-mode AD through diffusers' fused attention fails on CPU torch; :func:`forward_ad_ready`
switches the fix on (math SDPA kernel + contiguous GroupNorm inputs) and restores everything on
exit. Every product here runs inside it, and inside :func:`diffgeo.core.precision.full_precision`
(no TF32). Devices: the products run where the point x is (for a Model: the model's device; inputs
on another device or in float64 are moved there) and return tensors on that device. Half-precision
models are refused with a clear error (:func:`diffgeo.core.precision.require_float32`).

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

import math
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from diffgeo.core.checks import NonFiniteError, check_int
from diffgeo.core.device import free_memory
from diffgeo.core.precision import full_precision, require_float32
from diffgeo.models.hooks import Tally, output_bytes

__all__ = ["HMap", "h_map", "jvp", "vjp", "forward_ad_ready", "chunk_for_budget"]

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
    (B, *x_shape). Both run ``chunk_size`` vectors at a time under ``torch.func.vmap``, with TF32
    off; ``n_products`` counts the vectors pushed through so far. Vectors on another device or of
    another floating dtype are converted to x's; results are on x's device, in x's dtype.

    >>> A = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> f = HMap(lambda x: A @ x, torch.zeros(2))
    >>> f.jvp(torch.eye(2))   # columns of A, one per row
    tensor([[2., 0., 1.],
            [0., 1., 1.]])
    >>> f.vjp(torch.tensor([[1.0, 0.0, 0.0]])), f.n_products
    (tensor([[2., 0.]]), 3)
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                 chunk_size: int = 64, unet: nn.Module | None = None, meta: dict | None = None,
                 max_memory: int | None = None):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        chunk_size = check_int(chunk_size, "chunk_size", min=1)
        self.max_memory = None if max_memory is None else check_int(max_memory, "max_memory", min=1)
        self._activation_bytes: int | None = None
        self._per_call: int | None = None
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
        with full_precision():
            if self.unet is None:
                yield
            else:
                with forward_ad_ready(self.unet):
                    yield

    def value(self) -> torch.Tensor:
        """h at the point, (*h_shape)."""
        if self._h is None:
            with torch.no_grad(), self._ready(), self._tally() as tally:
                self._h = self.fn(self.x).detach()
            self._activation_bytes = max(tally.bytes, (self.x.numel() + self._h.numel()) * self.x.element_size())
        return self._h

    @contextmanager
    def _tally(self) -> Iterator[Tally]:
        if self.unet is None:
            yield Tally()
        else:
            with output_bytes(self.unet) as tally:
                yield tally

    def product_bytes(self) -> int:
        """Estimated memory (bytes) of one product at this point: the activations of one forward
        (:func:`diffgeo.models.hooks.output_bytes`) for the primal plus as much for the tangent."""
        self.value()
        return 2 * int(self._activation_bytes)

    def products_per_call(self) -> int:
        """How many products one vmapped call runs: ``chunk_size``, or fewer where the memory budget
        (``max_memory``, default half the free memory of x's device) holds fewer. A budget below one
        product raises a ``ValueError`` saying how much one product needs."""
        if self._per_call is None:
            self._per_call = chunk_for_budget(self.product_bytes() // 2, 1, self.chunk_size, self.max_memory,
                                              self.x.device)
        return self._per_call

    def _check(self, vecs: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
        if not isinstance(vecs, torch.Tensor) or tuple(vecs.shape[1:]) != shape or vecs.dim() != len(shape) + 1:
            got = tuple(vecs.shape) if isinstance(vecs, torch.Tensor) else type(vecs).__name__
            raise ValueError(f"{what} must have shape (B, {', '.join(map(str, shape))}), got {got}")
        if vecs.is_complex() or vecs.is_meta:
            raise TypeError(f"{what} must be a real tensor on a device with data, got {vecs.dtype} on {vecs.device}")
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
            for chunk in v.split(self.products_per_call()):
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
            for chunk in u.split(self.products_per_call()):
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


def chunk_for_budget(activation_bytes: int, points: int, cap: int, max_memory: int | None,
                     device: torch.device) -> int:
    """Products per point in one batched call: the largest c <= cap with (1 + c) * points *
    activation_bytes <= budget (the primal's activations plus one tangent's per product, per point).

    ``max_memory`` (bytes) is the budget; None takes half the free memory of ``device``
    (:func:`diffgeo.core.device.free_memory`; the estimate leaves out workspaces). A budget below
    one product at one point raises a ``ValueError`` that says how much one product needs.

    >>> chunk_for_budget(10, 2, 64, 100, torch.device("cpu"))   # (1 + 4) * 2 * 10 = 100
    4
    """
    per_product = 2 * activation_bytes
    if max_memory is not None and max_memory < per_product:
        raise ValueError(f"max_memory={max_memory} bytes is too small: one Jacobian product at one point needs about "
                         f"{per_product} bytes ({per_product / 2**20:.1f} MiB) for this map; pass at least that")
    budget = max_memory if max_memory is not None else free_memory(device) // 2
    return int(max(1, min(cap, budget // max(1, points * activation_bytes) - 1)))


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
          cond: Any = None, chunk_size: int = 64, max_memory: int | None = None) -> HMap:
    """The map x_t -> h of ``model`` at timestep t around ``x_t``, as an :class:`HMap`.

    ``model`` is a :class:`~diffgeo.models.model.Model`, or any function of one sample
    ``fn: (*x_shape) -> (*h_shape)`` (then ``t`` is ``None``). ``x_t``: (*x_shape) or
    (1, *x_shape), on any device, in the model's dtype (it is moved to the model's device; another
    dtype is refused by ``Model.check_x`` with the conversion to make). A float16/bfloat16 model
    raises a ``TypeError`` saying to load it in float32. Text models take ``prompt`` /
    ``negative_prompt`` / ``branch`` / ``guidance_scale`` as in ``Model.h`` (the reference code's Jacobian is ``branch="cond"`` with
    the edit prompt), or an explicit ``cond`` (a ``Cond`` or dict with batch 1). ``chunk_size``
    caps the products per vmapped call; ``max_memory`` (bytes, default half the free memory of the
    model's device) may lower it (:meth:`HMap.products_per_call`).

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
        return HMap(model, x_t, chunk_size=chunk_size, meta={"model": name, "t": None}, max_memory=max_memory)
    if t is None:
        raise ValueError(f"t is required for {model.name}: an integer timestep in [0, {model.num_train_timesteps - 1}]")
    require_float32(model.dtype, f"the geometry of {model.name} (Jacobian products, local and exact bases)")
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
    return HMap(fn, x, chunk_size=chunk_size, unet=model.unet, meta=meta, max_memory=max_memory)


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
