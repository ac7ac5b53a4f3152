"""Analysis 5: text. (a) similar prompts give similar tangent spaces; (b) the model depends less on
the text at later timesteps (conditional and unconditional bases converge as t falls); (c) the
guidance artefact seen on the 3,000-step epsilon-prediction shapes-text: above guidance 2 the
background is pushed towards the complement of the named colour. Its v-prediction fine-tune (the
shipped model) no longer shows it: the report's verdict on (c) is "not reproduced" there.

Unconditional models have no text: :func:`text_applicable` says why each part is skipped. The
prompts compared are the model's ``analysis_prompts`` in :mod:`diffgeo.models.zoo` (the generic
entry's for a model the zoo does not know); (c) needs the named colours of the shapes-text task.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffgeo.analyses._common import Claim, DistanceBand, Preset, bootstrap_ci, load_model, skipped_claim
from diffgeo.analyses.rules import (N_BOOT, N_PERM, excess_verdict, measured_claim, permutation_verdict)
from diffgeo.analyses.bases import TrajectoryBases, collect_bases
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.core.sweep import model_fingerprint, sweep
from diffgeo.data.shapes import COLOUR_RGB, COLOURS, SHAPES
from diffgeo.evaluation.nulls import mantel_test
from diffgeo.evaluation.stats import bca_interval
from diffgeo.geometry.basis import local_basis
from diffgeo.models.zoo import GENERIC, entry
from diffgeo.sampling.ddim import ddim_timesteps
from diffgeo.sampling.ddim import sample as ddim_sample
from diffgeo.viz.draw import draw_images
from diffgeo.viz.results import draw_cond_uncond, draw_guidance_artefact, draw_prompt_geometry

__all__ = ["PromptGeometry", "prompt_geometry", "CondUncond", "cond_uncond", "GuidanceArtefact",
           "guidance_artefact", "pooled_text_distance", "text_applicable", "guidance_applicable", "analysis_prompts", "ANALYSIS"]

#: the task whose prompts name colours known here (the guidance artefact is measured on its models)
ARTEFACT_TASK = "shapes-text"

SOURCE_TEXT = ("Park et al., NeurIPS 2023 (arXiv 2307.12868), abstract: \"similar prompts yield comparable tangent "
               "spaces; and 2) the model depends less on text conditions in later timesteps\" (Stable Diffusion)")
SENTENCE_A = "Similar prompts give similar tangent spaces."
STATISTIC_A = ("Mantel (Spearman) correlation over prompt pairs between the tangent-space Grassmann distance (mean over "
               "points, each prompt's basis from a cold start) and the cosine distance of the pooled text embeddings "
               "(mean over the prompt's own tokens, padding excluded)")
NULL_A = "prompts relabelled at random (Mantel permutation test): correlation 0"
SENTENCE_B = "The model depends less on the text at later timesteps."
STATISTIC_B = "Grassmann distance / max between conditional and unconditional bases at the same x_t: last timestep minus first"
NULL_B = "no change with t (0)"
SENTENCE_C = ("Above guidance 2 the background is pushed towards the complement of the named colour "
              "(shapes-text, raw guided eps).")
SOURCE_C = ("not a claim of the papers: a property of this project's earlier eps-prediction shapes-text (issue 29), "
            "kept as a regression check of the shipped model")
STATISTIC_C = ("mean chroma of the border pixels along the complement of the named colour, guidance 4 minus 1.5, "
               "paired over noise seeds")
NULL_C = "no change with guidance (0)"
GUIDANCE_LOW, GUIDANCE_HIGH = 1.5, 4.0


def analysis_prompts(model: str) -> list[str]:
    """The prompts analysis 5 compares on ``model``: its zoo entry's, or the generic ones.

    >>> analysis_prompts("digits")[:2], analysis_prompts("someone/else")[0]
    (['a handwritten 3', 'the digit 3'], 'a photo of a cat')
    """
    return list(entry(model).analysis_prompts or GENERIC.analysis_prompts or ())


def guidance_applicable(model: str) -> str | None:
    """None when the guidance artefact (5c) can be measured on ``model``, else the reason it is skipped.

    >>> guidance_applicable("shapes-text") is None, guidance_applicable("digits")[:11]
    (True, 'measured on')
    """
    if entry(model).task != ARTEFACT_TASK:
        return "measured on the embedded shapes-text only (the named colours are known there)"
    return None


def text_applicable(model: str) -> str | None:
    """None when the text analyses apply to ``model``, else the reason they are skipped.

    >>> text_applicable("shapes-text") is None, text_applicable("shapes")[:20]
    (True, 'shapes is unconditio')
    """
    m = load_model(model)
    if not m.is_conditional:
        return f"{model} is unconditional ({type(m.unet).__name__}): it has no text to compare"
    if getattr(m, "text", None) is None:
        return f"{model} has no text encoder in its folder: prompts cannot be encoded"
    return None


def prompt_bases(model: str, sample: int, steps: int, t: int, prompts: list[str], k: int, tol: float, seed: int,
                 start: str = "cold") -> dict[str, Any]:
    """Bases at one x_t (sample ``seed + sample``, empty prompt, at t) under each prompt, each from the same
    cold start: v (P, k, *x_shape). ``start``: "cold", the only choice (a sweep key: caches of the old
    warm-started bases are not reused).

    >>> prompt_bases("shapes-text", 0, 4, 500, ["a red square", "a blue circle"], 1, 1e-2, 0)["v"].shape
    torch.Size([2, 1, 3, 32, 32])
    """

    if start != "cold":
        raise ValueError(f"start must be 'cold', got {start!r}")
    m = load_model(model)
    with torch.no_grad():
        traj = ddim_sample(m, 1, steps=steps, seed=seed + sample, progress=False)
    grid = [int(s) for s in traj.timesteps]
    x = traj.xs[grid.index(t), 0]
    out = []
    for p in prompts:  # each from the same cold start: no warm start that would follow the prompts' order
        out.append(local_basis(m, x, t, k, prompt=p, tol=tol, seed=seed, progress=False).v)
    return {"v": torch.stack(out)}


def pooled_text_distance(m: Any, prompts: list[str]) -> torch.Tensor:
    """(P, P) cosine distance between the prompts' pooled token embeddings: the mean over each prompt's own
    tokens (its token count from the tokenizer; padding excluded).

    >>> d = pooled_text_distance(load_model("shapes-text"), ["a red square", "a red square", "a blue circle"])
    >>> float(d[0, 1]) < 1e-6 < float(d[0, 2])
    True
    """
    e = m.encode_prompt(prompts).double()                         # (P, L, D)
    counts = [min(int(m.text.token_count(q)), e.shape[1]) for q in prompts]
    pooled = torch.stack([e[i, :c].mean(0) for i, c in enumerate(counts)])
    pooled = pooled / pooled.norm(dim=1, keepdim=True)
    return (1 - pooled @ pooled.T).clamp_min(0)


@dataclass(frozen=True)
class PromptGeometry:
    """prompts (P,); tangent: (P, P) mean Grassmann distance over points; text: (P, P) cosine distance of
    the prompts' token embeddings; t the timestep; claim 5a."""

    model: str
    t: int
    prompts: list[str]
    tangent: torch.Tensor
    text: torch.Tensor
    claim: Claim


def prompt_geometry(model: str, preset: Preset, *, cache: str | Path | None = None, client: Any = None,
                    seed: int = 0, progress: bool | None = None) -> PromptGeometry:
    """Claim 5a: tangent-space distance between prompts vs their text-embedding distance (a ValueError
    with the reason when the model has no text).

    >>> p = Preset("doc", n_samples=2, steps=4, n_t=2, k=1, tol=1e-2, n_prompts=3, n_pairs=1, n_points=2, n_guidance=2)
    >>> g = prompt_geometry("shapes-text", p, progress=False)
    >>> len(g.prompts), g.tangent.shape, g.text.shape, g.claim.id
    (3, torch.Size([3, 3]), torch.Size([3, 3]), '5a')
    """
    why = text_applicable(model)
    if why is not None:
        raise ValueError(why)
    m = load_model(model)
    prompts = analysis_prompts(model)[: preset.n_prompts]
    grid = [int(s) for s in ddim_timesteps(m, preset.steps)]
    t = grid[len(grid) // 2]
    n_points = max(2, preset.n_samples // 2)
    points = [{"model": model, "sample": i, "steps": preset.steps, "t": t, "prompts": prompts, "k": preset.k,
               "tol": preset.tol, "seed": seed, "start": "cold"} for i in range(n_points)]
    res = sweep(prompt_bases, points, cache=cache, client=client, progress=progress,
                context={"model": model_fingerprint(m)}, desc=f"prompt bases {model}")
    p = len(prompts)
    tangent = torch.zeros(p, p, dtype=torch.float64)
    for r in res.results:
        v = r["v"].reshape(p, preset.k, -1).double()
        for i, j in itertools.combinations(range(p), 2):
            d = torch.arccos(torch.linalg.svdvals(v[i] @ v[j].T).clamp(0, 1)).square().sum().sqrt()
            tangent[i, j] += d / len(res.results)
            tangent[j, i] = tangent[i, j]
    text = pooled_text_distance(m, prompts)
    r = p_greater = p_less = float("nan")
    if p >= 4:   # a Mantel test needs 4 objects; fewer get no verdict either way (rules.MIN_UNITS)
        r, p_greater = mantel_test(tangent, text, n_perm=N_PERM, seed=seed)
        _, p_less = mantel_test(tangent, text, n_perm=N_PERM, seed=seed, alternative="less")
    claim = measured_claim("5a", "text", model, SENTENCE_A, SOURCE_TEXT,
                           f"{STATISTIC_A} (t={t}, {n_points} points, {p} prompts)", value=r, null=NULL_A,
                           null_value=0.0, excess=(r, float("nan"), float("nan")), n=p, unit="prompts (permuted)",
                           rule="permutation", verdict=permutation_verdict(p_greater, p_less, n=p),
                           note=f"one-sided permutation p = {p_greater:.3g} (greater), {p_less:.3g} (less); no "
                                "interval: the Mantel test is the inference")
    return PromptGeometry(model, t, prompts, tangent, text, claim)


@dataclass(frozen=True)
class CondUncond(DistanceBand):
    """Claim 5b: dist (N, T) between conditional (``prompt``) and unconditional bases at the same x_t."""

    prompt: str


def cond_uncond(cond: TrajectoryBases, uncond: TrajectoryBases) -> CondUncond:
    """Claim 5b from two sets of bases at the same points (same model, samples and timesteps).

    >>> from diffgeo.analyses.bases import toy_bases
    >>> r = cond_uncond(toy_bases(), toy_bases())     # the same bases: distance 0 at every t
    >>> r.mean.tolist(), r.claim.id
    ([0.0, 0.0, 0.0], '5b')
    """
    if cond.ts != uncond.ts or cond.v.shape != uncond.v.shape:
        raise ValueError("cond and uncond bases must come from the same samples and timesteps")
    n, t_count, k = cond.v.shape[:3]
    dist = torch.zeros(n, t_count, dtype=torch.float64)
    for a in range(n):
        for j in range(t_count):
            cos = torch.linalg.svdvals(cond.v[a, j] @ uncond.v[a, j].T).clamp(0, 1)
            dist[a, j] = torch.arccos(cos).square().sum().sqrt()
    dmax = math.sqrt(k) * math.pi / 2
    curves = [bootstrap_ci(n, lambda i, j=j: float(dist[i, j].mean()) / dmax) for j in range(t_count)]
    mean, low, high = (torch.tensor([c[q] for c in curves], dtype=torch.float64) for q in range(3))
    value, lo, hi = bca_interval(n, lambda i: float((dist[i, -1] - dist[i, 0]).mean()) / dmax, n_boot=N_BOOT)
    claim = measured_claim("5b", "text", cond.model, SENTENCE_B, SOURCE_TEXT,
                           f"{STATISTIC_B} (prompt {cond.prompt!r}, t={cond.ts[-1]} vs t={cond.ts[0]})", value=value,
                           null=NULL_B, null_value=0.0, excess=(value, lo, hi), n=n, unit="samples", rule="excess",
                           verdict=excess_verdict(lo, hi, n=n, sign=-1),
                           note=f"distance / max at t={cond.ts[0]}: {float(mean[0]):.3g}, at t={cond.ts[-1]}: "
                                f"{float(mean[-1]):.3g}")
    return CondUncond(cond.model, list(cond.ts), dist, mean, low, high, dmax, claim, str(cond.prompt))


def guidance_samples(model: str, steps: int, n: int, guidance: float, seed: int) -> dict[str, Any]:
    """n shapes-text samples at one guidance scale (raw guided eps), prompts 'a {colour} {shape}' cycling.

    >>> r = guidance_samples("shapes-text", steps=4, n=2, guidance=4.0, seed=0)
    >>> r["images"].shape, len(r["colour"])
    (torch.Size([2, 3, 32, 32]), 2)
    """

    m = load_model(model)
    pairs = list(itertools.product(range(len(COLOURS)), range(len(SHAPES))))
    colour = [pairs[i % len(pairs)][0] for i in range(n)]
    prompts = [f"a {COLOURS[c]} {SHAPES[pairs[i % len(pairs)][1]]}" for i, c in enumerate(colour)]
    with torch.no_grad():
        x = ddim_sample(m, n, steps=steps, seed=seed, prompt=prompts, guidance_scale=guidance, progress=False).result
    return {"images": x, "colour": colour}


def _complement_chroma(images: torch.Tensor, colour: list[int]) -> torch.Tensor:
    """(N,) mean border chroma along the complement of each image's named colour."""

    border = torch.ones(images.shape[-2:], dtype=torch.bool)
    border[2:-2, 2:-2] = False
    bg = images[..., border].double().mean(-1)                    # (N, 3)
    chroma = bg - bg.mean(1, keepdim=True)
    c = COLOUR_RGB[colour].double()
    c = c - c.mean(1, keepdim=True)
    direction = -c / c.norm(dim=1, keepdim=True)
    return (chroma * direction).sum(1)


@dataclass(frozen=True)
class GuidanceArtefact:
    """chroma_low / chroma_high: (N,) border chroma along the complement of the named colour at guidance
    1.5 and 4 (same noise); images_low / images_high a few samples for the figure; claim 5c."""

    model: str
    chroma_low: torch.Tensor
    chroma_high: torch.Tensor
    images_low: torch.Tensor
    images_high: torch.Tensor
    claim: Claim


def guidance_artefact(model: str, preset: Preset, *, cache: str | Path | None = None, client: Any = None,
                      seed: int = 0, progress: bool | None = None) -> GuidanceArtefact:
    """Claim 5c on shapes-text (the artefact's colours are known there only; a ValueError elsewhere).

    >>> p = Preset("doc", n_samples=2, steps=4, n_t=2, k=1, tol=1e-2, n_prompts=2, n_pairs=1, n_points=2, n_guidance=2)
    >>> g = guidance_artefact("shapes-text", p, progress=False)
    >>> g.chroma_low.shape, g.chroma_high.shape, g.claim.id, g.claim.n
    (torch.Size([2]), torch.Size([2]), '5c', 2)
    """
    why = guidance_applicable(model)
    if why is not None:
        raise ValueError(why)
    m = load_model(model)
    points = [{"model": model, "steps": preset.steps, "n": preset.n_guidance, "guidance": g, "seed": seed}
              for g in (GUIDANCE_LOW, GUIDANCE_HIGH)]
    res = sweep(guidance_samples, points, cache=cache, client=client, progress=progress,
                context={"model": model_fingerprint(m)}, desc="guidance samples")
    low = _complement_chroma(res.results[0]["images"], res.results[0]["colour"])
    high = _complement_chroma(res.results[1]["images"], res.results[1]["colour"])
    n = len(low)
    value, lo, hi = bca_interval(n, lambda i: float((high[i] - low[i]).mean()), n_boot=N_BOOT)
    note = ("a project check, not a paper claim; not related to the local bases here: the geometry side of the "
            "artefact is not measured")
    claim = measured_claim("5c", "text", model, SENTENCE_C, SOURCE_C, STATISTIC_C, value=value, null=NULL_C,
                           null_value=0.0, excess=(value, lo, hi), n=n, unit="noise seeds (paired)", rule="excess",
                           verdict=excess_verdict(lo, hi, n=n, sign=+1), note=note)
    return GuidanceArtefact(model, low, high, res.results[0]["images"][:8], res.results[1]["images"][:8], claim)


def _draw_guidance_samples(ax: Any, g: GuidanceArtefact) -> None:
    draw_images(ax, torch.cat([g.images_low, g.images_high]), nrow=len(g.images_low), captions=None)


def _run(context: Context) -> AnalysisResult:
    """Claims 5a-5c on the first text-conditioned model (all skipped, with the reasons, when there is none)."""
    model = next((m for m in context.models if text_applicable(m) is None), None)
    if model is None:
        why = "; ".join(str(text_applicable(m)) for m in context.models)
        return AnalysisResult([skipped_claim(cid, "text", ", ".join(context.models), sentence, why)
                               for cid, sentence in (("5a", SENTENCE_A), ("5b", SENTENCE_B), ("5c", SENTENCE_C))])
    preset, cache, kw = context.preset, context.cache(model), context.sweep_kwargs
    result = AnalysisResult()
    pg = context.timed("text: prompts", lambda: prompt_geometry(model, preset, cache=cache, **kw))
    result.claims.append(pg.claim)
    result.figures["text_prompts"] = FigureSpec(draw_prompt_geometry, pg)
    prompt = analysis_prompts(model)[0]
    cu = context.timed("text: cond vs uncond", lambda: cond_uncond(
        collect_bases(model, preset, cache=cache, prompt=prompt, branch="cond", **kw),
        collect_bases(model, preset, cache=cache, prompt=prompt, branch="uncond", **kw)))
    result.claims.append(cu.claim)
    result.figures["text_cond_uncond"] = FigureSpec(draw_cond_uncond, cu)
    why = guidance_applicable(model)
    ga = context.timed("text: guidance artefact",
                       lambda: None if why else guidance_artefact(model, preset, cache=cache, **kw))
    if ga is None:
        result.claims.append(skipped_claim("5c", "text", model, SENTENCE_C, str(why)))
    else:
        result.claims.append(ga.claim)
        result.figures["guidance_artefact"] = FigureSpec(draw_guidance_artefact, ga, (4.6, 3.6))
        result.figures["guidance_samples"] = FigureSpec(_draw_guidance_samples, ga, (6.0, 1.8))
    return result


ANALYSIS = Analysis("text", "5. prompts vs tangent spaces; cond vs uncond bases vs t; the guidance artefact", _run)
