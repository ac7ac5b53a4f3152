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

__all__ = ["get_module", "capture", "add_to_output", "replace_output", "run_until", "Captured"]

DEFAULT_MODULE = "mid_block"
Edit = Union[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def get_module(unet: nn.Module, name: str = DEFAULT_MODULE) -> nn.Module:
    """The submodule called ``name`` (dotted path), with a clear error when it does not exist."""
    try:
        return unet.get_submodule(name)
    except AttributeError:
        top = ", ".join(n for n, _ in unet.named_children())
        raise ValueError(
            f"the U-Net has no module named {name!r}; top-level modules are: {top} "
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
    """Record the output of module ``name`` during forwards in the body (last call wins)."""
    holder = Captured()

    def hook(_module, _inputs, output):
        holder.value = _first(output)

    with _hooked(get_module(unet, name), hook):
        yield holder


def _as_fn(edit: Edit) -> Callable[[torch.Tensor], torch.Tensor]:
    return edit if callable(edit) else (lambda _out: edit)


@contextmanager
def add_to_output(unet: nn.Module, delta: Edit, name: str = DEFAULT_MODULE) -> Iterator[None]:
    """Add ``delta`` (a tensor broadcastable to the output, or ``fn(output) -> delta``) to the output."""
    fn = _as_fn(delta)

    def hook(_module, _inputs, output):
        h = _first(output)
        return _with_first(output, h + fn(h))

    with _hooked(get_module(unet, name), hook):
        yield


@contextmanager
def replace_output(unet: nn.Module, value: Edit, name: str = DEFAULT_MODULE) -> Iterator[None]:
    """Replace the output with ``value`` (a tensor of the same shape, or ``fn(output) -> new``)."""
    fn = _as_fn(value)

    def hook(_module, _inputs, output):
        h = _first(output)
        new = fn(h)
        if new.shape != h.shape:
            raise ValueError(f"replacement has shape {tuple(new.shape)}, the output of {name!r} has {tuple(h.shape)}")
        return _with_first(output, new)

    with _hooked(get_module(unet, name), hook):
        yield


class _Stop(Exception):
    def __init__(self, value: torch.Tensor):
        super().__init__("forward stopped by diffgeo.hooks.run_until")
        self.value = value


def run_until(unet: nn.Module, name: str, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Run ``unet(*args, **kwargs)`` only as far as module ``name`` and return its output.

    Modules after ``name`` (for the mid block: the whole decoder half) are never run. The value
    is returned, not stored, so this works under ``torch.func.jvp``/``vjp``/``vmap``.
    """

    def hook(_module, _inputs, output):
        raise _Stop(_first(output))

    with _hooked(get_module(unet, name), hook):
        try:
            unet(*args, **kwargs)
        except _Stop as stop:
            return stop.value
    raise RuntimeError(f"module {name!r} was not called during the forward pass, so it cannot serve as h")
