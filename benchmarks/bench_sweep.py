"""Sweep throughput in-process vs two Dask workers, the cost of a cache hit, and the trajectory-basis ratio.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sweep.py [--points 12] [--skip-trajectory]

The unit of work is the report's own: :func:`diffgeo.analyses.bases.trajectory_bases` (sample a
digits trajectory, warm-started k=3 bases at 2 timesteps). In one run: the same grid in-process
(one thread) and on a ``LocalCluster(n_workers=2, threads_per_worker=1)``, each into its own
empty cache, results compared for equality; then the in-process sweep again on the full cache
(cost per hit); then benchmarks/bench_trajectory_basis.py (20 warm bases vs one cold basis).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def _grid(n: int) -> list[dict]:
    return [{"model": "digits", "sample": i, "steps": 4, "ts": [750, 250], "k": 3, "tol": 1e-3, "seed": 0,
             "prompt": None, "branch": "cond"} for i in range(n)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=12)
    parser.add_argument("--skip-trajectory", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from distributed import Client, LocalCluster

    from diffgeo.analyses._common import load_model
    from diffgeo.analyses.bases import trajectory_bases
    from diffgeo.core.sweep import sweep

    grid = _grid(args.points)
    load_model("digits")  # load once outside the timing, as each worker does on its first task
    trajectory_bases(**grid[0])   # warm-up
    with tempfile.TemporaryDirectory() as root:
        t0, c0 = time.perf_counter(), time.process_time()
        local = sweep(trajectory_bases, grid, cache=Path(root) / "local", progress=False)
        t_local, c_local = time.perf_counter() - t0, time.process_time() - c0
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(lambda: (torch.set_num_threads(1), load_model("digits")) and None)  # the same warm start
            cpu0 = client.run(time.process_time)
            t0 = time.perf_counter()
            remote = sweep(trajectory_bases, grid, cache=Path(root) / "dask", client=client, progress=False)
            t_dask = time.perf_counter() - t0
            cpu1 = client.run(time.process_time)
            c_dask = sum(cpu1[w] - cpu0[w] for w in cpu1)
        equal = all(torch.equal(a["v"], b["v"]) and torch.equal(a["s"], b["s"])
                    for a, b in zip(local.results, remote.results))
        t0 = time.perf_counter()
        hits = sweep(trajectory_bases, grid, cache=Path(root) / "local", progress=False)
        t_hit = (time.perf_counter() - t0) / len(grid)
        assert hits.n_cached == len(grid)
    out = {"points": len(grid), "in_process_s": t_local, "dask_2_workers_s": t_dask,
           "speedup": t_local / t_dask, "equal": equal, "cache_hit_ms": 1e3 * t_hit,
           "compute_per_point_s": t_local / len(grid), "in_process_cpu_s": c_local, "dask_workers_cpu_s": c_dask}
    print(f"sweep of {len(grid)} points (digits, k=3 bases at 2 timesteps per point)")
    print(f"  in-process (1 thread): {t_local:6.1f} s wall, {c_local:6.1f} s CPU ({t_local / len(grid):.2f} s per point)")
    print(f"  Dask, 2 workers      : {t_dask:6.1f} s wall, {c_dask:6.1f} s CPU over both workers -> throughput "
          f"ratio {out['speedup']:.2f}x; results equal: {equal}")
    print("  (the ratio needs two idle cores: on a machine shared with other jobs it shows their share, not Dask's)")
    print(f"  cache hit            : {1e3 * t_hit:6.1f} ms per point ({t_hit / (t_local / len(grid)):.1%} of computing it)")
    if not args.skip_trajectory:
        sys.path.insert(0, str(Path(__file__).parent))
        import bench_trajectory_basis

        out["trajectory"] = bench_trajectory_basis.main(["--threads", "1"])
    return out


if __name__ == "__main__":
    main()
