"""Analysis 5, continued, on the first text-conditioned model: what the text does to the local basis.

- 5d: a basis taken under a prompt gives edits aligned with the prompt: on shapes-text, at x_t of an
  unprompted sample, the prompt names the image's own shape and another colour; the best of the
  basis vectors (either sign) raises the probe's probability of the named colour more under the
  prompt's (conditional) basis than under the unconditional basis at the same x_t. The same number
  for as many random directions is in the note. Unit: the sample.
- 5e / 5f: text influence over t for many prompts. For each prompt (the unit), one trajectory sampled
  under it and, at the preset's timesteps, its conditional and unconditional bases and a second
  unconditional basis from another random start (the seed null: the distance two computations of
  the same subspace have). The excess at t is d(cond, uncond) - d(uncond, uncond'), normalised by
  the largest distance; 5e: it falls from the first to the last timestep (the text matters less
  late); 5f: averaged over t it is above 0 (the text changes the tangent space at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffgeo.analyses._common import Claim, Preset, bases_along, load_model, skipped_claim
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context
from diffgeo.analyses.rules import N_BOOT, excess_verdict, measured_claim
from diffgeo.analyses.text import SOURCE_TEXT, analysis_prompts, guidance_applicable, text_applicable
from diffgeo.core.sweep import model_fingerprint, sweep
from diffgeo.data.shapes import COLOURS, SHAPES
from diffgeo.editing.xspace import edit_x
from diffgeo.evaluation.nulls import random_directions_like
from diffgeo.evaluation.stats import bca_interval
from diffgeo.geometry.basis import local_basis
from diffgeo.readers.probe import load_probe
from diffgeo.sampling.ddim import ddim_timesteps
from diffgeo.sampling.ddim import sample as ddim_sample

__all__ = ["TextOverPrompts", "text_over_prompts", "branch_distances", "TextEdits", "text_edits", "best_gain",
           "ANALYSIS"]

SOURCE_D = ("Park et al., NeurIPS 2023 (arXiv 2307.12868), the local basis under a text condition (Stable Diffusion): "
            "edits along it follow the prompt (paraphrase; section and figure numbers not checked here)")
SENTENCE_D = "A local basis taken under a prompt edits the prompted attribute more than the unconditional basis does."
STATISTIC_D = ("best rise over the k basis vectors and both signs of the probe's probability of the prompt's colour, "
               "conditional basis minus unconditional basis at the same x_t")
NULL_D = "the unconditional basis at the same x_t, same tries (its mean best rise)"
SENTENCE_E = "Across prompts, the text's influence on the tangent space falls at later timesteps."
STATISTIC_E = ("[d(cond, uncond) - d(uncond, uncond from another start)] / max at the last timestep minus at the "
               "first, mean over prompts")
NULL_E = "no change with t (0), each distance net of the seed null"
SENTENCE_F = "The text changes the tangent space (conditional vs unconditional basis at the same x_t)."
STATISTIC_F = "d(cond, uncond) - d(uncond, uncond from another start), / max, mean over timesteps and prompts"
NULL_F = "two computations of the unconditional basis from different random starts (the seed null)"
EDIT_STRENGTH = 0.2     # edit step of 5d as a fraction of sqrt(dim x) (fixed before the run)


def _distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Grassmann distance between the row spaces of orthonormal (k, n) a and b."""
    cos = torch.linalg.svdvals(a.double() @ b.double().T).clamp(0, 1)
    return float(torch.arccos(cos).square().sum().sqrt())


def branch_distances(cond: torch.Tensor, uncond: torch.Tensor, uncond2: torch.Tensor) -> tuple[torch.Tensor,
                                                                                            torch.Tensor]:
    """(text, seed): per timestep (T,) Grassmann distance / max (sqrt(k) pi/2) between cond and uncond bases and
    between two unconditional bases; each argument (T, k, n) with orthonormal rows.

    >>> e, o = torch.eye(4)[None, :2], torch.eye(4)[None, 2:]
    >>> text, seed = branch_distances(e, o, o)      # cond orthogonal to uncond; the two uncond identical
    >>> text.tolist(), seed.tolist()
    ([1.0], [0.0])
    """
    dmax = math.sqrt(cond.shape[1]) * math.pi / 2
    text = torch.tensor([_distance(c, u) for c, u in zip(cond, uncond)], dtype=torch.float64) / dmax
    seed = torch.tensor([_distance(u, w) for u, w in zip(uncond, uncond2)], dtype=torch.float64) / dmax
    return text, seed


def prompt_branch_bases(model: str, index: int, steps: int, ts: list[int], k: int, tol: float, seed: int,
                        prompt: str) -> dict[str, Any]:
    """One trajectory sampled under ``prompt`` (seed ``seed + index``) and its bases at ``ts``: cond, uncond and
    uncond from another random start, each (T, k, n) float64 (warm-started along t).

    >>> r = prompt_branch_bases("shapes-text", 0, 4, [750, 500], 1, 1e-2, 0, "a red circle")
    >>> r["cond"].shape, sorted(r)
    (torch.Size([2, 1, 3072]), ['cond', 'uncond', 'uncond2'])
    """
    m = load_model(model)
    with torch.no_grad():
        traj = ddim_sample(m, 1, steps=steps, seed=seed + index, prompt=prompt, progress=False)
    out = {}
    for name, branch, s in (("cond", "cond", seed), ("uncond", "uncond", seed), ("uncond2", "uncond", seed + 1)):
        bases = bases_along(m, traj, ts, k, tol=tol, seed=s, prompt=prompt, branch=branch)
        out[name] = torch.stack([b.v_flat.double() for b in bases])
    return out


@dataclass(frozen=True)
class TextOverPrompts:
    """text / seed: (P, T) distances / max per prompt and timestep; ts (T,) descending; claims 5e and 5f."""

    model: str
    prompts: list[str]
    ts: list[int]
    text: torch.Tensor
    seed: torch.Tensor
    claims: tuple[Claim, ...]


def text_over_prompts(model: str, preset: Preset, *, cache: str | Path | None = None, client: Any = None,
                      seed: int = 0, progress: bool | None = None) -> TextOverPrompts:
    """Claims 5e and 5f over ``preset.n_prompts`` of the model's analysis prompts at the preset's timesteps.

    >>> p = Preset("doc", n_samples=2, steps=4, n_t=2, k=1, tol=1e-2, n_prompts=2, n_pairs=1, n_points=2, n_guidance=1)
    >>> r = text_over_prompts("shapes-text", p, progress=False)
    >>> r.text.shape, [c.id for c in r.claims], r.claims[0].verdict
    (torch.Size([2, 2]), ['5e', '5f'], 'too few units')
    """
    m = load_model(model)
    prompts = analysis_prompts(model)[: preset.n_prompts]
    ts = preset.timesteps(ddim_timesteps(m, preset.steps).tolist())
    points = [{"model": model, "index": j, "steps": preset.steps, "ts": ts, "k": preset.k, "tol": preset.tol,
               "seed": seed, "prompt": p} for j, p in enumerate(prompts)]
    res = sweep(prompt_branch_bases, points, cache=cache, client=client, progress=progress,
                context={"model": model_fingerprint(m)}, desc=f"prompt branches {model}")
    pairs = [branch_distances(r["cond"], r["uncond"], r["uncond2"]) for r in res.results]
    text = torch.stack([p[0] for p in pairs])
    floor = torch.stack([p[1] for p in pairs])
    net = (text - floor).numpy()
    n = len(prompts)
    e, elo, ehi = bca_interval(n, lambda i: float((net[i, -1] - net[i, 0]).mean()), n_boot=N_BOOT)
    f, flo, fhi = bca_interval(n, lambda i: float(net[i].mean()), n_boot=N_BOOT)
    per_t = ", ".join(f"t={t}: {float(text[:, j].mean()):.3g} vs seed {float(floor[:, j].mean()):.3g}"
                      for j, t in enumerate(ts))
    common = dict(n=n, unit="prompts (one trajectory each)", rule="excess")
    claims = (
        measured_claim("5e", "text_over_prompts", model, SENTENCE_E, SOURCE_TEXT, f"{STATISTIC_E} (t={ts[-1]} vs "
                       f"t={ts[0]}, k={preset.k})", value=e, null=NULL_E, null_value=0.0, excess=(e, elo, ehi),
                       verdict=excess_verdict(elo, ehi, n=n, sign=-1), note=f"d / max per t: {per_t}", **common),
        measured_claim("5f", "text_over_prompts", model, SENTENCE_F, SOURCE_TEXT, STATISTIC_F,
                       value=float(text.mean()), null=NULL_F, null_value=float(floor.mean()), excess=(f, flo, fhi),
                       verdict=excess_verdict(flo, fhi, n=n, sign=+1), note=f"prompts: {', '.join(prompts)}",
                       **common))
    return TextOverPrompts(model, prompts, ts, text, floor, claims)


def best_gain(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(N,) the largest rise over tries of a per-image score: after (D, N) scores under D tried directions,
    before (N,) the unedited score.

    >>> best_gain(torch.tensor([0.0, 0.5]), torch.tensor([[0.25, 0.25], [0.5, 0.375]])).tolist()
    [0.5, -0.125]
    """
    return (after - before[None]).max(0).values


@dataclass(frozen=True)
class TextEdits:
    """gains (3, N): best rise of the named colour's probability under the conditional basis, the unconditional
    basis and random directions; prompts (N,); t; claim 5d."""

    model: str
    t: int
    prompts: list[str]
    gains: torch.Tensor
    claim: Claim


def _colour_prob(probe: Any, images: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        _, c, _ = probe(images.detach().float().clamp(-1, 1))
    return c.double().softmax(1)[torch.arange(len(colours)), colours]


def text_edits(model: str, preset: Preset, *, seed: int = 0) -> TextEdits:
    """Claim 5d on shapes-text (a ValueError elsewhere: the probe reads its colours).

    >>> p = Preset("doc", n_samples=2, steps=4, n_t=2, k=1, tol=1e-2, n_prompts=2, n_pairs=1, n_points=2, n_guidance=1)
    >>> r = text_edits("shapes-text", p)
    >>> r.gains.shape, r.claim.id
    (torch.Size([3, 2]), '5d')
    """
    why = guidance_applicable(model)
    if why is not None:
        raise ValueError(why)
    m, probe = load_model(model), load_probe()
    grid = [int(s) for s in ddim_timesteps(m, preset.steps)]
    t = min(grid, key=lambda s: abs(s - 500))
    xs = []
    for i in range(preset.n_for(["5d"], preset.n_samples)):
        with torch.no_grad():
            traj = ddim_sample(m, 1, steps=preset.steps, seed=seed + i, prompt="", progress=False)
        xs.append(traj.xs[[int(s) for s in traj.timesteps].index(t), 0])
    x = torch.stack(xs)
    kw = dict(steps=preset.steps, prompt="", progress=False)
    strength = EDIT_STRENGTH * math.sqrt(x[0].numel())
    with torch.no_grad():
        base = edit_x(m, x, t, torch.zeros_like(x[:1]), strength=0.0, **kw).result
        _, c0, _ = probe(base.float().clamp(-1, 1))
        s0 = probe(base.float().clamp(-1, 1))[0].argmax(1)
    c0 = c0.argmax(1)
    target = (c0 + 1 + torch.arange(len(x)) % (len(COLOURS) - 1)) % len(COLOURS)    # never the image's own colour
    prompts = [f"a {COLOURS[int(c)]} {SHAPES[int(s)]}" for c, s in zip(target, s0)]
    before = _colour_prob(probe, base, target)
    gains = []
    for branch in ("cond", "uncond"):
        v = torch.stack([local_basis(m, x[i], t, preset.k, prompt=prompts[i], branch=branch, tol=preset.tol,
                                     seed=seed, progress=False).v for i in range(len(x))])       # (N, k, *x_shape)
        after = [_colour_prob(probe, edit_x(m, x, t, sign * v[:, j], strength=strength, **kw).result, target)
                 for j in range(v.shape[1]) for sign in (1.0, -1.0)]
        gains.append(best_gain(before, torch.stack(after)))
    rand = random_directions_like(x[0], 2 * preset.k, seed=seed + 7)
    rand = rand / rand.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    after = [_colour_prob(probe, edit_x(m, x, t, d[None].to(x), strength=strength, **kw).result, target)
             for d in rand]
    gains.append(best_gain(before, torch.stack(after)))
    g = torch.stack(gains)
    diff = (g[0] - g[1]).numpy()
    n = len(x)
    ex, lo, hi = bca_interval(n, lambda i: float(np.mean(diff[i])), n_boot=N_BOOT)
    claim = measured_claim("5d", "text_over_prompts", model, SENTENCE_D, SOURCE_D,
                           f"{STATISTIC_D} (t={t}, k={preset.k}, step {EDIT_STRENGTH} sqrt(n), then DDIM unprompted)",
                           value=float(g[0].mean()), null=NULL_D, null_value=float(g[1].mean()),
                           excess=(ex, lo, hi), n=n, unit="samples (x_t of unprompted samples)", rule="excess",
                           verdict=excess_verdict(lo, hi, n=n, sign=+1),
                           note=f"{2 * preset.k} random directions of the same norm: mean best rise "
                                f"{float(g[2].mean()):.3g}; prompts name the image's own shape and another colour")
    return TextEdits(model, t, prompts, g, claim)


def _run(context: Context) -> AnalysisResult:
    """Claims 5d-5f on the first text-conditioned model (skipped, with the reasons, when there is none)."""
    model = next((m for m in context.models if text_applicable(m) is None), None)
    if model is None:
        why = "; ".join(str(text_applicable(m)) for m in context.models)
        return AnalysisResult([skipped_claim(cid, "text_over_prompts", ", ".join(context.models), s, why)
                               for cid, s in (("5d", SENTENCE_D), ("5e", SENTENCE_E), ("5f", SENTENCE_F))])
    result = AnalysisResult()
    why = guidance_applicable(model)
    if why is None:
        te = context.timed("text: prompted edits", lambda: text_edits(model, context.preset, seed=context.seed))
        result.claims.append(te.claim)
    else:
        result.claims.append(skipped_claim("5d", "text_over_prompts", model, SENTENCE_D, why))
    tp = context.timed("text: over prompts", lambda: text_over_prompts(
        model, context.preset, cache=context.cache(model), **context.sweep_kwargs))
    result.claims += list(tp.claims)
    return result


ANALYSIS = Analysis("text_over_prompts", "5. prompted bases' edits; text influence over t for many prompts", _run)
