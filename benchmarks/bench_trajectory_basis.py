"""Bases along one trajectory: k=10 bases at 20 timesteps, warm-started, against one cold basis.

Target (issue 13): the 20 warm-started bases cost at most 5x one cold basis at the same accuracy
(max principal angle to the exact basis, full Jacobian + SVD). Everything in one process:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trajectory_basis.py --threads 1

Runs, on the states of one 20-step trajectory: a cold basis at every timestep (random start), the
warm chain of ``bases_along`` at ``--tol`` and again at ``--warm-tol`` (default tol/3: the residual
test is the same for both starts, but a cold block Krylov run overshoots it by up to 10x in its last
iteration while the warm run stops just below it, so equal accuracy needs a tighter warm tol), and
the exact basis at ``--check`` timesteps. Prints a per-timestep table (Jacobian products and wall
seconds, cold and warm; principal angles between the bases at neighbouring timesteps, which bound
what a warm start can save) and the ratios: total of the 20 warm bases over the median cold basis,
in products and in wall-clock seconds, with the max principal angle to the exact basis of each.
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
    parser.add_argument("--warm-tol", type=float, default=None, help="second warm run's tol (default tol/3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check", type=int, default=3, help="timesteps at which to compare with the exact basis")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warm_tol = args.tol / 3 if args.warm_tol is None else args.warm_tol
    torch.set_num_threads(args.threads)
    import diffgeo

    model = diffgeo.load(args.model)
    with torch.no_grad():
        traj = diffgeo.sample(model, 1, steps=args.steps, seed=args.seed, progress=False)
    ts = [int(t) for t in traj.timesteps if int(t) >= 0]
    xs = traj.xs[: len(ts), 0]

    cold, cold_wall = [], []
    for x, t in zip(xs, ts):
        t0 = time.perf_counter()
        cold.append(diffgeo.local_basis(model, x, t, args.k, tol=args.tol, seed=args.seed, progress=False))
        cold_wall.append(time.perf_counter() - t0)

    runs = {}
    for name, tol in (("warm", args.tol), ("warm_tight", warm_tol)):
        walls, bases = [], []
        for x, t in zip(xs, ts):  # what bases_along does, one basis at a time to time each
            t0 = time.perf_counter()
            bases.append(diffgeo.local_basis(model, x, t, args.k, tol=tol, seed=args.seed, progress=False,
                                             init=bases[-1] if bases else None))
            walls.append(time.perf_counter() - t0)
        runs[name] = (tol, bases, walls)

    check = [round(j * (len(ts) - 1) / max(1, args.check - 1)) for j in range(args.check)]
    angle = {name: [] for name in ("cold", *runs)}
    for i in check:
        exact = diffgeo.exact_basis(model, xs[i], ts[i], args.k)
        angle["cold"].append(float(diffgeo.principal_angles(cold[i], exact).max()))
        for name, (_, bases, _) in runs.items():
            angle[name].append(float(diffgeo.principal_angles(bases[i], exact).max()))
    neighbour = [diffgeo.principal_angles(cold[i - 1], cold[i]) for i in range(1, len(ts))]

    med_prod = statistics.median(b.n_products for b in cold)
    med_wall = statistics.median(cold_wall)
    print(f"{args.model}: k={args.k}, {len(ts)} timesteps {ts[0]}..{ts[-1]}, tol={args.tol}, threads={args.threads}")
    print()
    print(f"| t | cold products | cold s | warm products (tol {args.tol:g}) | warm s | warm products (tol {warm_tol:.2g}) "
          "| warm s | angle to previous t: median / max (rad) |")
    print("|---|---|---|---|---|---|---|---|")
    for i, t in enumerate(ts):
        nb = "" if i == 0 else f"{float(neighbour[i - 1].median()):.2f} / {float(neighbour[i - 1].max()):.2f}"
        w, wt = runs["warm"], runs["warm_tight"]
        print(f"| {t} | {cold[i].n_products} | {cold_wall[i]:.2f} | {w[1][i].n_products} | {w[2][i]:.2f} "
              f"| {wt[1][i].n_products} | {wt[2][i]:.2f} | {nb} |")
    print()
    out = {"ts": ts, "check_ts": [ts[i] for i in check], "cold_median_products": med_prod, "cold_median_wall_s": med_wall,
           "max_angle_cold": max(angle["cold"]), "angles_cold": angle["cold"],
           "neighbour_max_angle_median": statistics.median(float(a.max()) for a in neighbour),
           "neighbour_median_angle_median": statistics.median(float(a.median()) for a in neighbour)}
    print(f"one cold basis (median of {len(ts)}): {med_prod:.0f} products, {med_wall:.2f} s wall; "
          f"max angle to exact at t={out['check_ts']}: {max(angle['cold']):.1e} rad "
          f"({', '.join(f'{a:.1e}' for a in angle['cold'])})")
    for name, (tol, bases, walls) in runs.items():
        prods = sum(b.n_products for b in bases)
        warm_only = [b.n_products for b in bases[1:]]
        out[name] = {"tol": tol, "total_products": prods, "total_wall_s": sum(walls),
                     "ratio_products": prods / med_prod, "ratio_wall": sum(walls) / med_wall,
                     "median_warm_products": statistics.median(warm_only), "max_angle": max(angle[name]),
                     "angles": angle[name], "as_accurate_as_cold": max(angle[name]) <= max(angle["cold"])}
        print(f"20 bases, warm chain at tol {tol:.2g}: {prods} products, {sum(walls):.1f} s wall -> "
              f"{out[name]['ratio_products']:.1f}x products, {out[name]['ratio_wall']:.1f}x wall of one cold basis "
              f"(target <= 5x); median warm basis {statistics.median(warm_only):.0f} products; max angle to exact "
              f"{max(angle[name]):.1e} rad ({', '.join(f'{a:.1e}' for a in angle[name])}); "
              f"{'as accurate as' if out[name]['as_accurate_as_cold'] else 'LESS accurate than'} cold")
    print(f"neighbouring timesteps' bases (cold): median over steps of the max principal angle "
          f"{out['neighbour_max_angle_median']:.2f} rad, of the median angle {out['neighbour_median_angle_median']:.2f} rad")
    return out


if __name__ == "__main__":
    main()
