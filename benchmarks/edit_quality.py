"""Run the edit-quality table on the embedded models and ship the best direction per task.

    .venv/bin/python benchmarks/edit_quality.py                      # everything (about an hour on one thread)
    .venv/bin/python benchmarks/edit_quality.py --tasks colour:blue --methods loco pullback --n 16

Writes figures/edit_quality.json / .csv / .png (rewritten after every task, so a stopped run keeps
what it finished; rows and strips of tasks not rerun are kept: the strips' images live in
edit_quality_strips.safetensors, uint8) and, with --ship, the winner of every task (the most clean
edits on generated samples; a Direction, or a learned f_t) to diffgeo/embedded/directions/<model>/.
"""

from __future__ import annotations

import argparse
import logging
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import diffgeo
from diffgeo.core.io import atomic_path
from diffgeo.editing.named import named_info, ship_named
from diffgeo.editing.table import METHODS, TASKS, EditQualityTable, pick_samples, run_task, save_strips
from diffgeo.editing.table.ceiling import ceiling, perfect_edits, reader_agreement

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
    p.add_argument("--t-edit", type=int, nargs="+", default=[300, 500, 700],
                   help="t_edit grid; each method picks its own on the calibration samples")
    p.add_argument("--out", default=str(ROOT / "figures" / "edit_quality"))
    p.add_argument("--ship", action="store_true", help="ship each task's winner as a named direction")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-local", type=int, default=0, help="held-out samples edited with their own pullback/LOCO direction")
    p.add_argument("--n-fit", type=int, default=8, help="held-out samples per row re-read with fit_scene")
    p.add_argument("--merge", nargs="+", default=None, help="merge the parts written by earlier runs (their --out)")
    p.add_argument("--ceiling", action="store_true",
                   help="only measure the ceiling (unedited round trip, null edit, perfect edits, reader agreement) "
                        "on the held-out samples: writes <out>_ceiling.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    diffgeo.set_progress(False)
    out = Path(a.out)
    if a.merge:
        return merge([Path(m) for m in a.merge], out, a.ship)
    if a.ceiling:
        return measure_ceiling(a, out)
    old = EditQualityTable.load(out) if out.with_name(out.name + ".json").exists() else EditQualityTable([])
    rows, pics, kept = list(old.rows), load_pics(out), {}
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
            save_pics(out, pics)
            save_strips(pics, out.with_name(out.name + ".png"), rows)
            torch.save({"pics": pics, "chosen": {k: (d, t.__dict__) for k, (d, t) in kept.items()}},
                       out.with_name(out.name + ".parts.pt"))
            for r in new:
                logging.info("%s %-18s %-9s success %.2f pres %.2f valid %.2f clean %.2f ssim %.2f s=%.3g (%s) "
                             "find %.1fs select %.1fs edit %.3fs/sample", r.task, r.method, r.samples, r.success,
                             r.preservation, r.validity, r.clean, r.ssim, r.strength, r.candidate, r.find_s,
                             r.select_s, r.edit_s)
            if a.ship:
                ship(table, t.name, {(t.name, k): (d, t) for k, d in chosen.items()})
            logging.info("task %s took %.0fs", t.name, time.perf_counter() - start)
    return 0


def _pics_path(out: Path) -> Path:
    return out.with_name(out.name + "_strips.safetensors")


def save_pics(out: Path, pics: dict) -> None:
    """The strips' images {(task, method, samples): (before, after, invalid)} beside the table, as uint8
    (atomic), so that a later run or merge that reruns some rows keeps the others' strips."""
    from safetensors.torch import save_file

    def u8(x: torch.Tensor) -> torch.Tensor:
        return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).contiguous()

    tensors, meta = {}, {}
    for i, (key, (before, after, bad)) in enumerate(pics.items()):
        tensors[f"{i}.before"], tensors[f"{i}.after"] = u8(before), u8(after)
        meta[str(i)] = json.dumps({"key": list(key), "invalid": [bool(b) for b in bad]})
    with atomic_path(_pics_path(out)) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_pics(out: Path) -> dict:
    """The strips :func:`save_pics` saved beside ``out`` ({} when there are none), in [-1, 1]."""
    from safetensors import safe_open

    path = _pics_path(out)
    if not path.exists():
        return {}
    pics = {}
    with safe_open(str(path), "pt") as f:
        for i, m in f.metadata().items():
            info = json.loads(m)
            back = [f.get_tensor(f"{i}.{side}").float() / 127.5 - 1 for side in ("before", "after")]
            pics[tuple(info["key"])] = (*back, info["invalid"])
    return pics


def save_json(path: Path, obj: dict) -> None:
    """``obj`` as indented JSON at ``path`` (atomic)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))


def measure_ceiling(a: argparse.Namespace, out: Path) -> int:
    """The table's ceiling on the held-out samples of every shapes task (see diffgeo.editing.table.ceiling)."""
    model = diffgeo.load("shapes")
    res = {"t_edits": a.t_edit, "n": a.n, "seed": 22, "steps": a.steps, "tasks": {}}
    for t in TASKS["shapes"]:
        if a.tasks and t.name not in a.tasks:
            continue
        ev = pick_samples(model, t, a.n, seed=22, steps=a.steps)
        rows = ceiling(model, t, ev, t_edits=a.t_edit, steps=a.steps)
        res["tasks"][t.name] = {"round_trip": [asdict(r) for r in rows], "perfect_edits": perfect_edits(t),
                                "reader_agreement": reader_agreement(ev.images)}
        for r in rows:
            logging.info("%s t_edit %d %s: preservation %.3f %s validity %.3f (n %d)", t.name, r.t_edit, r.probe,
                         r.preservation, r.preservation_ci, r.validity, r.n)
        save_json(out.with_name(out.name + "_ceiling.json"), res)
    return 0


def ship(table: EditQualityTable, task: str, chosen: dict) -> None:
    """Ship the task's best shippable row (most clean edits on generated samples among the methods with
    one direction, or one f_t network, for every sample; per-sample methods such as target_x have none
    to ship)."""
    rows = [r for r in table.rows if r.task == task and r.samples == "generated" and r.clean == r.clean
            and ((task, r.method) in chosen or _is_shipped(r))]
    best = max(rows, key=lambda r: (r.clean, r.success), default=None)
    if best is None:
        return
    if (task, best.method) not in chosen:  # a row kept from an earlier run whose direction is the one shipped
        logging.info("kept the shipped %s: %s", task, best.method)
        return
    d, t = chosen[(task, best.method)]
    row = {k: v for k, v in best.__dict__.items() if k != "meta"}
    real = table.best(task, "real")
    ship_named(d, {**row, "name": task, "factor": t.factor, "target": t.target, "source": t.source,
                   "prompt": "" if t.model == "digits" else None, "provisional": False,
                   "chosen_by": "most clean edits on held-out generated samples among the methods with one direction "
                                "(or one f_t network) for every sample",
                   "real": None if real is None else {k: v for k, v in real.__dict__.items() if k != "meta"}})
    logging.info("shipped %s: %s", task, best.method)


def _is_shipped(r: Any) -> bool:
    """Whether row ``r`` is the one that chose its task's shipped direction (a row kept from an earlier
    run has no direction in this run's parts, but the shipped one is on disk)."""
    try:
        info = named_info(r.model, r.task)
    except ValueError:
        return False
    return (info.get("method"), info.get("candidate"), info.get("t_edit")) == (r.method, r.candidate, r.t_edit)


def merge(parts: list[Path], out: Path, do_ship: bool) -> int:
    """Merge the tables, strips and chosen directions of parallel runs into ``out`` (the rows already in
    ``out`` that the parts did not rerun are kept; the config lists them)."""
    from diffgeo.editing.table import Task

    rows, pics, chosen = [], load_pics(out), {}
    for part in parts:
        rows += EditQualityTable.load(part).rows
        blob = torch.load(part.with_name(part.name + ".parts.pt"), weights_only=False)
        pics.update(blob["pics"])
        chosen.update({k: (d, Task(**tk)) for k, (d, tk) in blob["chosen"].items()})
    new = {(r.model, r.task, r.method, r.samples) for r in rows}
    kept = [r for r in (EditQualityTable.load(out).rows if out.with_name(out.name + ".json").exists() else [])
            if (r.model, r.task, r.method, r.samples) not in new]
    rows = rows + kept  # rows of methods these parts did not rerun stay, each with its own t_edit and config
    table = EditQualityTable(rows, {**EditQualityTable.load(parts[0]).config, "parts": [str(p) for p in parts],
                                    "kept_from_earlier_run": sorted({f"{r.task} {r.method} {r.samples}" for r in kept})})
    table.save(out)
    save_pics(out, pics)
    save_strips(pics, out.with_name(out.name + ".png"), rows)
    if do_ship:
        for task in dict.fromkeys(r.task for r in rows):
            ship(table, task, chosen)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
