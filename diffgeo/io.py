"""Atomic file writing and the safetensors + JSON format of every result dataclass.

A failed write never leaves a half-written file: data goes to a temporary file in the same
folder, which replaces the target only once it is complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

__all__ = ["atomic_path", "save_tensors_json", "load_tensors_json"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the body succeeds.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_tensors_json(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Save tensors to ``path`` (.safetensors) and JSON-able metadata inside the same file.

    One file keeps tensors and metadata consistent; the write is atomic.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata={"diffgeo": json.dumps(meta)})
    return path


def load_tensors_json(path: str | os.PathLike, kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of :func:`save_tensors_json`: (tensors, metadata).

    With ``kind``, the file must have been saved with ``meta["kind"] == kind`` (removed from the
    returned metadata); another kind raises a ValueError naming both.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("diffgeo")
    if raw is None:
        raise ValueError(f"{path} is a safetensors file but was not written by diffgeo (no 'diffgeo' metadata)")
    meta = json.loads(raw)
    if kind is not None:
        found = meta.pop("kind", None)
        if found != kind:
            raise ValueError(f"{path} does not hold a {kind} (it holds a {found or 'file of unknown kind'})")
    return load_file(str(path)), meta
