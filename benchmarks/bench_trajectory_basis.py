"""Bases along one trajectory: k=10 bases at 20 timesteps, warm-started, against one cold basis.

Target (issue 13): the 20 warm-started bases cost at most 5x one cold basis at the same accuracy
(max principal angle to the exact basis, full Jacobian + SVD). Everything in one process:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trajectory_basis.py --threads 1

Prints: time and Jacobian products of the 20 warm bases, of 20 cold bases (the same points), the
ratio of the warm total to the median cold basis, and the max principal angle to the exact basis
at ``--check`` timesteps for both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check", type=int, default=3, help="timesteps at which to compare with the exact basis")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import diffgeo
    from diffgeo.analyses import bases_along

    model = diffgeo.load(args.model)
    with torch.no_grad():
        traj = diffgeo.sample(model, 1, steps=args.steps, seed=args.seed, progress=False)
    ts = [int(t) for t in traj.timesteps if int(t) >= 0]

    t0, c0 = time.perf_counter(), time.process_time()
    warm = bases_along(model, traj, ts, args.k, tol=args.tol, seed=args.seed)
    warm_wall, warm_cpu = time.perf_counter() - t0, time.process_time() - c0

    cold, cold_wall, cold_cpu = [], [], []
    for i, t in enumerate(ts):
        t0, c0 = time.perf_counter(), time.process_time()
        cold.append(diffgeo.local_basis(model, traj.xs[i, 0], t, args.k, tol=args.tol, seed=args.seed, progress=False))
        cold_wall.append(time.perf_counter() - t0)
        cold_cpu.append(time.process_time() - c0)

    check = [round(j * (len(ts) - 1) / max(1, args.check - 1)) for j in range(args.check)]
    angles_warm, angles_cold = [], []
    for i in check:
        exact = diffgeo.exact_basis(model, traj.xs[i, 0], ts[i], args.k)
        angles_warm.append(float(diffgeo.principal_angles(warm[i], exact).max()))
        angles_cold.append(float(diffgeo.principal_angles(cold[i], exact).max()))

    med_wall, med_cpu = statistics.median(cold_wall), statistics.median(cold_cpu)
    prods_warm = sum(b.n_products for b in warm)
    prods_cold = [b.n_products for b in cold]
    out = {
        "warm_total_wall_s": warm_wall, "warm_total_cpu_s": warm_cpu, "warm_products": prods_warm,
        "cold_median_wall_s": med_wall, "cold_median_cpu_s": med_cpu, "cold_median_products": statistics.median(prods_cold),
        "cold_total_cpu_s": sum(cold_cpu), "cold_total_products": sum(prods_cold),
        "ratio_cpu": warm_cpu / med_cpu, "ratio_wall": warm_wall / med_wall,
        "ratio_products": prods_warm / statistics.median(prods_cold),
        "ratio_vs_20_cold_cpu": warm_cpu / sum(cold_cpu),
        "max_angle_warm": max(angles_warm), "max_angle_cold": max(angles_cold),
    }
    print(f"{args.model}: k={args.k}, {len(ts)} timesteps {ts[0]}..{ts[-1]}, tol={args.tol}, threads={args.threads}")
    print(f"  20 warm bases : {warm_cpu:7.1f} s CPU ({warm_wall:.1f} s wall), {prods_warm} products")
    print(f"  one cold basis: {med_cpu:7.2f} s CPU median ({med_wall:.2f} s wall), {statistics.median(prods_cold)} products")
    print(f"  20 cold bases : {sum(cold_cpu):7.1f} s CPU, {sum(prods_cold)} products")
    print(f"  ratio 20 warm / one cold: {out['ratio_cpu']:.1f}x CPU, {out['ratio_products']:.1f}x products "
          f"(target <= 5x); warm / 20 cold: {out['ratio_vs_20_cold_cpu']:.2f}")
    print(f"  max principal angle to exact at t={[ts[i] for i in check]}: warm {out['max_angle_warm']:.1e}, "
          f"cold {out['max_angle_cold']:.1e} rad")
    return out


if __name__ == "__main__":
    main()
