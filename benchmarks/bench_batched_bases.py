"""Benchmark: B local bases in one call (diffgeo.local_bases) against B calls of diffgeo.local_basis.

Both run the same block Krylov solver from the same seed on the same points, so they do the same
number of products; the batched call stacks every point's block into one vmapped product (the h
map is per sample, so its Jacobian on a stack of points is block-diagonal). The variants alternate
and each keeps its fastest of ``--repeats`` runs, in one process, so the ratio is measured under the
same load. Accuracy: the largest principal angle between each batched basis and its one-at-a-time
twin, and of both against the exact SVD of the full Jacobian on ``--exact`` points.

    python benchmarks/bench_batched_bases.py                     # shapes, 16 points, k=10, 1 thread
    python benchmarks/bench_batched_bases.py --device cuda --threads 16
"""

from __future__ import annotations

import argparse
import time

import torch

import diffgeo
from diffgeo.data.shapes import make_scenes
from diffgeo.geometry.subspaces import principal_angles


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--points", type=int, default=16)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--t", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--exact", type=int, default=2, help="points checked against the exact SVD")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = diffgeo.load(args.model, device=args.device)
    device = model.device
    x0 = make_scenes(args.points, seed=11).images.to(device, model.dtype)
    a = float(model.alphas_cumprod[args.t])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(12)).to(device, model.dtype)
    xs = a ** 0.5 * x0 + (1 - a) ** 0.5 * noise

    def one_call():
        return diffgeo.local_bases(model, xs, args.t, args.k, seed=0, progress=False)

    def many_calls():
        return [diffgeo.local_basis(model, x, args.t, args.k, seed=0, progress=False) for x in xs]

    best = {"one call": float("inf"), f"{args.points} calls": float("inf")}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("one call", one_call), (f"{args.points} calls", many_calls)):
            seconds, out = _timed(fn, device)
            best[name] = min(best[name], seconds)
            results[name] = out
    batched, single = results["one call"], results[f"{args.points} calls"]
    twin = max(float(principal_angles(b, s).max()) for b, s in zip(batched, single))
    products = sum(b.n_products for b in batched), sum(s.n_products for s in single)
    print(f"{args.model}: {args.points} bases, k={args.k}, t={args.t}, {device}, {args.threads} thread(s), "
          f"best of {args.repeats}")
    for name, seconds in best.items():
        print(f"  {name:>10}: {seconds:7.2f} s  ({seconds / args.points:.3f} s per basis)")
    ratio = best["one call"] / best[f"{args.points} calls"]
    print(f"  ratio one call / {args.points} calls: {ratio:.2f}   products {products[0]} vs {products[1]}")
    print(f"  max angle batched vs one-at-a-time: {twin:.1e} rad; max residual "
          f"{max(float(b.residuals.max()) for b in batched):.1e}")
    for i in range(min(args.exact, args.points)):
        ex = diffgeo.exact_basis(model, xs[i], args.t, args.k)
        print(f"  point {i}: angle to exact SVD batched {float(principal_angles(batched[i], ex).max()):.1e}, "
              f"one-at-a-time {float(principal_angles(single[i], ex).max()):.1e}")


if __name__ == "__main__":
    main()
