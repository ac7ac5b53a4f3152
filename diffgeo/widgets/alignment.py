"""Text alignment as a panel the notebook shows *after* its dashboard: long work on demand, with
its progress beside the button that started it, and its results cached on disk across sessions.

The measurement (:func:`diffgeo.evaluation.alignment.text_alignment`: sample prompts of the
model's task, read shape and colour back with the task's reader) runs in ``chunks`` equal parts
of ``n / chunks`` samples (seed = chunk index), each one point of a :func:`diffgeo.core.sweep.sweep`
with a cache folder: a closed notebook, a killed kernel or a second session reads the finished
chunks back instead of recomputing them. :func:`cached_alignment` is the computation,
:func:`alignment_panel` the ipywidgets front end, :func:`alignment_html` the result as a small
table with 95% intervals (never a raw repr).

>>> import tempfile, diffgeo
>>> r = cached_alignment(diffgeo.load("digits"), n=4, chunks=2, steps=2, cache=tempfile.mkdtemp())
>>> r.n, sorted(r.agreement)
(4, ['digit'])
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from diffgeo.core.sweep import model_fingerprint, sweep
from diffgeo.evaluation.alignment import text_alignment
from diffgeo.evaluation.stats import wilson_interval
from diffgeo.models.conditioning import default_guidance
from diffgeo.widgets._diskcache import notebook_cache
from diffgeo.widgets._reference import sampler_settings
from diffgeo.widgets._ui import widgets

__all__ = ["AlignmentSummary", "cached_alignment", "alignment_html", "alignment_panel", "notebook_cache"]


@dataclass(frozen=True)
class AlignmentSummary:
    """n samples at ``guidance_scale`` (``steps`` DDIM steps); agreement {factor: fraction of samples
    whose reader reads the factor the prompt names}; counts {factor: samples read right}."""

    n: int
    guidance_scale: float
    steps: int
    agreement: dict
    counts: dict


def cached_alignment(model: Any, *, n: int = 256, chunks: int = 8, steps: int = 20, guidance_scale: float | None = None,
                     cache: str | Path | None = None, report: Callable[[int, int, str], None] | None = None
                     ) -> AlignmentSummary:
    """Text alignment of ``n`` samples in ``chunks`` cached parts (see the module docstring);
    ``report(done, total, label)`` is called before each part and at the end.

    >>> import tempfile, diffgeo
    >>> cached_alignment(diffgeo.load("digits"), n=2, chunks=1, steps=2, cache=tempfile.mkdtemp()).n
    2
    """
    if not (isinstance(n, int) and isinstance(chunks, int) and 1 <= chunks <= n and n % chunks == 0):
        raise ValueError(f"n must be a positive multiple of chunks (1 <= chunks <= n), got n={n!r}, chunks={chunks!r}")
    w = float(default_guidance(model) if guidance_scale is None else guidance_scale)
    size = n // chunks
    settings = sampler_settings(model)

    def part(seed: int) -> dict:
        r = text_alignment(model, n=size, guidance_scale=w, steps=steps, seed=seed, progress=False, **settings)
        return {"agreement": {k: float(v) for k, v in r.agreement.items()}}

    context = {"model": model_fingerprint(model), **settings}
    folder = Path(cache) if cache is not None else notebook_cache()
    results = []
    for c in range(chunks):
        if report:
            report(c, chunks, f"alignment {c * size}/{n}")
        point = {"seed": c, "n": size, "w": w, "steps": steps}
        results.append(sweep(lambda seed, **_: part(seed), [point], cache=folder, name="notebook-alignment",
                             version="1", context=context, progress=False).results[0])
    if report:
        report(chunks, chunks, "done")
    keys = results[0]["agreement"]
    counts = {k: round(sum(r["agreement"][k] * size for r in results)) for k in keys}
    return AlignmentSummary(n, w, steps, {k: counts[k] / n for k in keys}, counts)


def alignment_html(r: AlignmentSummary) -> str:
    """The summary as an HTML table: factor, fraction read as prompted, 95% Wilson interval.

    >>> "shape" in alignment_html(AlignmentSummary(10, 1.5, 20, {"shape": 0.9}, {"shape": 9}))
    True
    """
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{r.counts[k]}/{r.n} = {v:.0%}</td>"
                   f"<td>{wilson_interval(r.counts[k], r.n)[0]:.0%}-{wilson_interval(r.counts[k], r.n)[1]:.0%}</td></tr>"
                   for k, v in r.agreement.items())
    return (f"<table><tr><th>factor</th><th>read as prompted</th><th>95% interval</th></tr>{rows}</table>"
            f"<i>{r.n} samples, guidance {r.guidance_scale:g}, {r.steps} DDIM steps. What to notice: "
            "'all' is the fraction with every named factor right. Reference: a model that ignored the prompt "
            "would match a named factor only at chance (1/6 for colour, 1/3 for shape, 1/10 for a digit).</i>")


def alignment_panel(model: Any, *, n: int = 256, chunks: int = 8, steps: int = 20, cache: str | Path | None = None,
                    autorun: bool = False) -> Any:
    """A button that measures :func:`cached_alignment` with a progress bar beside it and the
    table below (a measurement already in the disk cache comes back in seconds). ``autorun``: measure now.

    >>> import tempfile, diffgeo
    >>> panel = alignment_panel(diffgeo.load("digits"), n=2, chunks=1, steps=2, cache=tempfile.mkdtemp(), autorun=True)
    >>> "read as prompted" in panel.children[1].value
    True
    """
    w = widgets()
    button = w.Button(description=f"measure alignment ({n} samples)", layout=w.Layout(width="260px"))
    bar = w.IntProgress(value=0, min=0, max=chunks, layout=w.Layout(width="240px", visibility="hidden"))
    out = w.HTML()

    def report(done: int, total: int, label: str) -> None:
        bar.max, bar.value, bar.description = total, done, ""
        bar.layout.visibility = "hidden" if done >= total else "visible"
        button.description = label if done < total else f"measure alignment ({n} samples)"

    def run(_: Any = None) -> None:
        button.disabled = True
        try:
            out.value = alignment_html(cached_alignment(model, n=n, chunks=chunks, steps=steps, cache=cache,
                                                        report=report))
        except Exception as e:  # noqa: BLE001 - the panel stays live
            out.value = f'<span style="color:#b00020">&#9888; {html.escape(f"{type(e).__name__}: {e}")}</span>'
        finally:
            button.disabled = False
            bar.layout.visibility = "hidden"

    button.on_click(run)
    if autorun:
        run()
    return w.VBox([w.HBox([button, bar]), out])
