"""Atomic file writing and the safetensors + JSON format of every result dataclass.

Saving never loses data:

- **Names.** :func:`result_path` adds ``.safetensors`` to a name unless it already ends in it;
  only a ``.json`` suffix is replaced. A user's own suffix is kept: ``save("exp.run1")`` and
  ``save("exp.run2")`` write ``exp.run1.safetensors`` and ``exp.run2.safetensors``. Loading
  applies the same rule, so ``load("exp.run1")`` finds what ``save("exp.run1")`` wrote.
- **Folders.** A target that is an existing folder is refused (``IsADirectoryError``) rather than
  guessed at: give a file name inside it. Missing parent folders are created.
- **Atomic writes.** Data go to a hidden temporary file in the target's folder, which replaces
  the target only once complete; a failed write leaves the old file (or none) and no temporary
  file. The new file gets the permissions an ordinary ``open(path, "w")`` would give
  (``0o666`` minus the umask), or keeps the mode of the file it replaces.
- **Errors name the target.** A parent that cannot be created or written raises the same
  ``OSError`` subclass (``PermissionError``, ``FileExistsError``, ...) with the target's path, never
  the temporary file's.

Result files are safetensors files whose header metadata holds ``"diffgeo"`` (the JSON metadata
of the result, with its ``kind``), ``"diffgeo_format"`` and ``"diffgeo_content"`` (JSON: each
tensor's dtype and shape and a SHA-256 of names, dtypes, shapes and data bytes). Loading
recomputes both and refuses, with the path and the reason, a file whose data bytes or shapes
differ from what was saved, a safetensors file diffgeo did not write, and a file that is not
safetensors at all. Files written before the content record existed load without that check.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> p = save_tensors_json(folder / "exp.run1", {"a": torch.arange(3.0)}, {"kind": "Demo"})
>>> p.name
'exp.run1.safetensors'
>>> tensors, meta = load_tensors_json(folder / "exp.run1", kind="Demo")
>>> tensors["a"].tolist(), meta
([0.0, 1.0, 2.0], {})
"""

from __future__ import annotations

import csv
import errno
import io
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from diffgeo.core.checks import check_path, check_str

__all__ = ["atomic_path", "save_json_csv", "is_stale_temporary", "result_path", "save_tensors_json", "load_tensors_json", "content_record", "SUFFIX",
           "FORMAT"]

SUFFIX = ".safetensors"
FORMAT = "2"  # 1: metadata only; 2: + content record (dtypes, shapes, sha256)


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (thread-safe), else set-and-restore."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _os_error(err: OSError, path: Path, doing: str) -> OSError:
    """The same kind of OSError, about ``path`` (the target), not a temporary file."""
    reason = err.strerror or str(err)
    if isinstance(err, PermissionError):
        reason = f"{reason}: the folder {path.parent} is not writable"
    elif err.errno == errno.ENOTDIR or isinstance(err, FileExistsError):
        reason = f"{reason}: a part of {path.parent} is a file, not a folder"
    new = type(err)(err.errno or 0, f"cannot {doing} {path} ({reason})", str(path))
    return new


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _writer_tag() -> str:
    """``PID-HOST``: who writes a temporary file (HOST: 8 hex digits of the host name's SHA-256)."""
    return f"{os.getpid()}-{_HOST}"


_TMP_NAME = re.compile(r"^\..+\.(\d+)-([0-9a-f]{8})\.[A-Za-z0-9_]+\.tmp$")


def is_stale_temporary(path: str | os.PathLike, max_age: float) -> bool:
    """Whether ``path`` is a hidden temporary file of :func:`atomic_path` whose writer is gone: its name
    records a process of this host that no longer runs, or (writer unknown: another host, an older
    name) it was last modified over ``max_age`` seconds ago. A live writer's file is never stale.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     is_stale_temporary(tmp, max_age=0.0)   # this process is writing it
    False
    """
    path = Path(path)
    match = _TMP_NAME.match(path.name)
    if match is not None and match.group(2) == _HOST:
        pid = int(match.group(1))
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False
    if not path.name.startswith(".") or not path.name.endswith(".tmp"):
        return False
    try:
        return time.time() - path.stat().st_mtime > max_age
    except FileNotFoundError:
        return False


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the body succeeds.

    Parent folders are created. The file ends with mode ``0o666 & ~umask`` (or the mode of the
    file it replaces). An existing folder at ``path`` raises ``IsADirectoryError``; failures to
    create the parent or the temporary file raise their ``OSError`` naming ``path``.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = check_path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a folder; give a file name inside it "
                                f"(e.g. {path / ('result' + SUFFIX)})", str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_writer_tag()}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _os_error(err, path, "write") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else 0o666 & ~_umask()
            os.chmod(tmp_path, mode)
            os.replace(tmp_path, path)
        except IsADirectoryError:
            raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a folder", str(path)) from None
        except OSError as err:
            raise _os_error(err, path, "write") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_json_csv(path: str | os.PathLike, payload: Any, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``payload`` to ``path``.json and ``rows`` (dicts with the same keys) to ``path``.csv, each
    atomically; a ``.json`` or ``.csv`` suffix on ``path`` is replaced. Returns (json path, csv path).

    >>> import tempfile, pathlib
    >>> js, cs = save_json_csv(pathlib.Path(tempfile.mkdtemp()) / "t.json", {"n": 2}, [{"a": 1}, {"a": 2}])
    >>> js.name, cs.read_text().split()
    ('t.json', ['a', '1', '2'])
    """
    base = check_path(path, "path")
    base = base.with_suffix("") if base.suffix in (".json", ".csv") else base
    js, cs = base.with_name(base.name + ".json"), base.with_name(base.name + ".csv")
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(js) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=str))
    with atomic_path(cs) as tmp:
        tmp.write_text(buf.getvalue())
    return js, cs


def result_path(path: str | os.PathLike, name: str = "path") -> Path:
    """The file a result named ``path`` lives in: ``.safetensors`` appended unless already there;
    a ``.json`` suffix is replaced; every other suffix is kept (it is part of the user's name).

    >>> result_path("exp.run1").name, result_path("b.safetensors").name, result_path("c.json").name
    ('exp.run1.safetensors', 'b.safetensors', 'c.safetensors')
    """
    path = check_path(path, name)
    if path.suffix == SUFFIX:
        return path
    if path.suffix == ".json":
        return path.with_suffix(SUFFIX)
    return path.with_name(path.name + SUFFIX)


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def content_record(tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """{"tensors": {name: {"dtype", "shape"}}, "sha256": hash of names, dtypes, shapes and bytes}.

    >>> content_record({"a": torch.zeros(2)})["tensors"]
    {'a': {'dtype': 'float32', 'shape': [2]}}
    """
    h = hashlib.sha256()
    info = {}
    for key in sorted(tensors):
        t = tensors[key]
        dtype = str(t.dtype).removeprefix("torch.")
        info[key] = {"dtype": dtype, "shape": [int(s) for s in t.shape]}
        h.update(json.dumps([key, dtype, info[key]["shape"]]).encode())
        h.update(_tensor_bytes(t))
    return {"tensors": info, "sha256": h.hexdigest()}


def save_tensors_json(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Save tensors and JSON-able metadata in one safetensors file (atomic); returns the path written.

    The name follows :func:`result_path`. ``meta`` must be JSON-serialisable (checked before
    anything is written); the content record (dtypes, shapes, SHA-256) is added for
    :func:`load_tensors_json` to verify.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> save_tensors_json(folder / "demo.json", {"x": torch.zeros(2)}, {"kind": "Demo"}).name
    'demo.safetensors'
    """
    given = check_path(path)
    if given.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"cannot save to {given}: it is a folder; give a file name inside it "
                                f"(e.g. {given / ('result' + SUFFIX)})", str(given))
    path = result_path(given)
    if not isinstance(tensors, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in tensors.items()):
        raise TypeError("tensors must be a dict of str -> torch.Tensor")
    for key, v in tensors.items():
        if v.device.type == "meta":
            raise ValueError(f"tensor {key!r} is on the meta device (it has no data) and cannot be saved")
    try:
        meta_json = json.dumps(meta, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"the metadata of {path} is not JSON-serialisable: {err}") from None
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {"diffgeo": meta_json, "diffgeo_format": FORMAT, "diffgeo_content": json.dumps(content_record(clean))}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=header)
    return path


def _corrupt(path: Path, reason: str) -> ValueError:
    return ValueError(f"{path} is damaged: {reason}; the file was changed after diffgeo saved it (re-run the "
                      "computation or restore a copy)")


def load_tensors_json(path: str | os.PathLike,
                      kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Inverse of :func:`save_tensors_json`: (tensors, metadata), verified against the content record.

    ``path`` as given, or with ``.safetensors`` added (:func:`result_path`). With ``kind``, the file
    must have been saved with ``meta["kind"] == kind`` (removed from the returned metadata);
    another kind raises a ValueError naming both. Refused with a ValueError naming the path: a
    file that is not safetensors, one diffgeo did not write, one whose data bytes, dtypes or
    shapes differ from the saved record.

    >>> import tempfile, pathlib
    >>> path = save_tensors_json(pathlib.Path(tempfile.mkdtemp()) / "r", {"x": torch.ones(2)}, {"kind": "Demo", "n": 2})
    >>> tensors, meta = load_tensors_json(path, kind="Demo")
    >>> tensors["x"].tolist(), meta
    ([1.0, 1.0], {'n': 2})
    >>> load_tensors_json(path, kind="Basis")
    Traceback (most recent call last):
    ...
    ValueError: ... does not hold a Basis (it holds a Demo)
    """

    given = check_path(path)
    if kind is not None:
        check_str(kind, "kind")
    path = given if given.exists() else result_path(given)
    if not path.exists():
        also = f" (nor {path})" if path != given else ""
        raise FileNotFoundError(errno.ENOENT, f"{given} does not exist{also}", str(given))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{path} is a folder, not a diffgeo result file", str(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        if isinstance(err, PermissionError):
            raise
        raise ValueError(f"{path} is not a diffgeo result file: it cannot be read as safetensors ({err})") from None
    raw = header.get("diffgeo")
    if raw is None:
        raise ValueError(f"{path} is a safetensors file but was not written by diffgeo (no 'diffgeo' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise _corrupt(path, f"its metadata is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise _corrupt(path, "its metadata is not a JSON object")
    if "diffgeo_content" in header:
        try:
            saved = json.loads(header["diffgeo_content"])
            want, digest = saved["tensors"], saved["sha256"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise _corrupt(path, "its content record is unreadable") from None
        found = content_record(tensors)
        if set(want) != set(found["tensors"]):
            raise _corrupt(path, f"it holds the tensors {sorted(found['tensors'])} but was saved with {sorted(want)}")
        for key in sorted(want):
            got = found["tensors"][key]
            if want[key] != got:
                raise _corrupt(path, f"tensor {key!r} has dtype {got['dtype']} and shape {got['shape']} but was "
                                     f"saved with dtype {want[key].get('dtype')} and shape {want[key].get('shape')}")
        if found["sha256"] != digest:
            raise _corrupt(path, "its data bytes do not match the SHA-256 recorded when it was saved")
    if kind is not None:
        found_kind = meta.pop("kind", None)
        if found_kind != kind:
            raise ValueError(f"{path} does not hold a {kind} (it holds a {found_kind or 'file of unknown kind'})")
    return tensors, meta
