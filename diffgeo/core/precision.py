"""The precision policy: Jacobian products, exact bases and fixed-point solves run in full float32.

On Ampere and later GPUs PyTorch may run float32 matmuls and (by default) cuDNN convolutions in
TF32, with a 10-bit mantissa (relative error about 1e-3). That is below the residual tolerance of
the local bases (1e-3) and stalls inversion's fixed-point solve (issue 28 measured RMS residuals of
1e-6 to 5e-5 on an H200), so the library turns TF32 off where it needs float32 numerics:
:func:`full_precision` sets matmul and convolution precision to IEEE float32 and puts back the
caller's settings exactly on exit, also when the body raises. It touches only PyTorch's new
``fp32_precision`` API (mixing it with the legacy ``allow_tf32`` flags makes PyTorch refuse to read
them), and it is a no-op for computations that are not float32.

Half-precision models (float16/bfloat16) are not upcast here: their rounding (bfloat16 eps 7.8e-3)
is above every geometry tolerance, so geometry asks for a float32 model instead
(:func:`require_float32`).

>>> import torch
>>> before = torch.backends.cuda.matmul.fp32_precision
>>> with full_precision():
...     torch.backends.cuda.matmul.fp32_precision
'ieee'
>>> torch.backends.cuda.matmul.fp32_precision == before
True
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["full_precision", "precision_flags", "require_float32"]

# (backend object, attribute) of every per-backend fp32 precision setting that exists in this torch.
_BACKENDS = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv")


def _settings() -> list[tuple[str, object]]:
    out = []
    for path in _BACKENDS:
        obj: object = torch.backends
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is not None and hasattr(obj, "fp32_precision"):
            out.append((path, obj))
    return out


def precision_flags() -> dict[str, str]:
    """The current float32 precision settings: ``{"matmul_precision": ..., "cuda.matmul": ..., ...}``.

    >>> "cuda.matmul" in precision_flags() and "matmul_precision" in precision_flags()
    True
    """
    flags = {"matmul_precision": torch.get_float32_matmul_precision()}
    flags.update({path: str(obj.fp32_precision) for path, obj in _settings()})
    return flags


@contextmanager
def full_precision() -> Iterator[None]:
    """IEEE float32 (no TF32, no bf16 emulation) for matmuls and convolutions inside the body.

    Restores ``torch.get_float32_matmul_precision()`` and every backend's ``fp32_precision`` to the
    caller's values on exit, in the order that reproduces them exactly, also when the body raises.
    Nests.

    >>> torch.set_float32_matmul_precision("high")
    >>> with full_precision():
    ...     torch.get_float32_matmul_precision()
    'highest'
    >>> torch.get_float32_matmul_precision()
    'high'
    >>> torch.set_float32_matmul_precision("highest")
    """
    saved_global = torch.get_float32_matmul_precision()
    settings = _settings()
    saved = [obj.fp32_precision for _path, obj in settings]
    try:
        torch.set_float32_matmul_precision("highest")
        for _path, obj in settings:
            obj.fp32_precision = "ieee"
        yield
    finally:
        # the global call rewrites the per-backend values, so it goes first
        torch.set_float32_matmul_precision(saved_global)
        for (_path, obj), value in zip(settings, saved):
            obj.fp32_precision = value


def require_float32(dtype: torch.dtype, what: str) -> None:
    """Refuse geometry on a half-precision model, saying why and what to do.

    >>> require_float32(torch.float32, "local_basis")
    >>> require_float32(torch.bfloat16, "local_basis")
    Traceback (most recent call last):
    ...
    TypeError: local_basis needs a float32 (or float64) model, but this one runs in torch.bfloat16: ...
    """
    if dtype in (torch.float16, torch.bfloat16):
        eps = torch.finfo(dtype).eps
        raise TypeError(
            f"{what} needs a float32 (or float64) model, but this one runs in {dtype}: its rounding (eps {eps:.1e}) "
            "is above the geometry's tolerances (residuals 1e-3), and running the products in float32 would need a "
            "float32 copy of the weights anyway. Load with diffgeo.load(..., dtype=torch.float32) or convert with "
            "model.to(dtype=torch.float32)")
