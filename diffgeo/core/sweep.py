"""Map a computation over a grid (sample, t, prompt, ...) with a content-addressed, resumable cache.

``sweep(fn, grid, cache=DIR)`` calls ``fn(**params)`` for every point of ``grid`` and returns the
results in grid order. With a cache folder each result is written as soon as it exists, as one
safetensors file named by the SHA-256 of what determines it: the computation's name and
``version``, the caller's ``context`` (e.g. a model fingerprint), the diffgeo version and the
parameters. So

* a sweep killed at any moment resumes where it stopped: finished points are read back, not
  recomputed (files are written to a temporary name and renamed, never half-written);
* a corrupt entry (unreadable, or its content hash does not match, checked by :mod:`diffgeo.core.io`) or a foreign one (written for other parameters,
  another version or another model) is detected, logged and recomputed, never used;
* a cache folder whose cache.json is unreadable or written by another diffgeo version is reported
  (``SweepResult.notes``) and none of its entries is read: each is recomputed and rewritten;
  entries of another context are never used (the context is part of every key);
* hidden temporary files left by writers killed mid-write are removed by the next sweep (once their
  writer's process is gone, or after :data:`STALE_TMP_SECONDS`).

Results are mappings of names to tensors or JSON values (numbers, strings, lists, dicts); tensors
go to safetensors, the rest to the file's JSON metadata (no pickle on disk). One tqdm bar covers
the whole sweep. The default runs in-process; pass a ``dask.distributed.Client`` (or its address)
as ``client`` to run the missing points on a Dask cluster: ``fn`` must then be importable or
picklable by the workers, and the driver writes each entry as its result arrives.

>>> import tempfile
>>> def square(x):
...     return {"y": torch.tensor(float(x) ** 2), "label": f"x={x}"}
>>> folder = tempfile.mkdtemp()
>>> first = sweep(square, {"x": [1, 2, 3]}, cache=folder, progress=False)
>>> [float(r["y"]) for r in first.results], first.n_computed
([1.0, 4.0, 9.0], 3)
>>> again = sweep(square, {"x": [1, 2, 3, 4]}, cache=folder, progress=False)
>>> again.n_cached, again.n_computed, again.results[3]["label"]
(3, 1, 'x=4')
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import itertools
import json
import logging
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from diffgeo.core.io import atomic_path, content_record, is_stale_temporary, load_tensors_json, save_tensors_json
from diffgeo.core.progress import progress_bar

__all__ = ["sweep", "grid_points", "SweepResult", "entry_key", "model_fingerprint", "check_cache", "CACHE_INFO"]

log = logging.getLogger(__name__)

CACHE_INFO = "cache.json"
_FORMAT = 1
_KIND = "SweepEntry"


def _version() -> str:
    """The installed diffgeo version (part of every cache key)."""
    return importlib.metadata.version("diffgeo")


# -- the grid ----------------------------------------------------------------------------------
def grid_points(grid: Mapping[str, Sequence[Any]] | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The points of a grid as a list of parameter dicts.

    ``grid``: a mapping of axis name -> values (the Cartesian product, last axis fastest), or an
    iterable of parameter dicts (taken as they are). Values must be JSON values.

    >>> grid_points({"sample": [0, 1], "t": [900, 500]})
    [{'sample': 0, 't': 900}, {'sample': 0, 't': 500}, {'sample': 1, 't': 900}, {'sample': 1, 't': 500}]
    """
    if isinstance(grid, Mapping):
        names = list(grid)
        for name in names:
            if isinstance(grid[name], (str, bytes)) or not isinstance(grid[name], Iterable):
                raise TypeError(f"grid axis {name!r} must be a sequence of values, got {type(grid[name]).__name__}")
        axes = [list(grid[n]) for n in names]
        points = [dict(zip(names, combo)) for combo in itertools.product(*axes)]
    else:
        points = [dict(p) for p in grid]
    for p in points:
        _canonical(p, "grid point")
    return points


def _canonical(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must hold JSON values only (numbers, strings, lists, dicts): {err}") from None


def entry_key(name: str, params: Mapping[str, Any], *, version: str = "", context: Mapping[str, Any] | None = None
              ) -> tuple[str, dict[str, Any]]:
    """(SHA-256 hex key, spec): what the cache entry of one point is named by.

    >>> key, spec = entry_key("f", {"x": 1}, context={"model": "abc"})
    >>> len(key), spec["params"]
    (64, {'x': 1})
    """
    spec = {"format": _FORMAT, "fn": name, "fn_version": version, "diffgeo": _version(),
            "context": dict(context or {}), "params": dict(params)}
    return hashlib.sha256(_canonical(spec, "the sweep spec").encode()).hexdigest(), spec


def model_fingerprint(model: Any) -> str:
    """A short fingerprint of a Model's weights and configuration: the SHA-256 of the configuration and
    of every tensor's name, dtype, shape and data bytes (:func:`diffgeo.core.io.content_record`).

    Two models whose weights differ in any byte (or with another h module) get different fingerprints;
    swapping two weights inside one tensor changes it.

    >>> import diffgeo
    >>> len(model_fingerprint(diffgeo.load("shapes")))
    16
    """
    config = _canonical({"name": getattr(model, "name", ""), "h_module": getattr(model, "h_module", ""),
                         "prediction_type": str(getattr(model, "prediction_type", "")),
                         # "_name_or_path" is where the folder was loaded from: not part of the model
                         "config": {k: str(v) for k, v in dict(model.unet.config).items() if k != "_name_or_path"}},
                        "config")
    state = model.unet.state_dict()
    # the hash of the bytes is remembered while every tensor is the same storage at the same version
    # (any in-place change, load_state_dict or .to() changes one of them): seconds saved per sweep on
    # Stable Diffusion's 3.4 GB, which hashes at about 0.3 GB/s
    key = (config, tuple((k, v.data_ptr(), v._version, str(v.dtype), tuple(v.shape), str(v.device))
                         for k, v in state.items()))
    known = _FINGERPRINTS.get(model.unet)
    if known is not None and known[0] == key:
        return known[1]
    h = hashlib.sha256(config.encode())
    with torch.no_grad():
        h.update(content_record(dict(state))["sha256"].encode())
    _FINGERPRINTS[model.unet] = (key, h.hexdigest()[:16])
    return h.hexdigest()[:16]


#: U-Net -> (what its bytes were hashed at, fingerprint); an entry goes with its U-Net.
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# -- entries -----------------------------------------------------------------------------------
def _split(result: Any, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not isinstance(result, Mapping):
        raise TypeError(f"{name} returned {type(result).__name__}; a swept computation returns a dict of "
                        "tensors and JSON values")
    tensors = {k: v.detach().cpu().contiguous() for k, v in result.items() if isinstance(v, torch.Tensor)}
    values = {k: v for k, v in result.items() if not isinstance(v, torch.Tensor)}
    _canonical(values, f"the non-tensor values returned by {name}")
    return tensors, values


def _entry_path(folder: Path, key: str) -> Path:
    return folder / key[:2] / f"{key}.safetensors"


def _write_entry(path: Path, key: str, spec: dict, tensors: dict[str, torch.Tensor], values: dict) -> None:
    meta = {"kind": _KIND, "key": key, "spec": spec, "values": values}
    save_tensors_json(path, tensors, meta)


def _read_entry(path: Path, key: str, spec: dict) -> tuple[dict[str, Any] | None, str | None]:
    """(result, None) for a valid entry; (None, reason) when it is missing, corrupt or foreign."""
    if not path.exists():
        return None, None
    try:
        tensors, meta = load_tensors_json(path, kind=_KIND)
    except Exception as err:  # truncated, damaged (io checks the content's SHA-256), not ours: "do not use"
        return None, f"unreadable ({type(err).__name__}: {err})"
    if meta.get("key") != key or meta.get("spec") != spec:
        return None, "foreign (written for another computation, version, model or parameters)"
    return {**tensors, **meta.get("values", {})}, None


def check_cache(folder: str | Path, context: dict) -> list[str]:
    """Compare a cache folder's cache.json with this diffgeo version and ``context``: a list of notes
    (empty when they match), each also logged. Then (re)writes cache.json for this run.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> check_cache(folder, {"model": "a"}), len(check_cache(folder, {"model": "b"}))
    ([], 1)
    """
    return _check_cache(Path(folder), context)[0]


def _check_cache(folder: Path, context: dict) -> tuple[list[str], bool]:
    """(notes, trusted): untrusted when cache.json is unreadable, not diffgeo's, or written by another
    diffgeo version or format; then no entry of the folder is read (each is recomputed and rewritten)."""
    info_path = folder / CACHE_INFO
    mine = {"diffgeo": _version(), "format": _FORMAT, "context": context}
    notes: list[str] = []
    trusted = True
    if info_path.exists():
        try:
            theirs = json.loads(info_path.read_text())
        except (OSError, ValueError):
            theirs = None
        if not isinstance(theirs, dict) or not isinstance(theirs.get("context", {}), dict):
            trusted = False
            note = (f"cache folder {folder}: {CACHE_INFO} is unreadable or not diffgeo's; none of its entries are "
                    "used (each is recomputed and rewritten)")
        elif theirs.get("diffgeo") != mine["diffgeo"] or theirs.get("format") != _FORMAT:
            trusted = False
            note = (f"cache folder {folder} was written by diffgeo {theirs.get('diffgeo', '?')} (format "
                    f"{theirs.get('format', '?')}; this is {mine['diffgeo']}, format {_FORMAT}): none of its entries "
                    "are used (each is recomputed and rewritten)")
        elif theirs.get("context") != context:
            note = (f"cache folder {folder} was written by a run with context {theirs.get('context')} (this is "
                    f"{context}): entries are keyed by context, so only those of this context are used")
        else:
            note = None
        if note is not None:
            log.warning(note)
            notes.append(note)
    if not notes and info_path.exists():
        return notes, trusted
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(info_path) as tmp:
        tmp.write_text(json.dumps(mine, indent=1, sort_keys=True))
    return notes, trusted


#: a hidden temporary file of a killed writer is removed by the next sweep once its writer's process is
#: gone (same host) or, when that cannot be told, once it is this old (no entry write takes an hour).
STALE_TMP_SECONDS = 3600.0


def _remove_stale_temporaries(folder: Path) -> int:
    """Remove the ``.NAME.*.tmp`` files killed writers left in the cache folder; returns how many."""
    removed = 0
    for parent in [folder, *[p for p in folder.iterdir() if p.is_dir() and len(p.name) == 2]]:
        for tmp in parent.glob(".*.tmp"):
            if is_stale_temporary(tmp, STALE_TMP_SECONDS):
                try:
                    tmp.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
    if removed:
        log.info("cache folder %s: removed %d temporary file(s) left by killed writers", folder, removed)
    return removed


# -- the sweep ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepResult:
    """The results of a sweep in grid order.

    points: the parameter dicts; results: one dict per point (tensors and JSON values);
    n_computed / n_cached: points computed now / read from the cache; rejected: (params, reason)
    of cache entries found corrupt or foreign (recomputed); notes: what the cache check found.
    """

    points: list[dict[str, Any]]
    results: list[dict[str, Any]]
    n_computed: int
    n_cached: int
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.points)

    def select(self, **fixed: Any) -> list[dict[str, Any]]:
        """The results whose parameters match ``fixed`` (in grid order).

        >>> r = SweepResult([{"a": 1}, {"a": 2}], [{"y": 1}, {"y": 2}], 2, 0)
        >>> r.select(a=2)
        [{'y': 2}]
        """
        return [res for p, res in zip(self.points, self.results) if all(p.get(k) == v for k, v in fixed.items())]


def _fn_name(fn: Callable, name: str | None) -> str:
    if name is not None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")
        return name
    qual = getattr(fn, "__qualname__", None)
    if qual is None or "<lambda>" in qual or "<locals>" in qual:
        raise ValueError("fn has no stable name (a lambda, a local function or a partial): pass name= so that "
                         "its cache entries can be found again")
    return f"{fn.__module__}.{qual}"


def _compute(fn: Callable, params: dict) -> Any:
    return fn(**params)


def _as_client(client: Any) -> tuple[Any, bool]:
    if client is None:
        return None, False
    if isinstance(client, str):
        try:
            from distributed import Client
        except ImportError as err:
            raise ImportError("a Dask address was given but dask.distributed is not installed: "
                              "pip install 'dask>=2024.1' 'distributed>=2024.1'") from err
        return Client(client), True
    if not (hasattr(client, "submit") and hasattr(client, "gather")):
        raise TypeError(f"client must be a dask.distributed.Client or its address (str), got {type(client).__name__}")
    return client, False


def sweep(fn: Callable[..., Mapping[str, Any]], grid: Mapping[str, Sequence[Any]] | Iterable[Mapping[str, Any]], *,
          cache: str | Path | None = None, name: str | None = None, version: str = "",
          context: Mapping[str, Any] | None = None, client: Any = None, progress: bool | None = None,
          desc: str = "sweep") -> SweepResult:
    """Compute ``fn(**params)`` for every point of ``grid``; cached, resumable, optionally on Dask.

    fn: returns a dict of tensors and JSON values. grid: axis name -> values (Cartesian product)
    or a list of parameter dicts (see :func:`grid_points`). cache: folder for the entries (None:
    no cache). name / version: identify the computation in the key (default: fn's module and
    qualified name; bump ``version`` when its code changes). context: JSON facts the results depend
    on besides the parameters, e.g. ``{"model": model_fingerprint(model)}``. client: a
    ``dask.distributed.Client`` or a scheduler address; None runs in this process.

    >>> def cube(x):
    ...     return {"y": x ** 3}
    >>> sweep(cube, [{"x": 2}, {"x": 3}], progress=False).results
    [{'y': 8}, {'y': 27}]
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    fn_name = _fn_name(fn, name)
    ctx = dict(context or {})
    _canonical(ctx, "context")
    points = grid_points(grid)
    folder = None if cache is None else Path(cache)
    notes: list[str] = []
    trusted = True
    if folder is not None:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"cache={str(folder)!r} is a file; pass a folder for the sweep cache")
        notes, trusted = _check_cache(folder, ctx)
        _remove_stale_temporaries(folder)
    keys = [entry_key(fn_name, p, version=version, context=ctx) for p in points]
    results: list[dict | None] = [None] * len(points)
    rejected: list[tuple[dict, str]] = []
    todo: list[int] = []
    bar = progress_bar(total=len(points), desc=desc, progress=progress)
    try:
        for i, (key, spec) in enumerate(keys):
            if folder is not None and trusted:
                res, why = _read_entry(_entry_path(folder, key), key, spec)
                if why is not None:
                    log.warning("sweep %s: cache entry for %s is %s; recomputing it", fn_name, points[i], why)
                    rejected.append((points[i], why))
                if res is not None:
                    results[i] = res
                    bar.update(1)
                    continue
            todo.append(i)

        def finish(i: int, out: Any) -> None:
            tensors, values = _split(out, fn_name)
            if folder is not None:
                key, spec = keys[i]
                _write_entry(_entry_path(folder, key), key, spec, tensors, values)
            results[i] = {**tensors, **values}
            bar.update(1)

        dask_client, own = _as_client(client)
        try:
            if dask_client is None:
                for i in todo:
                    finish(i, fn(**points[i]))
            elif todo:
                from distributed import as_completed

                futures = {dask_client.submit(_compute, fn, points[i], pure=False): i for i in todo}
                try:
                    for fut in as_completed(list(futures)):
                        finish(futures[fut], fut.result())
                except BaseException:
                    dask_client.cancel(list(futures))
                    raise
        finally:
            if own:
                dask_client.close()
    finally:
        bar.close()
    return SweepResult(points=points, results=results, n_computed=len(todo), n_cached=len(points) - len(todo),
                       rejected=rejected, notes=notes)
