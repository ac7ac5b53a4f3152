"""diffgeo.core.sweep: cache hits, resume after SIGKILL, corrupt/foreign entries, Dask equals in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import diffgeo
from diffgeo.core.sweep import CACHE_INFO, sweep

ROOT = Path(__file__).resolve().parents[1]


def linear_spectrum(seed: int, k: int = 3) -> dict:
    """Top-k singular triplets of a random linear map, through diffgeo.exact_basis (float64)."""
    a = torch.randn(7, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    basis = diffgeo.exact_basis(_Linear(a), torch.zeros(5, dtype=torch.float64), None, k)
    return {"s": basis.s, "v": basis.v, "seed_echo": seed}


class _Linear:
    def __init__(self, a):
        self.a = a

    def __call__(self, x):
        return self.a @ x


def _entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*/*.safetensors"))


def test_results_match_reference_and_cache_hits(tmp_path):
    grid = {"seed": [0, 1, 2]}
    first = sweep(linear_spectrum, grid, cache=tmp_path, progress=False)
    assert first.n_computed == 3 and first.n_cached == 0
    for p, r in zip(first.points, first.results):   # independent reference: svdvals of the same matrix
        a = torch.randn(7, 5, generator=torch.Generator().manual_seed(p["seed"]), dtype=torch.float64)
        torch.testing.assert_close(r["s"], torch.linalg.svdvals(a)[:3])
        assert r["seed_echo"] == p["seed"]
    assert len(_entries(tmp_path)) == 3
    again = sweep(linear_spectrum, grid, cache=tmp_path, progress=False)
    assert again.n_cached == 3 and again.n_computed == 0
    for r0, r1 in zip(first.results, again.results):
        assert torch.equal(r0["s"], r1["s"]) and torch.equal(r0["v"], r1["v"])


def test_corrupt_and_foreign_entries_are_recomputed(tmp_path):
    grid = {"seed": [0, 1, 2]}
    sweep(linear_spectrum, grid, cache=tmp_path, progress=False)
    files = _entries(tmp_path)
    by_seed = {}
    for f in files:
        from safetensors import safe_open

        with safe_open(str(f), framework="pt") as h:
            by_seed[json.loads(h.metadata()["diffgeo"])["spec"]["params"]["seed"]] = f
    data = by_seed[0].read_bytes()
    by_seed[0].write_bytes(data[: len(data) // 2])                  # truncated
    by_seed[1].write_bytes(by_seed[2].read_bytes())                 # another point's entry under seed 1's name
    flipped = bytearray(by_seed[2].read_bytes())
    flipped[-1] ^= 0x01                                              # one bit of seed 2's tensor data
    by_seed[2].write_bytes(bytes(flipped))
    calls = []

    def counted(seed):
        calls.append(seed)
        return linear_spectrum(seed)

    out = sweep(counted, grid, cache=tmp_path, progress=False, name=f"{__name__}.linear_spectrum")
    assert sorted(calls) == [0, 1, 2] and out.n_cached == 0
    assert {p["seed"] for p, _ in out.rejected} == {0, 1, 2}
    for p, r in zip(out.points, out.results):
        assert r["seed_echo"] == p["seed"]
    # the rewritten entries are valid again: a third run computes nothing
    assert sweep(linear_spectrum, grid, cache=tmp_path, progress=False).n_computed == 0


def test_other_context_or_version_is_detected(tmp_path):
    sweep(linear_spectrum, {"seed": [0, 1]}, cache=tmp_path, context={"model": "a"}, progress=False)
    other = sweep(linear_spectrum, {"seed": [0, 1]}, cache=tmp_path, context={"model": "b"}, progress=False)
    assert other.n_computed == 2 and other.notes and "context" in other.notes[0]
    info = json.loads((tmp_path / CACHE_INFO).read_text())
    info["diffgeo"] = "0.0.0-old"
    (tmp_path / CACHE_INFO).write_text(json.dumps(info))
    old = sweep(linear_spectrum, {"seed": [0, 1]}, cache=tmp_path, context={"model": "b"}, progress=False)
    assert old.notes and "0.0.0-old" in old.notes[0]


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="name="):
        sweep(lambda seed: {"y": seed}, {"seed": [0]}, progress=False)
    with pytest.raises(TypeError, match="dict of tensors"):
        sweep(lambda seed: seed, {"seed": [0]}, name="bad", cache=tmp_path, progress=False)
    assert _entries(tmp_path) == []
    with pytest.raises(TypeError, match="JSON"):
        sweep(linear_spectrum, {"seed": [torch.tensor(1)]}, progress=False)
    with pytest.raises(TypeError, match="client"):
        sweep(linear_spectrum, {"seed": [0]}, client=42, progress=False)


_KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time, torch
    from diffgeo.core.sweep import sweep
    log = open(os.environ["SWEEP_LOG"], "a")

    def slow_square(i):
        time.sleep(0.15)
        log.write(f"{i}\\n"); log.flush()
        return {"y": torch.full((64,), float(i) ** 2), "i": i}

    sweep(slow_square, {"i": list(range(30))}, cache=sys.argv[1], name="slow_square", progress=False)
""")


def test_sigkill_then_resume_recomputes_nothing_finished(tmp_path):
    script = tmp_path / "run_sweep.py"
    script.write_text(_KILL_SCRIPT)
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), str(cache)], env={**env, "SWEEP_LOG": str(tmp_path / "1.log")})
    deadline = time.time() + 60
    while len(_entries(cache)) < 8 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = {_entry_index(f) for f in _entries(cache)}
    assert 8 <= len(finished) < 30, "the sweep must be killed mid-way"
    run2 = subprocess.run([sys.executable, str(script), str(cache)], env={**env, "SWEEP_LOG": str(tmp_path / "2.log")},
                          timeout=120)
    assert run2.returncode == 0
    recomputed = {int(line) for line in (tmp_path / "2.log").read_text().split()}
    assert not recomputed & finished                       # nothing finished was recomputed
    assert recomputed | finished == set(range(30))         # and everything else was
    from safetensors.torch import load_file

    for f in _entries(cache):                              # nothing is corrupt: every entry holds its own value
        i = _entry_index(f)
        assert torch.equal(load_file(str(f))["y"], torch.full((64,), float(i) ** 2))
    assert len(_entries(cache)) == 30


def _entry_index(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as h:
        return json.loads(h.metadata()["diffgeo"])["spec"]["params"]["i"]


def test_dask_local_cluster_equals_in_process(tmp_path):
    distributed = pytest.importorskip("distributed")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    grid = {"seed": list(range(6)), "k": [2, 3]}
    local = sweep(linear_spectrum, grid, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        remote = sweep(linear_spectrum, grid, cache=tmp_path, client=client, progress=False)
        workers = {w for w in client.run(os.getpid).values()}
    assert len(workers) == 2 and os.getpid() not in workers
    assert remote.points == local.points and remote.n_computed == 12
    for a, b in zip(local.results, remote.results):
        assert torch.equal(a["s"], b["s"]) and torch.equal(a["v"], b["v"]) and a["seed_echo"] == b["seed_echo"]
    # the entries the Dask run wrote serve an in-process run
    assert sweep(linear_spectrum, grid, cache=tmp_path, progress=False).n_cached == 12


def test_model_fingerprint_follows_the_weights_not_the_folder(tmp_path, shapes_model):
    # the same weights loaded from another place (a fresh clone, a copied folder) get the same
    # fingerprint, so saved results stay valid there; changed weights get another
    import shutil

    import diffgeo
    from diffgeo.models.loading import EMBEDDED_DIR
    from diffgeo.core.sweep import model_fingerprint

    copy = shutil.copytree(EMBEDDED_DIR / "shapes", tmp_path / "elsewhere" / "shapes")  # same name, other place
    other = diffgeo.load(copy, device="cpu")
    assert model_fingerprint(other) == model_fingerprint(shapes_model)
    with torch.no_grad():
        next(other.unet.parameters()).add_(1e-3)
    assert model_fingerprint(other) != model_fingerprint(shapes_model)
