"""Inversion round trips at the issue's size: 64 images x 50 steps per set, fixed-point against plain.

    python benchmarks/bench_inversion.py --n 64 --steps 50 --threads 1 [--out inversion.json]

Three sets: ``shapes``' own samples (DDIM from seed 31), real ``shapes`` scenes from a seed never
used in training (``make_scenes(n, seed=987_654)``: training draws scenes from seeds
``seed * 1_000_003 + step``, steps < 10_000, and the probe from 10_000_000 + step) and real UCI
digits with their canonical prompt. Each set is inverted with ``method="fixed_point"`` and
``method="ddim"`` and sampled back (``use_clipped_model_output=True`` on both sides), in one
process, so the time ratio fixed-point / plain is taken under the same load. Prints JSON: per
set the round-trip RMSE (mean, median, 95th percentile, max, count over 0.02), U-Net calls per
step (mean over samples, per step and overall), the unconverged steps, and the ratios
fixed-point / plain of wall time, CPU time and per-sample U-Net evaluations (the last two do not
depend on the machine's load).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import diffgeo
from diffgeo.data.digits import canonical_digit_caption, load_digits_images

TARGET = 0.02
UNSEEN_SEED = 987_654


def _rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).pow(2).mean(1).sqrt()


def _stats(r: torch.Tensor) -> dict:
    r = r.double()
    return {"mean": float(r.mean()), "median": float(r.median()), "p95": float(r.quantile(0.95)),
            "max": float(r.max()), "over_target": int((r > TARGET).sum()), "n": len(r)}


def round_trip(model, x0: torch.Tensor, steps: int, **kw) -> dict:
    """Both inversions of x0, timed, and their round-trip errors."""
    out: dict = {}
    for method in ("ddim", "fixed_point"):
        t0, c0 = time.perf_counter(), time.process_time()
        inv = diffgeo.invert(model, x0, steps=steps, method=method, use_clipped_model_output=True, progress=False,
                             **kw)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        back = diffgeo.sample(model, noise=inv.result, steps=steps, use_clipped_model_output=True, progress=False,
                              **kw).result
        entry = {"seconds": dt, "cpu_seconds": cpu, "s_per_image": dt / len(x0), "rmse": _stats(_rmse(back, x0)),
                 "unet_calls": inv.meta.get("unet_calls", steps * len(x0))}
        if method == "fixed_point":
            per_step = inv.meta["iterations_per_step"]
            entry.update(calls_per_step_mean=sum(per_step) / len(per_step), calls_per_step=per_step,
                         max_residual_per_step=inv.meta["max_residual_per_step"],
                         unconverged_steps=len(inv.meta["unconverged"]),
                         unconverged_sample_steps=sum(len(u["samples"]) for u in inv.meta["unconverged"]),
                         stalled_sample_steps=sum(sum(u["stalled"]) for u in inv.meta["unconverged"]),
                         worst_unconverged=max((u["residual"] for u in inv.meta["unconverged"]), default=None))
        out[method] = entry
    out["time_ratio_fixed_point_over_ddim"] = out["fixed_point"]["seconds"] / out["ddim"]["seconds"]
    # CPU time and U-Net evaluations do not depend on what else the machine runs (wall time does)
    out["cpu_ratio_fixed_point_over_ddim"] = out["fixed_point"]["cpu_seconds"] / out["ddim"]["cpu_seconds"]
    out["unet_ratio_fixed_point_over_ddim"] = out["fixed_point"]["unet_calls"] / out["ddim"]["unet_calls"]
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sets", default="own,scenes,digits")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    res: dict = {"n": a.n, "steps": a.steps, "threads": a.threads, "target": TARGET}
    sets = a.sets.split(",")
    with torch.no_grad():
        shapes = diffgeo.load("shapes")
        if "own" in sets:
            own = diffgeo.sample(shapes, a.n, steps=a.steps, seed=31, progress=False).result
            res["shapes_own_samples"] = round_trip(shapes, own, a.steps)
        if "scenes" in sets:
            x0 = diffgeo.data.shapes.make_scenes(a.n, seed=UNSEEN_SEED).images
            res["shapes_real_scenes"] = round_trip(shapes, x0, a.steps)
        if "digits" in sets:
            digits = diffgeo.load("digits")
            d = load_digits_images()
            idx = torch.randperm(len(d.labels), generator=torch.Generator().manual_seed(UNSEEN_SEED))[:a.n]
            prompts = [canonical_digit_caption(int(c)) for c in d.labels[idx]]
            res["digits_real"] = round_trip(digits, d.images[idx].clamp(-1, 1), a.steps, prompt=prompts)
    text = json.dumps(res, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    print(text)  # noqa: T201
    return res


if __name__ == "__main__":
    main()
