"""Where diffgeo computes: the one default device (and its switch) and how much memory is free there.

:func:`default_device` is the device :func:`diffgeo.load` puts models on when none is given: the
environment variable ``DIFFGEO_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) when set, else CUDA
when present, else the CPU. The test suite's switch ``DIFFGEO_TEST_DEVICE`` sets the same variable, so
the library and the tests agree on one place. :func:`free_memory` says how many bytes a computation
may still use on a device (CUDA: ``torch.cuda.mem_get_info``; CPU: the kernel's available memory).

>>> import os
>>> os.environ["DIFFGEO_DEVICE"] = "cpu"
>>> default_device()
device(type='cpu')
>>> del os.environ["DIFFGEO_DEVICE"]
>>> free_memory("cpu") > 0
True
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["DEVICE_ENV", "default_device", "as_device", "free_memory"]

DEVICE_ENV = "DIFFGEO_DEVICE"


def as_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine, or a clear error.

    >>> as_device("cpu")
    device(type='cpu')
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"{name} must be a str such as 'cpu'/'cuda' or a torch.device, got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{name}={device!r} is not a torch device ({err}); use e.g. 'cpu', 'cuda' or "
                         "'cuda:1'") from None
    if dev.type == "meta":
        raise ValueError(f"{name}={device!r}: the meta device holds no data, so nothing can be computed there")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r} but this torch build sees no CUDA device "
                             f"(torch {torch.__version__}); use 'cpu' or install a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={device!r} but MPS is not available on this machine; use 'cpu'")
    return dev


def default_device() -> torch.device:
    """``$DIFFGEO_DEVICE`` when set (checked), else CUDA when present, else CPU.

    >>> default_device().type in ("cuda", "cpu", "mps")
    True
    """
    requested = os.environ.get(DEVICE_ENV, "").strip()
    if requested:
        return as_device(requested, f"${DEVICE_ENV}")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cpu_available() -> int | None:
    """Bytes of memory the kernel says are available (Linux /proc/meminfo, else sysconf), or None."""
    meminfo = Path("/proc/meminfo")
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def free_memory(device: str | torch.device) -> int:
    """Bytes free for new tensors on ``device``: CUDA's free memory plus what torch's caching allocator
    holds unused; on the CPU the available memory (8 GiB assumed where the system does not say).

    >>> free_memory(torch.device("cpu")) > 2**20
    True
    """
    dev = as_device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return int(free + max(cached, 0))
    if dev.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    available = _cpu_available()
    return int(available) if available is not None else 8 * 2**30
