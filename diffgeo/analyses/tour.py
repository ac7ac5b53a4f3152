"""The main job of ``make demo``: ``python -m diffgeo tour [--model NAME] [--out DIR] [--fast]``.

Loads a model (default: the embedded ``shapes``), draws a grid of samples, reports the
h-space shape and plots h statistics over timesteps; then draws one prompt grid per embedded
text model (one row per prompt). Writes PNG figures and a JSON summary.

>>> import tempfile
>>> summary = run_tour(out=tempfile.mkdtemp(), n=4, steps=5, progress=False)
>>> summary["h_shape"]
[128, 8, 8]
>>> sorted(summary["prompt_grids"]) == _text_models()
True
>>> summary["prompt_grids"]["digits"]["guidance_scale"]   # each model's default, from diffgeo.models.zoo
2.0
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from diffgeo.core.checks import check_int, check_output_folder
from diffgeo.core.io import atomic_path
from diffgeo.evaluation.alignment import save_prompt_grid
from diffgeo.geometry.hstats import h_statistics
from diffgeo.models.loading import list_models, load
from diffgeo.models.zoo import entry, text_models
from diffgeo.readers import get_reader
from diffgeo.sampling.ddim import sample
from diffgeo.sampling.generation import DEFAULT_STEPS
from diffgeo.viz.figures import h_statistics_figure, save_figure, save_image_grid

__all__ = ["run_tour"]

log = logging.getLogger(__name__)


def _text_models() -> list[str]:
    """The embedded models that take prompts (from :mod:`diffgeo.models.zoo`)."""
    return [name for name in text_models() if name in list_models()]


def _prompt_grids(out: Path, *, n: int, steps: int, seed: int, progress: bool) -> dict:
    """One prompt grid per embedded text model, ``tour_prompts_<name>.png``: one row per prompt
    (the model's default prompts), ``n // 2`` (2 to 8) samples each, at the model's default guidance,
    with at most the alignment measurements' number of DDIM steps (the grids show what was measured)."""

    grids = {}
    steps = min(steps, DEFAULT_STEPS)
    for name in _text_models():
        spec = entry(name)
        path = save_prompt_grid(load(name), out / f"tour_prompts_{name}.png", columns=max(2, min(8, n // 2)),
                                steps=steps, seed=seed, progress=progress)
        grids[name] = {"file": path.name, "prompts": spec.prompts(), "guidance_scale": spec.guidance, "steps": steps}
    return grids


def run_tour(model_name: str = "shapes", *, out: str | Path = "figures", n: int = 64, steps: int = 50, seed: int = 0,
             progress: bool | None = None) -> dict:
    """Sample, measure h, write figures to ``out``, and one prompt grid per embedded text model
    (``tour_prompts_<name>.png``); returns the summary that is also saved as JSON.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     s = run_tour("digits", out=d, n=2, steps=2, progress=False)
    ...     s["model"], s["n"], (Path(d) / "tour_summary.json").is_file()
    ('digits', 2, True)
    """
    n, steps, seed = check_int(n, "n", min=1), check_int(steps, "steps", min=1), check_int(seed, "seed", min=0)
    out = check_output_folder(out, "out")
    t0 = time.time()
    model = load(model_name)
    log.info("loaded %s; x %s -> h %s", model, model.x_shape, model.h_shape)
    with torch.no_grad():
        traj = sample(model, n, steps=steps, seed=seed, progress=progress)
        stats = h_statistics(model, traj)
    out.mkdir(parents=True, exist_ok=True)  # only once the inputs have passed and sampling worked
    images = model.decode(traj.result)
    summary: dict = {
        "model": model.name,
        "x_shape": list(model.x_shape),
        "h_shape": list(model.h_shape),
        "h_module": model.h_module,
        "n": n,
        "steps": steps,
        "seed": seed,
        "h_statistics": {
            "timesteps": stats.timesteps.tolist(),
            "mean_norm": stats.norm.tolist(),
            "cross_sample_cosine": stats.cross_sample_cosine.tolist(),
        },
    }
    marks = None
    reader = entry(model).reader
    if reader is not None and not model.is_conditional:

        valid = get_reader(reader).read(images.float().cpu()).get("valid")
        if valid is not None:
            summary["valid_rate"] = float(valid.float().mean())
            marks = (~valid).tolist()
    title = f"{model.name}: {n} DDIM samples, {steps} steps, seed {seed}"
    if marks is not None:
        title += f" (valid {summary['valid_rate']:.0%}; red = invalid)"
    save_image_grid(images, out / "tour_samples.png", nrow=min(8, n), title=title, marks=marks)
    save_figure(h_statistics_figure(stats, f"{model.name}: h = {model.h_module} output, shape {tuple(model.h_shape)} "
                                           f"from x {model.x_shape}"), out / "tour_h_statistics.png")
    summary["prompt_grids"] = _prompt_grids(out, n=n, steps=steps, seed=seed, progress=progress)
    summary["seconds"] = round(time.time() - t0, 1)
    with atomic_path(out / "tour_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    log.info("tour written to %s in %.1f s", out, summary["seconds"])
    return summary
