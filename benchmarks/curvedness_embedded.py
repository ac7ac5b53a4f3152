"""Curvedness (diffgeo's definitions (a)-(c), see diffgeo.geometry.subspaces) of segments on the embedded model.

For each timestep, pairs of noisy samples x_a, x_b (two different scenes of the shapes data,
forward-noised to t with independent noise) and the straight segment between them:

    python benchmarks/curvedness_embedded.py --timesteps 100 500 900 --pairs 2 --k 10
"""

from __future__ import annotations

import argparse
import time

import torch

import diffgeo
from diffgeo.data.shapes import make_scenes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="shapes")
    p.add_argument("--timesteps", type=int, nargs="+", default=[100, 500, 900])
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--points", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = diffgeo.load(args.model)
    scenes = make_scenes(2 * args.pairs, seed=42).images.to(model.dtype)
    gen = torch.Generator().manual_seed(0)
    print(f"model {model.name}, k={args.k}, {args.points} points per segment")
    print("| t | pair | (a) rotation (rad per unit length) | (b) off-tangent fraction | (c) excess length | "
          "chord in X | seconds |")
    print("|---|---|---|---|---|---|---|")
    for t in args.timesteps:
        a = model.alphas_cumprod[t].to(model.dtype)
        for i in range(args.pairs):
            xa = a.sqrt() * scenes[2 * i] + (1 - a).sqrt() * torch.randn(model.x_shape, generator=gen)
            xb = a.sqrt() * scenes[2 * i + 1] + (1 - a).sqrt() * torch.randn(model.x_shape, generator=gen)
            t0 = time.perf_counter()
            c = diffgeo.curvedness(model, xa, xb, t, k=args.k, n_points=args.points, tol=1e-3, progress=False)
            print(f"| {t} | {i} | {c.rotation:.4f} | {c.off_tangent:.3f} | {c.excess_length:.3f} | {c.chord_x:.1f} "
                  f"| {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
