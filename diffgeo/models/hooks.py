"""Hooks on a named module of a U-Net (default: the mid block, i.e. h-space).

Every hook lives in a context manager that removes exactly the handle it added, in
``finally``, so an exception in the body never leaves a hook behind. Modules that return a
tuple (down blocks return ``(hidden, residuals)``) are handled through their first element.

For ``torch.func`` transforms use :func:`run_until`: it *returns* the module's output (the
forward pass stops there by raising a private exception from the hook) instead of storing it
anywhere outside the transformed function.

>>> import torch
>>> from diffusers import UNet2DModel
>>> unet = UNet2DModel(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4,
...     down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
...     layers_per_block=1, add_attention=False).eval()
>>> x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 10])
>>> with capture(unet) as cap:
...     _ = unet(x, t)
>>> cap.value.shape
torch.Size([2, 16, 4, 4])
>>> torch.allclose(run_until(unet, "mid_block", x, t), cap.value)
True
>>> len(unet.mid_block._forward_hooks)
0
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Union

import torch
from torch import nn

from diffgeo.core.checks import check_module, check_str, check_tensor

__all__ = ["get_module", "capture", "add_to_output", "replace_output", "run_until", "Captured", "Tally",
           "output_bytes"]

DEFAULT_MODULE = "mid_block"
Edit = Union[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def get_module(unet: nn.Module, name: str = DEFAULT_MODULE, *, what: str = "name") -> nn.Module:
    """The submodule called ``name`` (dotted path), with a clear error when it does not exist.

    ``unet`` must be the module itself (``model.unet``, not a diffgeo ``Model``); ``name`` a
    non-empty string (``""`` would name the whole U-Net); ``what``: the argument's name in errors.

    >>> import diffgeo
    >>> type(get_module(diffgeo.load("shapes").unet, "down_blocks.2")).__name__
    'AttnDownBlock2D'
    """
    check_module(unet, "unet")
    check_str(name, what)
    try:
        return unet.get_submodule(name)
    except AttributeError:
        top = ", ".join(n for n, _ in unet.named_children())
        raise ValueError(
            f"{what}={name!r}: the U-Net has no module of that name; top-level modules are: {top} "
            "(give a dotted path such as 'down_blocks.2' or 'mid_block')"
        ) from None


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_first(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    return new


@contextmanager
def _hooked(module: nn.Module, hook: Callable) -> Iterator[None]:
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class Captured:
    """Holder filled by :func:`capture`: ``value`` is the last output seen (None before a forward)."""

    value: torch.Tensor | None = None


@contextmanager
def capture(unet: nn.Module, name: str = DEFAULT_MODULE) -> Iterator[Captured]:
    """Record the output of module ``name`` during forwards in the body (last call wins).

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> x = torch.randn(1, *model.x_shape, device=model.device)
    >>> with torch.no_grad(), capture(model.unet) as cap:
    ...     _ = model.unet(x, 500)
    >>> torch.allclose(cap.value, model.h(x, 500)), len(model.unet.mid_block._forward_hooks)
    (True, 0)
    """
    holder = Captured()

    def hook(_module, _inputs, output):
        holder.value = _first(output)

    with _hooked(get_module(unet, name), hook):
        yield holder


def _check_edit(edit: Any, what: str) -> Edit:
    """A tensor edit (real, finite) or a function; anything else is refused before the hook is added."""
    if isinstance(edit, torch.Tensor):
        return check_tensor(edit, what, nonempty=False)
    if not callable(edit):
        raise TypeError(f"{what} must be a tensor or a function of the module's output, got {type(edit).__name__}")
    return edit


def _check_result(new: Any, h: torch.Tensor, what: str, name: str) -> torch.Tensor:
    """The tensor an edit gives at run time: a tensor of the output's dtype, moved to the output's device."""
    if not isinstance(new, torch.Tensor):
        raise TypeError(f"{what} must give a tensor for the output of {name!r}, got {type(new).__name__}")
    if new.dtype != h.dtype:
        raise TypeError(f"{what} has dtype {new.dtype} but the output of {name!r} is {h.dtype}: pass "
                        f"{what}.to({h.dtype})")
    return new if new.device == h.device else new.to(h.device)


def _as_fn(edit: Edit) -> Callable[[torch.Tensor], torch.Tensor]:
    """The edit as a function of the output; a tensor is moved to the output's device once (then cached)."""
    if callable(edit):
        return edit
    moved: dict[torch.device, torch.Tensor] = {}

    def fn(out: torch.Tensor) -> torch.Tensor:
        if out.device not in moved:
            moved[out.device] = edit.to(out.device)
        return moved[out.device]

    return fn


@contextmanager
def add_to_output(unet: nn.Module, delta: Edit, name: str = DEFAULT_MODULE) -> Iterator[None]:
    """Add ``delta`` (a tensor broadcastable to the output, or ``fn(output) -> delta``) to the output.

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> x = torch.randn(1, *model.x_shape)
    >>> with torch.no_grad():
    ...     plain = model.eps(x, 500)
    ...     with add_to_output(model.unet, torch.ones(model.h_shape)):   # shift h by one everywhere (any device)
    ...         edited = model.eps(x, 500)
    >>> bool((edited - plain).abs().max() > 0), len(model.unet.mid_block._forward_hooks)
    (True, 0)
    """
    fn = _as_fn(_check_edit(delta, "delta"))

    def hook(_module, _inputs, output):
        h = _first(output)
        d = _check_result(fn(h), h, "delta", name)
        try:
            fits = torch.broadcast_shapes(d.shape, h.shape) == h.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"delta has shape {tuple(d.shape)}, which does not broadcast to the output of {name!r}, "
                             f"{tuple(h.shape)}")
        return _with_first(output, h + d)

    with _hooked(get_module(unet, name), hook):
        yield


@contextmanager
def replace_output(unet: nn.Module, value: Edit, name: str = DEFAULT_MODULE) -> Iterator[None]:
    """Replace the output with ``value`` (a tensor of the same shape, or ``fn(output) -> new``).

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> x = torch.randn(1, *model.x_shape, device=model.device)
    >>> with torch.no_grad(), replace_output(model.unet, lambda h: 2 * h), capture(model.unet) as cap:
    ...     _ = model.unet(x, 500)
    >>> with torch.no_grad():
    ...     torch.allclose(cap.value, 2 * model.h(x, 500))   # capture sees the replaced value
    True
    """
    fn = _as_fn(_check_edit(value, "value"))

    def hook(_module, _inputs, output):
        h = _first(output)
        new = _check_result(fn(h), h, "value", name)
        if new.shape != h.shape:
            raise ValueError(f"replacement has shape {tuple(new.shape)}, the output of {name!r} has {tuple(h.shape)}")
        return _with_first(output, new)

    with _hooked(get_module(unet, name), hook):
        yield


class _Stop(Exception):
    def __init__(self, value: torch.Tensor):
        super().__init__("forward stopped by diffgeo.models.hooks.run_until")
        self.value = value


def run_until(unet: nn.Module, name: str, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Run ``unet(*args, **kwargs)`` only as far as module ``name`` and return its output.

    Modules after ``name`` (for the mid block: the whole decoder half) are never run. The value
    is returned, not stored, so this works under ``torch.func.jvp``/``vjp``/``vmap``.

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> with torch.no_grad():
    ...     run_until(model.unet, "down_blocks.0", torch.zeros(1, 3, 32, 32, device=model.device), 500).shape
    torch.Size([1, 32, 16, 16])
    """

    def hook(_module, _inputs, output):
        raise _Stop(_first(output))

    with _hooked(get_module(unet, name), hook):
        try:
            unet(*args, **kwargs)
        except _Stop as stop:
            return stop.value
    raise RuntimeError(f"module {name!r} was not called during the forward pass, so it cannot serve as h")


@dataclass
class Tally:
    """Holder filled by :func:`output_bytes`: ``bytes`` summed over the forwards in the body."""

    bytes: int = 0


def _tensor_bytes(output: Any) -> int:
    if isinstance(output, torch.Tensor):
        return output.numel() * output.element_size()
    if isinstance(output, (tuple, list)):
        return sum(_tensor_bytes(o) for o in output)
    return 0


def _attention_scores_bytes(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> int:
    """Bytes of the score and softmax matrices (B, heads, L_q, L_k) that the math attention kernel builds."""
    out = _first(output)
    if not isinstance(out, torch.Tensor) or out.dim() not in (3, 4):
        return 0
    length = out.shape[2] * out.shape[3] if out.dim() == 4 else out.shape[1]
    context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
    keys = context.shape[1] if isinstance(context, torch.Tensor) and context.dim() == 3 else length
    return 2 * out.shape[0] * int(module.heads) * int(length) * int(keys) * out.element_size()


@contextmanager
def output_bytes(unet: nn.Module) -> Iterator[Tally]:
    """Count the activation memory of the forwards in the body: the bytes of every leaf module's
    output plus the attention score matrices of diffusers ``Attention`` modules (an estimate of what
    autograd keeps for one forward; all hooks removed on exit).

    >>> import diffgeo
    >>> model = diffgeo.load("shapes")
    >>> with torch.no_grad(), output_bytes(model.unet) as tally:
    ...     _ = model.h(torch.zeros(1, *model.x_shape), 500)
    >>> tally.bytes > 4 * 128 * 8 * 8, sum(len(m._forward_hooks) for m in model.unet.modules())
    (True, 0)
    """
    check_module(unet, "unet")
    tally = Tally()

    def leaf_hook(_module, _inputs, output):
        tally.bytes += _tensor_bytes(output)

    def attention_hook(module, args, kwargs, output):
        tally.bytes += _attention_scores_bytes(module, args, kwargs, output)

    handles = []
    try:
        for m in unet.modules():
            if next(m.children(), None) is None:
                handles.append(m.register_forward_hook(leaf_hook))
            if hasattr(m, "heads") and hasattr(m, "to_q"):
                handles.append(m.register_forward_hook(attention_hook, with_kwargs=True))
        yield tally
    finally:
        for handle in handles:
            handle.remove()
