"""The main job of ``make demo``: ``python -m diffgeo tour``.

Loads a model (default: the embedded ``shapes``), draws a grid of samples, reports the
h-space shape and plots h statistics over timesteps; then draws one prompt grid per embedded
text model (one row per prompt). Writes PNG figures and a JSON summary.

>>> import tempfile
>>> summary = run_tour(out=tempfile.mkdtemp(), n=4, steps=5, progress=False)
>>> summary["h_shape"]
[128, 8, 8]
>>> sorted(summary["prompt_grids"]) == _text_models()
True
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from .hspace import h_statistics
from .io import atomic_path
from .models import load
from .plotting import save_image_grid
from .sampling import sample

__all__ = ["run_tour"]

log = logging.getLogger(__name__)


def _plot_h_statistics(stats, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    t = stats.timesteps.numpy()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    axes[0].plot(t, stats.norm.numpy(), marker=".")
    axes[0].set(title="mean ||h||", xlabel="timestep t")
    axes[1].plot(t, stats.cross_sample_cosine.numpy(), marker=".", color="C1")
    axes[1].set(title="cosine of h between samples", xlabel="timestep t")
    axes[2].plot(t[:-1], stats.step_cosine.numpy()[:-1], marker=".", color="C2")
    axes[2].set(title="cosine of h between consecutive steps", xlabel="timestep t")
    for ax in axes:
        ax.invert_xaxis()  # sampling runs from noise (large t) to data (t = 0)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _text_models() -> list[str]:
    """Embedded models with a text encoder (their provenance names one)."""
    from .models import EMBEDDED_DIR, list_models

    return [name for name in list_models()
            if "text_encoder" in json.loads((EMBEDDED_DIR / name / "provenance.json").read_text())]


def _prompt_grids(out: Path, *, n: int, steps: int, seed: int, progress: bool) -> dict:
    """One prompt grid per embedded text model, ``tour_prompts_<name>.png``: one row per prompt,
    ``n // 2`` (2 to 8) samples each, guided at the model's scale in ``diffgeo.alignment.GUIDANCE``,
    with at most the alignment measurements' number of DDIM steps (20; the grids show what was measured)."""
    from .alignment import DEFAULT_STEPS, GUIDANCE, default_prompts, save_prompt_grid

    grids = {}
    steps = min(steps, DEFAULT_STEPS)
    for name in _text_models():
        path = save_prompt_grid(load(name), out / f"tour_prompts_{name}.png", columns=max(2, min(8, n // 2)),
                                guidance_scale=GUIDANCE[name], steps=steps, seed=seed, progress=progress)
        grids[name] = {"file": path.name, "prompts": default_prompts(name), "guidance_scale": GUIDANCE[name],
                       "steps": steps}
    return grids


def run_tour(model_name: str = "shapes", *, out: str | Path = "figures", n: int = 64, steps: int = 50, seed: int = 0,
             progress: bool = True, prompt_grids: bool = True) -> dict:
    """Sample, measure h, write figures to ``out``; returns the summary that is also saved as JSON.

    ``prompt_grids``: also draw one prompt grid per embedded text model (``tour_prompts_<name>.png``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = load(model_name)
    log.info("loaded %s; x %s -> h %s", model, model.x_shape, model.h_shape)
    with torch.no_grad():
        traj = sample(model, n, steps=steps, seed=seed, progress=progress)
        stats = h_statistics(model, traj)
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
    if model.name == "shapes":
        from .probe import validity

        val = validity(images)
        summary["valid_rate"] = val.rate
        marks = (~val.valid).tolist()
    title = f"{model.name}: {n} DDIM samples, {steps} steps, seed {seed}"
    if marks is not None:
        title += f" (valid {summary['valid_rate']:.0%}; red = invalid)"
    save_image_grid(images, out / "tour_samples.png", nrow=min(8, n), title=title, marks=marks)
    _plot_h_statistics(stats, out / "tour_h_statistics.png",
                       f"{model.name}: h = {model.h_module} output, shape {tuple(model.h_shape)} from x {model.x_shape}")
    if prompt_grids:
        summary["prompt_grids"] = _prompt_grids(out, n=n, steps=steps, seed=seed, progress=progress)
    summary["seconds"] = round(time.time() - t0, 1)
    with atomic_path(out / "tour_summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    log.info("tour written to %s in %.1f s", out, summary["seconds"])
    return summary
