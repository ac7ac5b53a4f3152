"""The ``diffgeo transfer`` command."""

from __future__ import annotations

import json
import sys
from typing import Sequence

import torch

from diffgeo.cli._args import (
    ArgumentParser,
    check_model_arg,
    check_output_file,
    finite_float,
    non_negative_int,
    positive_int,
    preflight,
)
from diffgeo.core.io import result_path
from diffgeo.editing.transfer import transfer_edit
from diffgeo.editing.xspace import edit_x
from diffgeo.evaluation.stats import wilson_interval
from diffgeo.geometry.batched import local_bases
from diffgeo.models.loading import _resolve, load
from diffgeo.readers import get_reader
from diffgeo.sampling.ddim import ddim_timesteps, sample


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diffgeo transfer --model shapes --n 16``: carry v_i of one sample to n others.

    Samples n + 1 trajectories, takes their x_t at ``--t`` (on the ``--steps`` grid), computes k-dim
    local bases, transfers A's v_i to the other n with both transports, and prints the summary
    (JSON), with a control: the same edit along a random unit vector of each target's tangent space.

    >>> main(["--k", "2", "--direction", "2"])   # refused before loading: 0 <= --direction < --k
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """


    p = ArgumentParser(prog="diffgeo transfer", description=main.__doc__.partition(">>>")[0])
    p.add_argument("--model", default="shapes")
    p.add_argument("--n", type=positive_int, default=16)
    p.add_argument("--t", type=non_negative_int, default=500)
    p.add_argument("--k", type=positive_int, default=3)
    p.add_argument("--direction", type=non_negative_int, default=0)
    p.add_argument("--strength", type=finite_float, default=20.0)
    p.add_argument("--steps", type=positive_int, default=10)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--prompt", default=None)
    p.add_argument("--out", default=None, help="save the Transfer here (safetensors + JSON)")
    a = p.parse_args(argv)
    if a.n < 1 or a.k < 1 or not 0 <= a.direction < a.k:
        p.error("--n and --k must be >= 1 and 0 <= --direction < --k")
    checks = [lambda: check_model_arg(a.model), lambda: _check_on_grid(a.model, a.t, a.steps)]
    if a.out:
        checks.append(lambda: check_output_file(result_path(a.out)))
    preflight(p, *checks)

    model = load(a.model)
    kw = {"prompt": a.prompt if a.prompt is not None else ""} if model.is_conditional else {}
    grid = ddim_timesteps(model, a.steps).tolist()
    if a.t not in grid:  # a hub model's grid is known only now: still before any sampling
        p.error(f"--t {a.t} is not on the {a.steps}-step grid: one of {grid}")
    with torch.no_grad():
        traj = sample(model, a.n + 1, steps=a.steps, seed=a.seed, progress=False, **kw)
    ts = traj.timesteps.tolist()
    x = traj.xs[ts.index(a.t)]
    bases = local_bases(model, x[:a.n + 1], a.t, a.k, seed=a.seed, progress=False, **kw)  # one batched call
    r = transfer_edit(model, bases[0], bases[1:], a.direction, strength=a.strength, steps=a.steps, progress=False,
                      **kw)
    out = r.summary()
    if r.factor is not None:

        rd = get_reader(r.meta["reader"])
        g = torch.Generator().manual_seed(a.seed + 1)
        rand = torch.stack([(torch.randn(1, b.k, generator=g, dtype=torch.float64) @ b.v_flat.double()).reshape(
            b.v.shape[1:]) for b in bases[1:]])
        rand = rand / rand.flatten(1).norm(dim=1).reshape(-1, *[1] * (rand.dim() - 1))
        with torch.no_grad():
            ctrl = edit_x(model, x[1:], a.t, rand.to(model.dtype), strength=a.strength, steps=a.steps,
                          progress=False, **kw).result
        read = rd.read(model.decode(ctrl) if model.is_latent else ctrl)[r.factor]
        hit = (read == r.source_after) & (r.before != r.source_after)
        n_hit = int(hit.sum())
        out["control_random_tangent"] = {"same_way": n_hit / a.n, "same_way_ci": list(wilson_interval(n_hit, a.n)),
                                         "changed": float((read != r.before).double().mean())}
    out.update(source_before=r.source_before, source_after=r.source_after, k=a.k, direction=a.direction,
               steps=a.steps, seed=a.seed)
    if a.out:
        out["saved"] = str(r.save(a.out))
    sys.stdout.write(json.dumps(out, indent=1) + "\n")  # the command's output
    return 0


def _check_on_grid(model: str, t: int, steps: int) -> None:
    """``--t`` on the ``--steps`` DDIM grid, read from a local model's scheduler config without loading
    the model (a hub model is checked once loaded, before any sampling)."""
    source, _display, _prov, local = _resolve(model)
    if not local:
        return
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_pretrained(source, subfolder="scheduler")
    if steps > sched.config.num_train_timesteps:
        raise ValueError(f"--steps {steps} exceeds the {sched.config.num_train_timesteps} training timesteps")
    sched.set_timesteps(steps)
    grid = sched.timesteps.tolist()
    if t not in grid:
        raise ValueError(f"--t {t} is not on the {steps}-step grid: one of {grid}")
