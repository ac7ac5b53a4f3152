"""Run the edit-quality table: pick a direction and a strength per method on calibration samples,
measure it on held-out samples, save JSON + CSV + a figure of before/after strips.

For every task (:data:`~diffgeo.editing.table.tasks.TASKS`) and method
(:data:`~diffgeo.editing.table.methods.METHODS`) and every t_edit of the grid (``t_edit``: one
timestep or several; coarse factors are set early, fine ones late, so each method picks its own):
the method's finder proposes unit-norm candidates at that t_edit (timed: ``find_s``, of the chosen
t_edit); each is tried at the strengths ``fraction * reference_norm`` on ``n_cal``
calibration samples (seed ``seed_cal``) and the t_edit, candidate and strength with the most clean
edits (success, preservation and validity at once; ties: the larger sum of the three rates, then
the smaller strength) win (``select_s``, over the whole grid; ``meta["t_grid"]``: the best
calibration row at each t_edit); the winner is measured on ``n``
held-out samples (seed ``seed_eval``, generated or inverted real scenes): success, preservation,
validity, clean (each with a Wilson 95% interval), SSIM to the unedited image (mean, normal 95%
interval), seconds per edited sample; ``meta["preservation_fit_scene"]`` re-reads preservation
with :func:`~diffgeo.readers.probe.fit_scene` on the first ``n_fit`` samples. Directions found on one sample (pullback, LOCO) are applied
to all the held-out ones, so their success is the transfer success; ``local`` re-finds the chosen
direction on each of ``n_local`` held-out samples (the candidate closest to the winner) and edits
each with its own. Per-sample methods (``Candidate.meta["per_sample"]``, e.g. ``target_x``) are found
again on every held-out sample (``find_s``: seconds per sample) and have no transfer and nothing to ship;
a learned f_t applied per sample (``learned_ft``) is one network for every sample: the network is what
ships (``Candidate.meta["f_t"]``).

>>> r = EditQualityRow(model="shapes", task="colour:blue", method="loco", space="x", samples="generated",
...                    candidate="loco1+", strength=5.0, t_edit=500, steps=10, n=4, success=1.0)
>>> r.csv_row()["success"], r.csv_row()["method"]
(1.0, 'loco')
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch

from diffgeo.core.io import save_json_csv
from diffgeo.core.progress import progress_bar
from diffgeo.editing.directions import Direction
from diffgeo.editing.interval import ssim
from diffgeo.editing.properties import _editor
from diffgeo.editing.table.methods import METHODS, Candidate, reference_norm
from diffgeo.editing.table.tasks import Samples, Task, _continuous, score
from diffgeo.evaluation.stats import wilson_interval
from diffgeo.sampling.ddim import sample
from diffgeo.viz.draw import draw_labelled_grid
from diffgeo.viz.figures import figure, save_figure

__all__ = ["EditQualityRow", "EditQualityTable", "run_task", "save_strips", "FRACTIONS"]

logger = logging.getLogger(__name__)

#: Strengths tried on the calibration samples, as fractions of the space's reference norm (per space:
#: h-space edits need larger ones, Asyrp changes only the x0 part of each step).
FRACTIONS = {"x": (0.05, 0.1, 0.2, 0.4), "h": (0.1, 0.2, 0.4, 0.8, 1.6)}
#: Strengths of directions with a scale of their own (``Candidate.meta["natural"]``), as multiples of it.
NATURAL = (0.5, 0.7, 1.0, 1.4, 2.0, 4.0)


@dataclass(frozen=True)
class EditQualityRow:
    """One method on one task (see the module docstring); ``*_ci``: 95% intervals."""

    model: str
    task: str
    method: str
    space: str
    samples: str
    candidate: str
    strength: float
    t_edit: int
    steps: int
    n: int
    success: float = float("nan")
    success_ci: tuple = (float("nan"), float("nan"))
    preservation: float = float("nan")
    preservation_ci: tuple = (float("nan"), float("nan"))
    validity: float = float("nan")
    validity_ci: tuple = (float("nan"), float("nan"))
    clean: float = float("nan")
    clean_ci: tuple = (float("nan"), float("nan"))
    ssim: float = float("nan")
    ssim_ci: tuple = (float("nan"), float("nan"))
    lpips: float | None = None
    transfer: float | None = None
    local_success: float | None = None
    local_n: int = 0
    find_s: float = 0.0
    select_s: float = 0.0
    edit_s: float = 0.0
    meta: dict = field(default_factory=dict)

    def csv_row(self) -> dict[str, Any]:
        """The flat row of the CSV (intervals as _lo / _hi columns, no meta)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "meta":
                continue
            if f.name.endswith("_ci"):
                out[f.name[:-3] + "_lo"], out[f.name[:-3] + "_hi"] = v
            else:
                out[f.name] = v
        return out


@dataclass(frozen=True)
class EditQualityTable:
    """Rows of the edit-quality table and how it was run (``config``)."""

    rows: list
    config: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """``path``.json and ``path``.csv, each atomic."""
        return save_json_csv(path, {"config": self.config, "rows": [asdict(r) for r in self.rows]},
                             [r.csv_row() for r in self.rows])

    @classmethod
    def load(cls, path: str | Path) -> "EditQualityTable":
        p = Path(path)
        p = p if p.suffix == ".json" else p.with_name(p.name + ".json")
        data = json.loads(p.read_text())
        rows = [EditQualityRow(**{k: tuple(v) if k.endswith("_ci") else v for k, v in r.items()}) for r in data["rows"]]
        return cls(rows, data.get("config", {}))

    def best(self, task: str, samples: str = "generated") -> EditQualityRow | None:
        """The row of ``task`` with the most clean edits (ties: higher success)."""
        rows = [r for r in self.rows if r.task == task and r.samples == samples and not math.isnan(r.clean)]
        return max(rows, key=lambda r: (r.clean, r.success), default=None)


def _rate(x: torch.Tensor) -> tuple[float, tuple[float, float]]:
    k, n = int(x.sum()), int(x.numel())
    return (k / n if n else float("nan")), wilson_interval(k, n)


def _mean_ci(x: torch.Tensor) -> tuple[float, tuple[float, float]]:
    x = x.double()
    m = float(x.mean())
    half = 1.96 * float(x.std()) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
    return m, (m - half, m + half)


def _scaled(model: Any, c: Candidate, s: float) -> Any:
    """The candidate at strength s: a Direction, (per-sample candidates) their (n, *x_shape) steps, or
    (a learned f_t) ``t -> (h -> s * f_t(h, t))`` on ``model`` for :func:`~diffgeo.editing.hspace.asyrp`."""
    own, f_t = c.meta.get("per_sample"), c.meta.get("f_t")
    if f_t is not None:
        delta = f_t.h_delta(model)
        return lambda te: (lambda h, f=delta(te): s * f(h))
    return c.direction * s if own is None else own * s


def _select(model: Any, t: Task, cands: list[Candidate], space: str, cal: Samples, t_edit: int, steps: int,
            prompt: Any, fractions: Any) -> tuple[Candidate, float, list[dict]]:
    base, edit = _editor(model, space, cal.x_T, t_edit, steps, prompt)
    ref = reference_norm(model, space, _x_t_batch(model, cal.x_T, t_edit, steps, prompt), t_edit, prompt)
    tried, best = [], None
    for c in cands:
        own = c.meta.get("natural")
        grid = c.meta.get("grid") or (NATURAL if own else (fractions[space] if isinstance(fractions, dict) else fractions))
        for f in grid:
            s = f * (own or ref)
            sc = score(t, cal, edit(1.0, _scaled(model, c, s)), fit=False)
            row = {"candidate": c.label, "fraction": f, "strength": s,
                   **{k: float(v.float().mean()) for k, v in sc.items() if isinstance(v, torch.Tensor)},
                   **{"kept_" + k: float(v.float().mean()) for k, v in sc["kept"].items()}}
            tried.append(row)
            key = _cal_key(row)
            if best is None or key > best[0]:
                best = (key, c, s)
            if row["valid"] == 0.0:
                warnings.warn(f"{t.name}, {c.label} at strength {s:.3g}: validity 0 of {len(cal.x_T)} calibration "
                              "samples (every edited sample is invalid); the table skips larger strengths", stacklevel=2)
                break
    return best[1], best[2], tried


def _local(model: Any, t: Task, finder: Any, space: str, ev: Samples, chosen: Direction, s: float, t_edit: int,
           steps: int, prompt: Any, n_local: int) -> dict:
    """Each of the first ``n_local`` held-out samples edited along its own direction: the candidate
    found on it closest (|cosine|, sign aligned) to the chosen one, at the chosen strength."""
    k = min(n_local, len(ev.x_T))
    outs, cos, find_s, edit_s = [], [], 0.0, 0.0
    for i in range(k):
        one = Samples(ev.x_T[i:i + 1], ev.images[i:i + 1], {}, None)
        start = time.perf_counter()
        cands = finder(model, t, one, t_edit=t_edit, steps=steps, prompt=prompt)
        find_s += time.perf_counter() - start
        ref = chosen.vectors.flatten()
        dots = [float(cd.direction.vectors.flatten() @ ref) for cd in cands]
        j = max(range(len(cands)), key=lambda q: dots[q])
        cos.append(dots[j])
        _, edit = _editor(model, space, ev.x_T[i:i + 1], t_edit, steps, prompt)
        start = time.perf_counter()
        outs.append(edit(1.0, _scaled(model, cands[j], s)))
        edit_s += time.perf_counter() - start
    sub = Samples(ev.x_T[:k], ev.images[:k], {f: v[:k] for f, v in ev.reads.items() if f != "continuous"},
                  None if ev.continuous is None else {f: v[:k] for f, v in ev.continuous.items()})
    sc = score(t, sub, torch.cat(outs))
    rates = {key: _rate(sc[key]) for key in ("success", "preserved", "valid", "clean")}
    return {"n": k, **{key: v[0] for key, v in rates.items()}, **{key + "_ci": v[1] for key, v in rates.items()},
            "mean_abs_cosine_to_transferred": sum(map(abs, cos)) / k, "find_s_per_sample": find_s / k,
            "edit_s_per_sample": edit_s / k}


def _fit_check(t: Task, ev: Samples, out: torch.Tensor, n_fit: int) -> dict | None:
    """Preservation re-read with fit_scene on the first ``n_fit`` samples (shapes only): rate and interval."""
    if t.model != "shapes" or n_fit <= 0:
        return None
    k = min(n_fit, len(out))
    sub = Samples(ev.x_T[:k], ev.images[:k], {f: v[:k] for f, v in ev.reads.items() if f != "continuous"},
                  _continuous(t.model, ev.images[:k], True))
    rate, ci = _rate(score(t, sub, out[:k], fit=True)["preserved"])
    return {"n": k, "preservation": rate, "ci": ci}


def _x_t_batch(model: Any, x_T: torch.Tensor, t: int, steps: int, prompt: Any) -> torch.Tensor:
    kw = {"prompt": prompt} if model.is_conditional else {}
    with torch.no_grad():
        tr = sample(model, noise=x_T, steps=steps, progress=False, **kw)
    return tr.xs[tr.timesteps.tolist().index(t)]


def _cal_key(row: dict) -> tuple:
    # most clean edits; among equals the best sum of the three rates (a strength that makes every
    # sample invalid does not win on success alone), then the smaller strength
    return (row["clean"], row["success"] + row["preserved"] + row["valid"], -row["fraction"])


def _pick_t(model: Any, t: Task, name: str, cal: Samples, grid: list[int], steps: int, prompt: Any,
            fractions: Any) -> tuple | None:
    """The method's candidate, strength and t_edit with the most clean calibration edits over ``grid``:
    (t_edit, candidate, strength, tried at that t, find seconds at that t, select seconds over the grid,
    {t_edit: its best calibration row}); None without candidates."""
    space, finder = METHODS[name]
    best, per_t, select_s = None, {}, 0.0
    for te in grid:
        start = time.perf_counter()
        cands = finder(model, t, cal, t_edit=te, steps=steps, prompt=prompt)
        find_s = time.perf_counter() - start
        if not cands:
            return None
        start = time.perf_counter()
        c, s, tried = _select(model, t, cands, space, cal, te, steps, prompt, fractions)
        select_s += time.perf_counter() - start
        top = max(tried, key=_cal_key)
        per_t[te] = {**top, "find_s": find_s}
        if best is None or _cal_key(top) > _cal_key(best[0]):
            best = (top, te, c, s, tried, find_s)
    top, te, c, s, tried, find_s = best
    return te, c, s, tried, find_s, select_s, per_t


def run_task(model: Any, t: Task, methods: Sequence[str], cal: Samples, evals: dict[str, Samples], *, t_edit: int | Sequence[int] = 500,
             steps: int = 10, prompt: Any = None, fractions: Any = FRACTIONS, n_local: int = 0,
             strips: int = 6, n_fit: int = 16, progress: bool | None = None) -> tuple[list[EditQualityRow], dict[str, Any], dict]:
    """The rows of one task for ``methods`` on calibration samples ``cal`` and held-out samples
    ``evals`` ({"generated": ..., "real": ...}); returns (rows, the chosen unit-norm direction per
    method (its row gives the strength; ``learned_ft``: the f_t itself; per-sample methods: none),
    before/after images {(method, samples): (before, after, invalid)} of the first ``strips`` held-out samples).

    >>> import diffgeo
    >>> from diffgeo.editing.table.tasks import pick_samples, task
    >>> m = diffgeo.load("shapes")
    >>> tk = task("shapes", "colour:blue")
    >>> cal = pick_samples(m, tk, 2, seed=1, steps=4, fit=False)
    >>> ev = pick_samples(m, tk, 2, seed=2, steps=4, fit=False)
    >>> rows, dirs, _ = run_task(m, tk, ["mean_difference_x"], cal, {"generated": ev}, steps=4, fractions=(0.1,),
    ...                          progress=False)
    >>> rows[0].method, rows[0].n, 0.0 <= rows[0].success <= 1.0
    ('mean_difference_x', 2, True)
    """
    rows, chosen, pics = [], {}, {}
    grid = [int(t_edit)] if isinstance(t_edit, (int, float)) else [int(v) for v in t_edit]
    if not grid:
        raise ValueError("t_edit: give a timestep or a non-empty list of timesteps of the steps grid")
    for name in progress_bar(list(methods), desc=f"table {t.name}", progress=progress):
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}: known ones are {', '.join(METHODS)}")
        space, finder = METHODS[name]
        pick = _pick_t(model, t, name, cal, grid, steps, prompt, fractions)
        if pick is None:
            logger.info("%s: no candidates for %s", name, t.name)
            continue
        te, c, s, tried, find_s, select_s, per_t = pick
        logger.info("%s %s: chose %s at t_edit %d, strength %.3g on calibration (find %.1fs, select %.1fs over "
                    "t_edit %s): %s", t.name, name, c.label, te, s, find_s, select_s, grid, per_t[te])
        per_sample = c.meta.get("per_sample") is not None
        d = _scaled(model, c, s)
        u = c.direction
        if "f_t" in c.meta:  # one f_t network for every sample: it ships
            chosen[name] = c.meta["f_t"]
        elif not per_sample:  # one direction to ship
            chosen[name] = Direction(u.vectors, u.timesteps, u.space, u.model, {**u.meta, "candidate": c.label})
        for kind, ev in evals.items():
            base, edit = _editor(model, space, ev.x_T, te, steps, prompt)
            if per_sample:  # found again on each edited sample: its own step, the calibration's strength
                start = time.perf_counter()
                d = _scaled(model, finder(model, t, ev, t_edit=te, steps=steps, prompt=prompt)[0], s)
                find_s = (time.perf_counter() - start) / len(ev.x_T)
            start = time.perf_counter()
            out = edit(1.0, d)
            edit_s = (time.perf_counter() - start) / len(ev.x_T)
            sc = score(t, ev, out)
            fit_check = _fit_check(t, ev, out, n_fit)
            (su, su_ci), (pr, pr_ci), (va, va_ci), (cl, cl_ci) = (_rate(sc[k]) for k in
                                                                  ("success", "preserved", "valid", "clean"))
            ss, ss_ci = _mean_ci(ssim(base, out))
            if not sc["preservation_read"]:
                pr, pr_ci = float("nan"), (float("nan"), float("nan"))
            if va == 0.0:
                warnings.warn(f"{t.name} by {name} at strength {s:.3g}: validity 0 of {len(out)} held-out samples",
                              stacklevel=2)
            one_sample = name in ("pullback", "loco")
            local = (_local(model, t, finder, space, ev, c.direction, s, te, steps, prompt, n_local)
                     if one_sample and n_local > 0 else None)
            meta = {"calibration": tried, "t_grid": per_t, "kept": {f: float(k.float().mean()) for f, k in sc["kept"].items()}, "preservation_fit_scene": fit_check, "local": local, "n_cal": len(cal.x_T), "base_vs_unedited_rmse":
                    float((base - ev.images).pow(2).mean().sqrt()),
                    "transfer": ("found again on every edited sample (no transfer; find_s per sample)" if per_sample
                                 else "found on one calibration sample" if one_sample
                                 else "one f_t network for every sample (dh = f_t of each sample's own h)"
                                 if "f_t" in c.meta else "found on groups (global)")}
            if ev.real is not None:
                meta["inversion_rmse"] = float((base - ev.real).pow(2).mean().sqrt())
            rows.append(EditQualityRow(model=model.name, task=t.name, method=name, space=space, samples=kind,
                                       candidate=c.label, strength=s, t_edit=te, steps=steps, n=len(out),
                                       success=su, success_ci=su_ci, preservation=pr, preservation_ci=pr_ci,
                                       validity=va, validity_ci=va_ci, clean=cl, clean_ci=cl_ci, ssim=ss,
                                       ssim_ci=ss_ci, transfer=su if one_sample else None, find_s=find_s,
                                       local_success=None if local is None else local["success"],
                                       local_n=0 if local is None else local["n"],
                                       select_s=select_s, edit_s=edit_s, meta=meta))
            pics[(name, kind)] = (base[:strips].cpu(), out[:strips].cpu(), (~sc["valid"][:strips]).tolist())
    return rows, chosen, pics


def save_strips(pics: dict, path: str | Path, rows: Sequence[EditQualityRow] = ()) -> Path:
    """One panel per (task, method, samples): unedited images over edited ones (invalid ones framed
    red), titled with the row's success and preservation; PNG (atomic). ``pics``: {(task, method,
    samples): (before, after, invalid)}.

    >>> import tempfile
    >>> p = save_strips({("c", "m", "generated"): (torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8), [False, True])},
    ...                 Path(tempfile.mkdtemp()) / "s.png")
    >>> p.name
    's.png'
    """
    keys = list(pics)
    if not keys:
        raise ValueError("no before/after images to draw")
    by = {(r.task, r.method, r.samples): r for r in rows}
    cols = 3
    nrows = (len(keys) + cols - 1) // cols

    def draw(fig: Any) -> None:
        axes = fig.subplots(nrows, cols, squeeze=False).flatten()
        for ax, key in zip(axes, keys):
            before, after, bad = pics[key]
            r = by.get(key)
            pres = "" if r is None or math.isnan(r.preservation) else f" pres {r.preservation:.2f}"  # digits: not read
            note = "" if r is None else f"\nsuccess {r.success:.2f}{pres} valid {r.validity:.2f}"
            draw_labelled_grid(ax, torch.cat([before, after]), ["before", "after"], nrow=len(before),
                               marks=[False] * len(before) + list(bad), title=f"{key[0]} {key[1]} ({key[2]}){note}")
        for ax in axes[len(keys):]:
            ax.set_axis_off()

    return save_figure(figure(draw, size=(4.2 * cols, 1.9 * nrows)), path)
