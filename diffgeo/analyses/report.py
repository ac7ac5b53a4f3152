"""The report: every analysis run on the model(s) in front of you, as figures, a claims table and one HTML page.

``python -m diffgeo report [--fast] [--model NAME_OR_PATH ...] [--out DIR]`` writes
``DIR/*.png``, ``DIR/claims.json`` and ``DIR/report.html`` (self-contained: the figures are
embedded as base64, it opens offline). Results are cached in ``DIR/cache/<model>/`` through
:mod:`diffgeo.core.sweep`, so an interrupted report resumes and a second run is fast; a cache written
by another diffgeo version or for other weights is detected, said in the report, and not used.

Roles of the models: the first one runs analyses 1, 2, 4, 6 and 7; every model adds its curve to
analysis 3; the first text-conditioned one runs analysis 5 (skipped, with the reason, when there
is none). Nothing is left looking complete after a failure: the old report.html and claims.json
are removed first, everything is written to a temporary folder, and report.html is moved in last.

The analyses are the registry :data:`diffgeo.analyses.ANALYSES`: each one's ``run(context)``
(:mod:`diffgeo.analyses.registry`) gives claims, figures and notes, gathered here in registry order.

>>> from diffgeo.analyses.report import PRESETS, check_out
>>> sorted(PRESETS)
['fast', 'full', 'tiny']
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from diffgeo.analyses import ANALYSES, PRESETS, Claim, Preset, check_names
from diffgeo.analyses._common import SKIPPED, load_model
from diffgeo.analyses.registry import Context, FigureSpec
from diffgeo.analyses.rules import TOO_FEW, UNTESTABLE
from diffgeo.core.checks import check_output_folder
from diffgeo.core.sweep import check_cache, model_fingerprint
from diffgeo.viz.figures import figure, save_figure

__all__ = ["Report", "run_report", "check_out", "DEFAULT_MODELS", "PRESETS"]

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("shapes", "shapes-text", "digits")


class ReportWriteError(OSError):
    """The output folder cannot take the report (read-only, full, not a folder)."""


@dataclass(frozen=True)
class Report:
    """What a report run wrote and found: paths, claims, notes, and its wall / CPU seconds per part."""

    out: Path
    html: Path
    claims_json: Path
    figures: list[Path]
    claims: list[Claim]
    notes: list[str]
    timings: dict[str, dict[str, float]]
    preset: str
    models: list[str]


def check_out(out: str | Path) -> Path:
    """Create ``out`` if needed and check that files can be written there; a clear error otherwise.

    >>> import tempfile
    >>> check_out(tempfile.mkdtemp()).is_dir()
    True
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportWriteError(f"--out {str(out)!r} is a file, not a folder; pass a folder for the report")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ReportWriteError(f"cannot write the report to {str(out)!r}: {err.strerror or err}. Pass a writable "
                               "folder with --out") from err
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/"))[-80:] or "model"


def _figure(draw: Callable, data: Any, path: Path, size: tuple[float, float] = (5.0, 3.6)) -> Path:
    """``draw(ax, data)`` on one axes of ``size`` inches, saved at ``path`` (PNG, atomic) by the viz save path."""
    return save_figure(figure(lambda fig: draw(fig.subplots(), data), size=size, layout="constrained"), path, dpi=110)


def run_report(models: Sequence[str] | None = None, *, preset: str | Preset = "fast", out: str | Path = "figures",
               analyses: Sequence[str] | None = None, cache: str | Path | None = None, client: Any = None,
               seed: int = 0, progress: bool | None = None) -> Report:
    """Run the analyses and write the report to ``out``; returns what was written (see module docstring).

    models: names, folders or hub ids (default: the embedded shapes, shapes-text, digits);
    preset: "fast" (make demo), "full" (the papers' protocol in shape) or "tiny" (tests), or a
    :class:`~diffgeo.analyses.Preset`; analyses: names from ``diffgeo.analyses.ANALYSES`` (default
    all); cache: folder of the sweep cache (default ``out/cache``); client: a
    ``dask.distributed.Client`` or address for the sweeps.

    >>> p = Preset("doc", n_samples=2, steps=4, n_t=2, k=1, tol=1e-2, n_prompts=2, n_pairs=1, n_points=2, n_guidance=1)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     r = run_report(["digits"], preset=p, out=d, analyses=["coarse_to_fine"], progress=False)
    ...     r.html.is_file(), r.claims_json.is_file(), [c.id for c in r.claims]
    (True, True, ['1'])
    """
    names = check_names(list(analyses) if analyses is not None else None)
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    models = list(models or DEFAULT_MODELS)
    try:  # before loading, creating or removing anything: a file or a read-only parent is refused
        check_output_folder(out, "out")
    except (TypeError, ValueError) as err:
        raise ReportWriteError(f"cannot write the report: {err}; pass a writable folder") from None
    load_model.cache_clear()  # a folder's weights may have changed since the last call in this process
    context = Context(models, preset, Path(out), client=client, seed=seed, progress=progress)
    w0, c0 = time.perf_counter(), time.process_time()
    notes: list[str] = []
    claims: list[Claim] = []
    figures: dict[str, FigureSpec] = {}
    loaded = {m: context.timed("load models", lambda m=m: load_model(m)) for m in models}
    out = check_out(out)  # a bad model failed above: no folder made, no old report removed
    cache_root = Path(cache) if cache is not None else out / "cache"
    for old in ("report.html", "claims.json"):  # a failed run must not leave an old report looking current
        (out / old).unlink(missing_ok=True)
    for m, model in loaded.items():
        context.caches[m] = cache_root / _safe(m)
        notes += check_cache(context.caches[m], {"model": model_fingerprint(model)})
    for name in [n for n in ANALYSES if n in names]:   # registry order, each once
        result = ANALYSES[name].run(context)
        claims += result.claims
        figures.update(result.figures)   # a figure given again is redrawn in its first place
        notes += result.notes
    context.timings["total"] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
    for m, tb in context.trajectory_bases.items():
        notes.append(f"{m}: {tb.v.shape[0]} samples x {len(tb.ts)} timesteps {tb.ts}, k={tb.v.shape[2]}, "
                     f"{tb.n_products} Jacobian products (warm-started along each trajectory)")
    return _write(out, models, preset, claims, notes, figures, context.timings)


def _fmt(x: float) -> str:
    if not isinstance(x, float) or math.isnan(x):
        return "-"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


_COLOURS = {"reproduced": "#d4f4d4", "not reproduced": "#f8d0d0", "inconclusive": "#f4ecc8", SKIPPED: "#e4e4e4",
            UNTESTABLE: "#dcdcf4", TOO_FEW: "#ececec"}


def _html(models: list[str], preset: Preset, claims: list[Claim], notes: list[str], images: dict[str, bytes],
          timings: dict[str, dict[str, float]]) -> str:

    e = html.escape
    rows = []
    for c in claims:
        rows.append(
            f"<tr style='background:{_COLOURS.get(c.verdict, '#fff')}'><td>{e(c.id)}</td><td>{e(c.model)}</td>"
            f"<td>{e(c.sentence)}{'<br><small>' + e(c.source) + '</small>' if c.source else ''}</td>"
            f"<td>{e(c.statistic)}</td><td>{_fmt(c.value)}</td><td>{e(c.null)}<br>{_fmt(c.null_value)}</td>"
            f"<td>{_fmt(c.excess)}</td><td>[{_fmt(c.ci_low)}, {_fmt(c.ci_high)}]</td><td>{c.n}<br>"
            f"<small>{e(c.unit)}</small></td><td><b>{e(c.verdict)}</b></td>"
            f"<td>{e(c.rule)}<br><small>{e(c.rule_version)}</small>"
            f"{'<br><i>' + e(c.note) + '</i>' if c.note else ''}</td></tr>")
    figs = "".join(f"<figure><img alt='{e(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                   f"<figcaption>{e(name)}.png</figcaption></figure>" for name, png in images.items())
    times = "".join(f"<tr><td>{e(k)}</td><td>{v['wall_s']:.1f}</td><td>{v['cpu_s']:.1f}</td></tr>"
                    for k, v in timings.items())
    note_items = "".join(f"<li>{e(n)}</li>" for n in notes)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>diffgeo report</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;font-size:14px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:4px;vertical-align:top}}
figure{{display:inline-block;margin:8px}}img{{max-width:560px}}</style></head><body>
<h1>diffgeo report</h1>
<p>diffgeo {e(importlib.metadata.version("diffgeo"))} &middot; models: {e(', '.join(models))} &middot; preset <b>{e(preset.name)}</b>:
{preset.n_samples} samples, {preset.steps} DDIM steps, {preset.n_t} timesteps, k={preset.k}, tol={preset.tol}.
Each verdict comes from the versioned rule written beside it, fixed in code before the run
(diffgeo.analyses.rules); each claim is set against a null and its interval (95% BCa bootstrap over the unit
named, or a permutation test) is of the excess over that null. "untestable here": the design cannot answer it (the
reason is in the note); "too few units": fewer units than the rules' minimum, no verdict.</p>
<h2>Claims</h2>
<table><tr><th>#</th><th>model</th><th>claim (source)</th><th>statistic</th><th>value</th><th>null</th><th>excess</th>
<th>95% CI of the excess</th><th>n (unit)</th><th>verdict</th><th>rule (version) / note</th></tr>{''.join(rows)}</table>
<h2>Figures</h2>{figs}
<h2>Notes</h2><ul>{note_items}</ul>
<h2>Time</h2><table><tr><th>part</th><th>wall s</th><th>CPU s</th></tr>{times}</table>
</body></html>
"""


def _write(out: Path, models: list[str], preset: Preset, claims: list[Claim], notes: list[str],
           figures: dict[str, FigureSpec], timings: dict) -> Report:
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    except OSError as err:
        raise ReportWriteError(f"cannot write the report to {str(out)!r}: {err.strerror or err}") from err
    try:
        images = {}
        for name, (draw, data, size) in figures.items():
            images[name] = _figure(draw, data, tmp / f"{name}.png", size).read_bytes()
        payload = {"models": models, "preset": preset.__dict__, "claims": [c.to_dict() for c in claims],
                   "notes": notes, "timings": timings}
        (tmp / "claims.json").write_text(json.dumps(payload, indent=1, allow_nan=True))
        (tmp / "report.html").write_text(_html(models, preset, claims, notes, images, timings))
        figure_paths = []
        for name in images:
            os.replace(tmp / f"{name}.png", out / f"{name}.png")
            figure_paths.append(out / f"{name}.png")
        os.replace(tmp / "claims.json", out / "claims.json")
        os.replace(tmp / "report.html", out / "report.html")   # last: its presence means the report is complete
    except OSError as err:
        raise ReportWriteError(f"could not write the report to {str(out)!r}: {err.strerror or err}; nothing was "
                               "left looking complete (no report.html)") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Report(out, out / "report.html", out / "claims.json", figure_paths, claims, notes, timings, preset.name,
                  models)
