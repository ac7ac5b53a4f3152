"""Claims 7g and 7h: Asyrp's learned f_t (Kwon et al. 2023) as the edit, per sample and as a global dh.

Asyrp trains f_t(h, t) -> dh, one network for all samples, and argues that its output is nearly the
same for every sample, so a single dh per timestep (the mean of f_t over samples) edits alike. Here
f_t is trained with :func:`diffgeo.editing.learned.train_direction` and the shapes probe's objective
(colour -> blue, no keep term: it turns most samples blue) for ``TRAIN_STEPS`` steps on t >= t_edit,
cached in the report's cache folder. On held-out x_T (another seed) the edit is applied two ways: per
sample, f_t(h(x_t), t) added to h in the x0 prediction at every step t >= t_edit (Asyrp's process),
and globally, the time-step-wise mean dh_t of f_t over the training images
(:meth:`~diffgeo.editing.learned.LearnedDirection.to_direction`) through :func:`diffgeo.asyrp`. The
readout is 7a's colour margin, logit[blue] - logit[the image's own colour]; the unit is the held-out
image, those already blue unedited excluded (they cannot turn blue; decided before any edit is read).

- 7g (equivalence): the global dh's mean effect / the per-sample f_t's mean effect - 1, inside the
  margin ``BOUNDS["7g"]``.
- 7h (homogeneity of the learned f_t): the coefficient of variation of the per-sample effects, below
  ``BOUNDS["7h"]`` (7a's bound, there on the mean-difference dh).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import diffgeo.models.hooks as hooks
from diffgeo.analyses._common import Claim, load_model, skipped_claim
from diffgeo.analyses.asyrp_objects import cv_effect
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context
from diffgeo.analyses.rules import N_BOOT, bound_verdict, equivalence_verdict, measured_claim
from diffgeo.data.shapes import COLOURS
from diffgeo.editing.common import edit_setup
from diffgeo.editing.hspace import asyrp
from diffgeo.editing.learned import LearnedDirection, train_direction
from diffgeo.editing.objectives import probe_objective
from diffgeo.evaluation.stats import bca_interval
from diffgeo.models.zoo import entry
from diffgeo.readers.probe import load_probe
from diffgeo.sampling.ddim import CLEAN, ddim_loop, ddim_timesteps, model_eps

__all__ = ["LearnedClaims", "learned_claims", "per_sample_edit", "effect_ratio", "colour_margin", "ANALYSIS",
           "TRAIN_STEPS"]

SOURCE = ("Kwon et al., ICLR 2023 (arXiv 2210.10960), the implicit neural direction f_t and the global direction (the "
          "mean of f_t's outputs over samples, dh_t) that edits every sample alike (paraphrase; homogeneity)")
SENTENCES = {
    "7g": "A single time-step-wise dh (the mean of the learned f_t) edits as the per-sample f_t does.",
    "7h": "The learned f_t changes the attribute of every sample alike (homogeneity of the per-sample effects).",
}
UNIT = "held-out images (x_T) not already blue, each edited both ways"
TARGET = "blue"
TRAIN_STEPS = {"fast": 100, "full": 300}   # ~0.5-1 s a step on one thread (batch 8)


def effect_ratio(global_effect: np.ndarray, per_sample_effect: np.ndarray) -> float:
    """mean(global) / mean(per-sample) - 1 over paired images (N,); NaN when the per-sample mean is 0.

    >>> effect_ratio(np.array([1.0, 3.0]), np.array([2.0, 2.0])), effect_ratio(np.ones(2), np.zeros(2))
    (0.0, nan)
    """
    m = float(np.mean(per_sample_effect))
    return float(np.mean(global_effect)) / m - 1.0 if m != 0 else float("nan")


def per_sample_edit(model: Any, ld: LearnedDirection, x_T: torch.Tensor, *, t_edit: int, steps: int,
                    strength: float = 1.0) -> torch.Tensor:
    """Final images (B, *x_shape) of Asyrp's process with the per-sample f_t: at each step t >= t_edit, h of the
    x0 prediction's forward pass gets ``strength * f_t(h, t)``; the direction term and later steps are plain DDIM.

    >>> import diffgeo
    >>> from diffgeo.editing.objectives import probe_objective
    >>> m = diffgeo.load("shapes")
    >>> ld = train_direction(m, probe_objective(m), steps=1, batch_size=2, n_images=2, t_edit=500, progress=False)
    >>> x_T = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> per_sample_edit(m, ld, x_T, t_edit=500, steps=4).shape
    torch.Size([2, 3, 32, 32])
    """
    ld.check(model)
    grid, cond, clip, clipped = edit_setup(model, x_T, steps, None, None, None, None)
    base = model_eps(model, cond)
    net = ld.net.eval()

    def pair(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        e, _ = base(x, t)
        if t == CLEAN or t < t_edit:
            return e, e
        tb = model.timesteps_tensor(t, x.shape[0])
        with hooks.add_to_output(model.unet, lambda h: strength * net(h, tb), model.h_module):
            e_p = model.eps_fn(x, tb, cond)
        return e_p, e

    with torch.no_grad():
        return ddim_loop(model, x_T, grid + [CLEAN], pair, clip=clip, clipped_eps=clipped, steps=steps,
                         progress=False).result


@dataclass(frozen=True)
class LearnedClaims:
    """per_sample / global_ / base: (N,) colour margin (logit blue - logit own colour) after each edit and unedited,
    over the held-out images not already blue; spread: per timestep
    mean relative distance of f_t(h_i) from its mean over the training images; claims 7g and 7h."""

    model: str
    t_edit: int
    base: np.ndarray
    per_sample: np.ndarray
    global_: np.ndarray
    spread: list[float]
    claims: tuple[Claim, ...]


def _logits(probe: Any, images: torch.Tensor) -> np.ndarray:
    """(N, colours) the probe's colour logits."""
    with torch.no_grad():
        _, c, _ = probe(images.detach().float().cpu().clamp(-1, 1))
    return c.double().numpy()


def colour_margin(logits: np.ndarray, source: np.ndarray, target: int) -> np.ndarray:
    """(N,) logit[target] - logit[source] per image (7a's readout): logits (N, C), source (N,) class indices.

    >>> colour_margin(np.array([[1.0, 3.0], [2.0, 0.5]]), np.array([0, 0]), 1).tolist()
    [2.0, -1.5]
    """
    return logits[:, target] - logits[np.arange(len(logits)), source]


def learned_claims(model: str, *, n: int = 16, steps: int = 10, train_steps: int = 100, seed: int = 0,
                   out: str | Path | None = None) -> LearnedClaims:
    """Claims 7g and 7h on a shapes model; ``out``: where the trained f_t is kept (reruns reuse it).

    >>> r = learned_claims("shapes", n=4, steps=4, train_steps=1)
    >>> [c.id for c in r.claims], r.per_sample.shape == r.base.shape
    (['7g', '7h'], True)
    """
    m, probe = load_model(model), load_probe()
    grid = [int(t) for t in ddim_timesteps(m, steps)]
    t_edit = min(grid, key=lambda t: abs(t - 500))
    ld = train_direction(m, probe_objective(m, "colour", TARGET), out=out, steps=train_steps, t_edit=t_edit,
                         seed=seed, progress=False)
    global_dir = ld.to_direction(m, steps=steps, seed=seed)
    x_T = torch.randn(n, *m.x_shape, generator=torch.Generator().manual_seed(seed + 9090))   # not the training images
    with torch.no_grad():
        base_l = _logits(probe, asyrp(m, x_T, global_dir, strength=0.0, t_edit=t_edit, t_boost=0, steps=steps,
                                      progress=False).result)
        glob_l = _logits(probe, asyrp(m, x_T, global_dir, strength=1.0, t_edit=t_edit, t_boost=0, steps=steps,
                                      progress=False).result)
    per_l = _logits(probe, per_sample_edit(m, ld, x_T, t_edit=t_edit, steps=steps))
    tgt = COLOURS.index(TARGET)
    source = base_l.argmax(1)
    keep = source != tgt            # images already blue cannot turn blue: not units (decided on the unedited read)
    base, glob, per = (colour_margin(x, source, tgt)[keep] for x in (base_l, glob_l, per_l))
    e_per, e_glob = per - base, glob - base
    n = int(keep.sum())
    if n < 2:
        raise ValueError(f"only {n} of the {len(keep)} held-out images are not already {TARGET}: use a larger n")
    r, rlo, rhi = bca_interval(n, lambda i: effect_ratio(e_glob[i], e_per[i]), n_boot=N_BOOT)
    v, vlo, vhi = bca_interval(n, lambda i: cv_effect(e_per[i]), n_boot=N_BOOT)
    spread = [float(s) for s in global_dir.meta.get("spread", [])]
    common = dict(n=n, unit=UNIT)
    trained = (f"f_t trained {ld.step} steps (probe objective colour -> {TARGET}, no keep term) on t >= {t_edit}; "
               f"{n} of {len(keep)} held-out images not already {TARGET}; mean margin: unedited {base.mean():.3g}, "
               f"per-sample f_t {per.mean():.3g}, global dh {glob.mean():.3g}; turned {TARGET}: per-sample "
               f"{float((per_l.argmax(1)[keep] == tgt).mean()):.2f}, "
               f"global {float((glob_l.argmax(1)[keep] == tgt).mean()):.2f}")
    claims = (
        measured_claim("7g", "asyrp_learned", model, SENTENCES["7g"], SOURCE,
                       "mean rise of the colour margin (logit blue - logit own colour) under the global dh_t / "
                       "under the per-sample f_t, minus 1", value=r,
                       null="0 (the same effect)", null_value=0.0, excess=(r, rlo, rhi), rule="equivalence",
                       verdict=equivalence_verdict(rlo, rhi, n=n, claim="7g"),
                       note=f"{trained}; spread of f_t(h_i) about its mean per t: "
                            f"{', '.join(f'{s:.2g}' for s in spread)}", **common),
        measured_claim("7h", "asyrp_learned", model, SENTENCES["7h"], SOURCE,
                       "coefficient of variation over images of the rise of the colour margin under the per-sample "
                       "f_t", value=v,
                       null="0 (every image moved alike)", null_value=0.0, excess=(v, vlo, vhi), rule="bound",
                       verdict=bound_verdict(vlo, vhi, n=n, claim="7h", side=-1),
                       note=trained, **common))
    return LearnedClaims(model, t_edit, base, per, glob, spread, claims)


def _run(context: Context) -> AnalysisResult:
    """Claims 7g and 7h on the primary model when the shapes probe reads it (skipped with the reason otherwise)."""
    model = context.primary
    if entry(model).reader != "shapes":
        why = f"{model} has no shapes reader: the probe objective and readout need it"
        return AnalysisResult([skipped_claim(c, "asyrp_learned", model, SENTENCES[c], why) for c in ("7g", "7h")])
    full = context.preset.name == "full"
    cache = context.cache(model)
    train_steps = TRAIN_STEPS["full" if full else "fast"]
    out = None
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        out = Path(cache) / f"learned_f_t_{TARGET}_{train_steps}.safetensors"
    r = context.timed("asyrp: learned f_t", lambda: learned_claims(
        model, n=context.preset.n_for(list(SENTENCES), 64 if full else 16),
        steps=20 if full else context.preset.steps, train_steps=train_steps, seed=context.seed, out=out))
    return AnalysisResult(list(r.claims))


ANALYSIS = Analysis("asyrp_learned", "7. Asyrp's learned f_t: per-sample vs global dh, homogeneity", _run)
