"""Argument checks at the public boundary, written once and used by the whole package.

Every checker takes the value and the argument's ``name`` and either returns the value in its
canonical form (a Python ``int``, ``float``, ``bool``, ``str``, ``Path``, ``torch.dtype``) or
raises with the argument's name in the message. The exception family is the standard one:

- :class:`TypeError`: the wrong type (a string where a number goes, a bool where an integer goes);
- :class:`ValueError`: the right type, a wrong value (out of range, NaN, empty, wrong shape, meta);
- :class:`NonFiniteError` (a ``ValueError``): a computation went non-finite (names step and t);
- :class:`OSError` subclasses for file problems, naming the file; a file with wrong contents: ValueError.

Nothing else escapes the public functions for bad input. Bools are never integers or numbers
here (``True`` as a step count is a mistake, not 1); numpy and 0-d torch integers are integers.

>>> check_int(np.int64(3), "steps", min=1)
3
"""

from __future__ import annotations

import inspect
import math
import numbers
import operator
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["NonFiniteError", "check_int", "check_float", "check_bool", "check_str", "check_choice", "check_seed",
           "check_generator", "check_seed_generator", "check_dtype", "check_tensor", "check_finite",
           "check_timesteps", "check_path", "check_module",
           "check_output_folder", "check_keywords"]


class NonFiniteError(ValueError, FloatingPointError):
    """A value became NaN or infinite during a computation (the message says where).

    A ``ValueError`` (the inputs led there) and a ``FloatingPointError`` (what it is)."""


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _is_bool(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return True
    return isinstance(value, (torch.Tensor, np.ndarray)) and value.dtype in (torch.bool, np.bool_)


def check_int(value: Any, name: str, *, min: int | None = None, max: int | None = None) -> int:
    """An integer (Python, numpy or 0-d integer tensor; never a bool or a float) in [min, max].

    >>> check_int(torch.tensor(4), "n", min=1)
    4
    >>> check_int(0, "n", min=1)
    Traceback (most recent call last):
    ...
    ValueError: n must be a positive integer, got 0
    """
    if _is_bool(value):
        raise TypeError(f"{name} must be an integer, got {_describe(value)}")
    if isinstance(value, (torch.Tensor, np.ndarray)) and getattr(value, "ndim", 1) != 0:
        raise TypeError(f"{name} must be an integer, got a tensor of shape {tuple(value.shape)}")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {_describe(value)}") from None
    if min is not None and out < min:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(min, f">= {min}")
        raise ValueError(f"{name} must be {what}, got {out}")
    if max is not None and out > max:
        raise ValueError(f"{name} must be <= {max}, got {out}")
    return int(out)


def check_float(value: Any, name: str, *, min: float | None = None, max: float | None = None,
                min_open: bool = False, finite: bool = True) -> float:
    """A real number (int, float, numpy or 0-d real tensor; never a bool, str or complex).

    ``finite`` (default) refuses NaN and infinities; ``min``/``max`` bound it (``min_open``:
    strictly above min).

    >>> check_float(np.float32(0.5), "eta", min=0)
    0.5
    >>> check_float(0, "tol", min=0, min_open=True)
    Traceback (most recent call last):
    ...
    ValueError: tol must be a positive finite number, got 0.0
    """
    if _is_bool(value):
        raise TypeError(f"{name} must be a number, got {_describe(value)}")
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != 0 or value.dtype in (torch.complex64, torch.complex128) or np.iscomplexobj(value):
            raise TypeError(f"{name} must be a real number, got a {value.dtype} tensor of shape {tuple(value.shape)}")
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    out = float(value)
    bad = math.isnan(out) or (finite and math.isinf(out))
    bad = bad or (min is not None and (out <= min if min_open else out < min)) or (max is not None and out > max)
    if bad:
        number = "finite number" if finite else "number"
        if min == 0:
            req = f"a {'positive' if min_open else 'non-negative'} {number}"
        elif min is not None:
            req = f"a {number} {'>' if min_open else '>='} {min}"
        else:
            req = f"a {number}"
        req += f" <= {max}" if max is not None else ""
        raise ValueError(f"{name} must be {req}, got {out}")
    return out


def check_bool(value: Any, name: str) -> bool:
    """Strictly a bool (``True``/``False``, numpy bool): ``"no"``, ``0`` or ``None`` are refused.
    >>> check_bool("no", "use_clipped_model_output")
    Traceback (most recent call last):
    ...
    TypeError: use_clipped_model_output must be True or False, got str 'no'
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {_describe(value)}")


def check_str(value: Any, name: str, *, empty: bool = False) -> str:
    """A string, non-empty (unless ``empty``) and not only whitespace.

    >>> check_str("", "h_module")
    Traceback (most recent call last):
    ...
    ValueError: h_module must be a non-empty string, got ''
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {_describe(value)}")
    if not empty and not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (strings).

    >>> check_choice("ddim", "method", ("ddim", "fixed_point"))
    'ddim'
    """
    if not isinstance(value, str) or value not in choices:
        raise (TypeError if not isinstance(value, str) else ValueError)(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {_describe(value)}")
    return value


SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 64-bit seeds; Generator.seed() draws them

def check_seed(seed: Any, name: str = "seed") -> int | None:
    """None (draw one) or an integer in [0, 2**64 - 1] (what ``torch.Generator.manual_seed`` takes).

    >>> check_seed(np.uint8(7))
    7
    """
    if seed is None:
        return None
    return check_int(seed, name, min=0, max=SEED_MAX)


def check_generator(generator: Any, name: str = "generator") -> torch.Generator | None:
    """None or a CPU ``torch.Generator`` (noise is drawn on the CPU so a seed means the same on every device).
    >>> check_generator(None), check_generator(torch.Generator().manual_seed(0)).device.type
    (None, 'cpu')
    """
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {_describe(generator)}")
    if generator.device.type != "cpu":
        raise ValueError(f"{name} must be a CPU torch.Generator (noise is drawn on the CPU), got one on "
                         f"{generator.device}")
    return generator


def check_seed_generator(seed: Any, generator: Any) -> tuple[int | None, torch.Generator | None]:
    """Both checked; giving both is refused (the record would name a seed that was not used).
    >>> check_seed_generator(7, torch.Generator())
    Traceback (most recent call last):
    ...
    ValueError: give seed= or generator=, not both: with a generator the seed would not be used (seed=7)
    """
    seed, generator = check_seed(seed), check_generator(generator)
    if seed is not None and generator is not None:
        raise ValueError(f"give seed= or generator=, not both: with a generator the seed would not be used "
                         f"(seed={seed})")
    return seed, generator


_DTYPE_NAMES = {"float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
                "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
                "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float64": torch.float64, "double": torch.float64, "fp64": torch.float64}


def check_dtype(dtype: Any, name: str = "dtype") -> torch.dtype | None:
    """None, a floating ``torch.dtype``, or its name (``"float16"``, ``"torch.float16"``, ``"fp16"``, ``"bf16"``).

    >>> check_dtype("float16")
    torch.float16
    >>> check_dtype(torch.int8)
    Traceback (most recent call last):
    ...
    ValueError: dtype must be a floating dtype (float32, float16, bfloat16, float64), got torch.int8
    """
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key not in _DTYPE_NAMES:
            raise ValueError(f"{name} must be a floating torch dtype or one of its names (float32, float16, bfloat16, "
                             f"float64, fp32, fp16, bf16, fp64), got {dtype!r}")
        return _DTYPE_NAMES[key]
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype (e.g. torch.float16) or its name, got {_describe(dtype)}")
    if not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating dtype (float32, float16, bfloat16, float64), got {dtype}")
    return dtype


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Refuse NaN/inf entries (and complex tensors), naming the argument and how many entries are bad.

    >>> check_finite(torch.ones(2), "x").tolist()
    [1.0, 1.0]
    >>> check_finite(torch.tensor([1.0, float("inf")]), "x")
    Traceback (most recent call last):
    ...
    ValueError: x contains NaN or infinite values (1 of 2 entries); check the computation that produced it
    """
    if x.is_complex():
        raise TypeError(f"{name} must be real, got a {x.dtype} tensor")
    if x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            raise ValueError(f"{name} contains NaN or infinite values ({int(bad.sum())} of {x.numel()} entries); "
                             "check the computation that produced it")
    return x


def check_tensor(x: Any, name: str, *, ndim: int | None = None, shape: Sequence[int | None] | None = None,
                 dtype: torch.dtype | None = None, floating: bool = True, finite: bool = True,
                 nonempty: bool = True) -> torch.Tensor:
    """A real tensor (not on the meta device) with ``ndim`` dimensions / the given ``shape`` (None
    entries match anything), ``dtype``, finite entries and a non-empty leading (batch) axis.

    >>> check_tensor(torch.zeros(0, 3), "x_t")
    Traceback (most recent call last):
    ...
    ValueError: x_t is empty (shape (0, 3)); give at least one sample
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {_describe(x)}")
    if x.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (it has no data); create it with real values")
    if x.is_complex():
        raise TypeError(f"{name} must be real, got a {x.dtype} tensor")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if shape is not None:
        if x.dim() != len(shape) or any(s is not None and int(d) != s for d, s in zip(x.shape, shape)):
            want = ", ".join("B" if s is None else str(s) for s in shape)
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected ({want})")
    if nonempty and (x.dim() == 0 or x.shape[0] == 0 or x.numel() == 0):
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); give at least one sample")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype}, expected {dtype}: pass {name}.to({dtype})")
    if finite:
        check_finite(x, name)
    return x


def check_timesteps(t: Any, num_train_timesteps: int, name: str = "t", batch: int | None = None) -> None:
    """Scheduler timesteps: an integer or a (B,) integer tensor/sequence, all in [0, T-1].

    >>> check_timesteps("500", 1000)
    Traceback (most recent call last):
    ...
    TypeError: t must be an integer scheduler timestep in [0, 999] or a (B,) integer tensor of them, got str '500'
    """
    hint = f"{name} must be an integer scheduler timestep in [0, {num_train_timesteps - 1}] or a (B,) integer " \
           "tensor of them"
    if isinstance(t, (str, bytes)) or t is None or _is_bool(t):
        raise TypeError(f"{hint}, got {_describe(t)}")
    if isinstance(t, torch.Tensor):
        if t.device.type == "meta":
            raise ValueError(f"{name} is on the meta device (it has no data)")
        tt = t
    else:
        try:
            tt = torch.as_tensor(t)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{hint}, got {_describe(t)}") from None
    if tt.is_floating_point() or tt.is_complex() or tt.dtype == torch.bool:
        raise TypeError(f"{hint}, got {_describe(t)}")
    if tt.dim() > 1:
        raise ValueError(f"{name} must be a scalar or one timestep per sample (B,), got shape {tuple(tt.shape)}")
    if tt.numel() == 0:
        raise ValueError(f"{name} is empty; give one timestep or one per sample")
    if batch is not None and tt.dim() == 1 and tt.shape[0] != batch:
        raise ValueError(f"{name} has {tt.shape[0]} timesteps for a batch of {batch}: give one or {batch}")
    lo, hi = int(tt.min()), int(tt.max())
    if lo < 0 or hi >= num_train_timesteps:
        raise ValueError(f"{name}={t!r} is outside the schedule: timesteps are integers in "
                         f"[0, {num_train_timesteps - 1}]")


def check_path(path: Any, name: str = "path") -> Path:
    """A ``str`` or ``os.PathLike`` (not empty), as a ``Path`` with ``~`` expanded.

    >>> check_path("runs/exp1").parts, check_path("~").is_absolute()
    (('runs', 'exp1'), True)
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or pathlib.Path), got {_describe(path)}")
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError(f"{name} must be a non-empty path, got {text!r}")
    if "\x00" in str(text):
        raise ValueError(f"{name} contains a NUL character: {text!r}")
    return Path(text).expanduser()


def check_module(module: Any, name: str = "unet") -> torch.nn.Module:
    """A ``torch.nn.Module``; a diffgeo ``Model`` is refused with a pointer to ``model.unet``.

    >>> check_module(torch.nn.Linear(2, 2)).out_features
    2
    >>> check_module("unet")
    Traceback (most recent call last):
    ...
    TypeError: unet must be a torch.nn.Module (the U-Net), got str 'unet'
    """
    if isinstance(module, torch.nn.Module):
        return module
    if hasattr(module, "unet") and isinstance(getattr(module, "unet"), torch.nn.Module):
        raise TypeError(f"{name} must be the U-Net module (a torch.nn.Module); got a {type(module).__name__}: "
                        f"pass model.unet")
    raise TypeError(f"{name} must be a torch.nn.Module (the U-Net), got {_describe(module)}")



def check_output_folder(path: Any, name: str = "--out") -> Path:
    """A folder results can be written to, checked without creating anything (but a probe file, removed):
    a folder or not there yet, and its nearest existing parent a writable folder.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     check_output_folder(f.name)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --out ... is a file, not a folder
    """
    folder = check_path(path, name)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name} {folder} is a file, not a folder")
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{name} {folder} cannot be created: {parent} is a file")
    try:  # permission bits do not tell for root, read-only mounts or /proc: try a hidden file, removed at once
        fd, probe = tempfile.mkstemp(prefix=".diffgeo-write-test-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError:
        raise ValueError(f"{name} {folder} is not writable ({parent} is read-only)") from None
    return folder


def check_keywords(kwargs: dict, fn: Any, name: str, taken: Sequence[str] = ()) -> dict:
    """Refuse, before any work, keywords ``fn`` does not take (or the caller passes itself: ``taken``).

    >>> check_keywords({"strenght": 1}, lambda x, *, strength: x, "edit")
    Traceback (most recent call last):
    ...
    TypeError: edit got an unexpected keyword 'strenght'; it takes: strength, x
    """
    allowed = {p.name for p in inspect.signature(fn).parameters.values()
               if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - set(taken)
    if set(kwargs) - allowed:
        raise TypeError(f"{name} got an unexpected keyword {', '.join(map(repr, sorted(set(kwargs) - allowed)))}; "
                        f"it takes: {', '.join(sorted(allowed))}")
    return kwargs
