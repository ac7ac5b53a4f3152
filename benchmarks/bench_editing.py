"""Editing costs per image on an embedded model, in one process (ratios against plain inversion).

    python benchmarks/bench_editing.py --model shapes --n 8 --steps 50 --threads 1

Prints JSON: seconds per image for plain and fixed-point inversion (with U-Net calls per step and
the round-trip RMSE of each), x-space step and guidance edits at t = 0.6 T, Asyrp, and the time to
re-render one edited image when everything up to the edit is cached (x_t at the edit timestep:
only the DDIM steps below t run again), and the learned Asyrp direction f_t: seconds per training
step, its conversion to a Direction, and applying it per image (ratios against Asyrp per image).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import diffgeo
import diffgeo.editing as editing
from diffgeo.editing.directions import Direction


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="shapes")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    m = diffgeo.load(a.model)
    x0 = diffgeo.data.shapes.make_scenes(a.n, seed=987_654).images
    res: dict = {"model": m.name, "n": a.n, "steps": a.steps, "threads": a.threads}
    kw = dict(steps=a.steps, progress=False, use_clipped_model_output=True)
    with torch.no_grad():
        for method in ("ddim", "fixed_point"):
            inv, dt = timed(lambda: diffgeo.invert(m, x0, method=method, **kw))
            back = diffgeo.sample(m, noise=inv.result, **kw).result
            rmse = (back - x0).flatten(1).pow(2).mean(1).sqrt()
            entry = {"s_per_image": dt / a.n, "rmse_mean": float(rmse.mean()), "rmse_max": float(rmse.max())}
            if method == "fixed_point":
                calls = torch.tensor(inv.meta["iterations"], dtype=torch.float64)
                entry.update(calls_per_step_mean=float(calls.mean()), calls_per_step=calls.mean(1).tolist(),
                             unconverged=inv.meta["unconverged"])
            res[f"invert_{method}"] = entry
        res["fixed_point_over_plain_time"] = (res["invert_fixed_point"]["s_per_image"]
                                              / res["invert_ddim"]["s_per_image"])
        grid = diffgeo.ddim_timesteps(m, a.steps).tolist()
        t = min(grid, key=lambda s: abs(s - 0.6 * m.num_train_timesteps))
        x_t = inv.xs[inv.timesteps.tolist().index(t)]
        v = torch.randn(m.x_shape, generator=torch.Generator().manual_seed(0))
        v = v / v.norm()
        for method in ("step", "guidance"):
            _, dt = timed(lambda: editing.edit_x(m, x_t, t, v, strength=2.0, method=method, steps=a.steps,
                                                 progress=False))
            res[f"edit_x_{method}_s_per_image"] = dt / a.n
        _, dt = timed(lambda: editing.edit_x(m, x_t[:1], t, v, strength=3.0, steps=a.steps, progress=False))
        res["rerender_one_edit_from_cached_x_t_s"] = dt
        dh = Direction(torch.randn(1, *m.h_shape, generator=torch.Generator().manual_seed(1)), torch.tensor([-1]),
                       "h", m.name)
        x_T = torch.randn(a.n, *m.x_shape, generator=torch.Generator().manual_seed(2))
        _, dt = timed(lambda: editing.asyrp(m, x_T, dh, strength=1.0, t_edit=500, t_boost=200, steps=a.steps,
                                            seed=0, progress=False))
        res["asyrp_s_per_image"] = dt / a.n
        _, dt = timed(lambda: diffgeo.sample(m, noise=x_T, steps=a.steps, progress=False))
        res["plain_sample_s_per_image"] = dt / a.n
    learned_f_t(m, a, x_T, res)
    print(json.dumps(res, indent=1))  # noqa: T201


def learned_f_t(m, a, x_T, res: dict, batch: int = 8, k: int = 5) -> None:
    """f_t of diffgeo.editing.learned (probe objective, colour -> blue, t_edit 500): seconds per
    training step (batch ``batch``, mean of ``k`` after one warm-up step), the one-off conversion to a
    Direction (16 images), and Asyrp with that Direction per image; ratios against ``asyrp_s_per_image``.
    Training needs gradients, so this runs outside the no_grad block above."""
    import diffgeo.editing.learned as learned_direction
    from diffgeo.editing.objectives import probe_objective

    try:
        obj = probe_objective(m, "colour", "blue")
    except ValueError as err:  # a model without a differentiable reader (e.g. digits)
        res["learned_f_t"] = f"skipped: {err}"
        return
    kw = dict(batch_size=batch, n_images=32, t_edit=500, progress=False)
    learned_direction.train_direction(m, obj, steps=1, **kw)
    ld, dt = timed(lambda: learned_direction.train_direction(m, obj, steps=k, **kw))
    res["learned_train_s_per_step"] = dt / k
    res["learned_train_step_over_asyrp_image"] = res["learned_train_s_per_step"] / res["asyrp_s_per_image"]
    d, dt = timed(lambda: ld.to_direction(m, n=16, steps=a.steps))
    res["learned_to_direction_s"] = dt
    with torch.no_grad():
        _, dt = timed(lambda: editing.asyrp(m, x_T, d, strength=1.0, t_edit=500, t_boost=200, steps=a.steps,
                                            seed=0, progress=False))
    res["learned_apply_s_per_image"] = dt / a.n
    res["learned_apply_over_asyrp"] = res["learned_apply_s_per_image"] / res["asyrp_s_per_image"]


if __name__ == "__main__":
    main()
