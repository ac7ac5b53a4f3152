"""Run the edit-quality table on the embedded models and ship the best direction per task.

    .venv/bin/python benchmarks/edit_quality.py                      # everything (about an hour on one thread)
    .venv/bin/python benchmarks/edit_quality.py --tasks colour:blue --methods loco pullback --n 16

Writes figures/edit_quality.json / .csv / .png (rewritten after every task, so a stopped run keeps
what it finished; rows of tasks not rerun are kept) and, with --ship, the winner of every task
(the most clean edits on generated samples) to diffgeo/embedded/directions/<model>/.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

import diffgeo
from diffgeo.editing.named import ship_named
from diffgeo.editing.table import METHODS, TASKS, EditQualityTable, pick_samples, run_task, save_strips

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(TASKS))
    p.add_argument("--tasks", nargs="+", default=None, help="task names (default: all of each model)")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--n", type=int, default=64, help="held-out samples per row")
    p.add_argument("--n-cal", type=int, default=16, help="calibration samples (separate seeds)")
    p.add_argument("--real", action="store_true", help="also measure on inverted real scenes")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--t-edit", type=int, default=500)
    p.add_argument("--out", default=str(ROOT / "figures" / "edit_quality"))
    p.add_argument("--ship", action="store_true", help="ship each task's winner as a named direction")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-local", type=int, default=0, help="held-out samples edited with their own pullback/LOCO direction")
    p.add_argument("--n-fit", type=int, default=8, help="held-out samples per row re-read with fit_scene")
    p.add_argument("--merge", nargs="+", default=None, help="merge the parts written by earlier runs (their --out)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    diffgeo.set_progress(False)
    out = Path(a.out)
    if a.merge:
        return merge([Path(m) for m in a.merge], out, a.ship)
    old = EditQualityTable.load(out) if out.with_name(out.name + ".json").exists() else EditQualityTable([])
    rows, pics, kept = list(old.rows), {}, {}
    for model_name in a.models:
        model = diffgeo.load(model_name)
        prompt = "" if model.is_conditional else None
        for t in TASKS[model_name]:
            if a.tasks and t.name not in a.tasks:
                continue
            start = time.perf_counter()
            cal = pick_samples(model, t, a.n_cal, seed=11, steps=a.steps, prompt=prompt, fit=False)
            evals = {"generated": pick_samples(model, t, a.n, seed=22, steps=a.steps, prompt=prompt)}
            if a.real:
                evals["real"] = pick_samples(model, t, a.n, seed=33, steps=a.steps, prompt=prompt, real=True)
            new, chosen, got = run_task(model, t, a.methods, cal, evals, t_edit=a.t_edit, steps=a.steps,
                                        prompt=prompt, n_local=a.n_local, n_fit=a.n_fit)
            kept.update({(t.name, k): (d, t) for k, d in chosen.items()})
            done = {(r.model, r.task, r.method, r.samples) for r in new}
            rows = [r for r in rows if (r.model, r.task, r.method, r.samples) not in done] + new
            pics.update({(t.name, *k): v for k, v in got.items()})
            table = EditQualityTable(rows, {"n_cal": a.n_cal, "n": a.n, "steps": a.steps, "t_edit": a.t_edit,
                                            "seeds": {"calibration": 11, "generated": 22, "real": 33},
                                            "threads": a.threads})
            table.save(out)
            save_strips(pics, out.with_name(out.name + ".png"), rows)
            torch.save({"pics": pics, "chosen": {k: (d.vectors, d.timesteps, d.space, d.model, d.meta, t.__dict__)
                                                 for k, (d, t) in kept.items()}}, out.with_name(out.name + ".parts.pt"))
            for r in new:
                logging.info("%s %-18s %-9s success %.2f pres %.2f valid %.2f clean %.2f ssim %.2f s=%.3g (%s) "
                             "find %.1fs select %.1fs edit %.3fs/sample", r.task, r.method, r.samples, r.success,
                             r.preservation, r.validity, r.clean, r.ssim, r.strength, r.candidate, r.find_s,
                             r.select_s, r.edit_s)
            if a.ship:
                ship(table, t.name, {(t.name, k): (d, t) for k, d in chosen.items()})
            logging.info("task %s took %.0fs", t.name, time.perf_counter() - start)
    return 0


def ship(table: EditQualityTable, task: str, chosen: dict) -> None:
    """Ship the task's best row (most clean edits on generated samples) as its named direction."""
    best = table.best(task)
    if best is None or (task, best.method) not in chosen:
        return
    d, t = chosen[(task, best.method)]
    row = {k: v for k, v in best.__dict__.items() if k != "meta"}
    real = table.best(task, "real")
    ship_named(d, {**row, "name": task, "factor": t.factor, "target": t.target, "source": t.source,
                   "prompt": "" if t.model == "digits" else None, "provisional": False,
                   "chosen_by": "most clean edits on held-out generated samples",
                   "real": None if real is None else {k: v for k, v in real.__dict__.items() if k != "meta"}})
    logging.info("shipped %s: %s", task, best.method)


def merge(parts: list[Path], out: Path, do_ship: bool) -> int:
    """Merge the tables, strips and chosen directions of parallel runs into ``out``."""
    from diffgeo.editing.directions import Direction
    from diffgeo.editing.table import Task

    rows, pics, chosen = [], {}, {}
    for part in parts:
        rows += EditQualityTable.load(part).rows
        blob = torch.load(part.with_name(part.name + ".parts.pt"), weights_only=False)
        pics.update(blob["pics"])
        chosen.update({k: (Direction(*v[:5]), Task(**v[5])) for k, v in blob["chosen"].items()})
    table = EditQualityTable(rows, {**EditQualityTable.load(parts[0]).config, "parts": [str(p) for p in parts]})
    table.save(out)
    save_strips(pics, out.with_name(out.name + ".png"), rows)
    if do_ship:
        for task in dict.fromkeys(r.task for r in rows):
            ship(table, task, chosen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
