"""Regenerate docs/api.md from the code: ``.venv/bin/python docs/gen_api.py``.

The lists come from each subpackage's ``__all__`` (or, where a subpackage has none, its public
modules' ``__all__``) and each name's first docstring sentence; the signature block at the top is
kept by hand in SIGNATURES below.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import warnings
from pathlib import Path

warnings.simplefilter("ignore")

LAYERS = ["core", "data", "viz", "models", "sampling", "geometry", "readers", "evaluation", "editing",
          "analyses", "widgets", "training", "cli"]

SIGNATURES = '''\
```python
# models (diffgeo.models)
diffgeo.load(name_or_path, *, device=None, dtype=None, h_module="mid_block") -> Model
diffgeo.list_models() -> list[str]
Model: unet, scheduler, name, device, dtype, x_shape, h_shape, alphas_cumprod, num_train_timesteps,
       is_conditional, is_latent, vae, text, provenance, guidance, clipped_eps (what guidance_scale=None /
       use_clipped_model_output=None stand for; from the zoo entry)
       eps(x_t, t, *, prompt=None, negative_prompt=None, branch=None, guidance_scale=None, cond=None)
       h(x_t, t, *, ...same keywords)               # x_t (B, *x_shape), t int or (B,) in [0, T-1]
       eps_fn(x_t, t_b, cond), h_fn(x_t, t_b, cond)  # unchecked, for torch.func transforms
       encode_prompt(list[str]), conditioning(prompt, ...) -> Cond
       decode(x0) -> images, encode_image(images) -> x0   # identity for pixel models
# conditioning: the one resolver behind every prompt= / cond= keyword
diffgeo.models.resolve_cond(model, prompt=None, *, negative_prompt=None, branch=None, guidance_scale=None,
                            cond=None, batch=None, default_branch=None) -> Cond | None
diffgeo.models.default_guidance(model) -> float       # what guidance_scale=None means (diffgeo.models.zoo)
Cond: cond, uncond, branch, guidance_scale, cond_kwargs, uncond_kwargs (SDXL: added_cond_kwargs), prompt,
      negative_prompt; with_branch(), meta()
# the registry (diffgeo.models.zoo): per-model guidance, prompts, reader, training recipe and data
diffgeo.models.entry(model_or_name) -> Entry(name, guidance, prompts, task, reader, alignment_n, recipe, data,
                                             analysis_prompts, real_images, clipped_eps)
# sampling (DDIM), t is always the scheduler's integer timestep
diffgeo.sample(model, n=None, *, noise=None, steps=50, eta=0.0, seed=None, generator=None,
               prompt=None, negative_prompt=None, guidance_scale=None, cond=None,
               use_clipped_model_output=None, callback=None, progress=True) -> Trajectory
# the schedule follows the scheduler config as DDIMScheduler does (spacing, steps_offset, set_alpha_to_one,
# prediction type, zero-SNR betas): diffgeo.sampling.schedule (final_abar, prev_timesteps, step_abars)
diffgeo.invert(model, x0, *, steps=50, ...) -> Trajectory       # ends exactly where sample() starts
diffgeo.denoise(model, x_t, t, *, steps=50, eta=0.0, ...) -> Trajectory   # continue from any (x_t, t)
Trajectory: timesteps (S+1,) [-1 = clean end], xs (S+1, B, ...), x0_preds (S, B, ...), meta; save()/load()
# h-space
diffgeo.models.hooks: capture / add_to_output / replace_output (context managers), run_until(unet, name, ...)
diffgeo.geometry.h_statistics(model, traj) -> HStatistics        # under the trajectory's own conditioning
# pullback geometry of x_t -> h
diffgeo.local_basis(model, x_t, t, k, *, prompt=None, branch=None, cond=None, tol=1e-3, seed=None) -> LocalBasis
diffgeo.exact_basis(model, x_t, t, k) -> LocalBasis              # full Jacobian + SVD, small models
diffgeo.h_map(model, x_t, t) -> HMap                             # batched jvp / vjp / jacobian
LocalBasis: v (k, *x_shape), u (k, *h_shape), s (k,), residuals, iterations, n_products, meta; save()/load()
diffgeo.principal_angles / grassmann_distance / projection_distance / distance_matrix
diffgeo.radial_power_spectrum / spectral_centroid                # coarse-to-fine
diffgeo.transport(basis_a, basis_b, direction, via="h"|"x")
diffgeo.curvedness(model_or_fn, x_a, x_b, t, k=10) -> Curvedness # (a) rotation, (b) off-tangent, (c) excess length
# generating and reading samples
diffgeo.sampling.generate(model, prompts) / prompt_grid(model, prompts, columns=8) -> images
diffgeo.readers.get_reader("shapes" | "digits").read(images) -> {factor: (N,) classes, "valid": (N,)}
diffgeo.text_alignment(model, n=None, *, task=None, guidance_scale=None, ...) -> Alignment
diffgeo.evaluation.sweep(model, scales, ...) / save_prompt_grid(model, path)
diffgeo.readers.probe.validity(images) -> Validity(valid, rmse, factors, rerendered)
diffgeo.readers.probe.fit_scene(images, start_factors) -> SceneFit(factors, rmse, out_of_range)
diffgeo.evaluation.evaluate_samples(model, n=512, seed=1234) -> QualityReport   # .floor: tv_floor / ks_floor
diffgeo.evaluation.quality_of(images) -> QualityReport   # .valid_rate, .out_of_range_rate (clean scenes past the ranges)
diffgeo.training: train(name, *, run_dir, steps, init=None, ...) ; export(name, run_dir=...) ; average(name, folders)
# editing (diffgeo.editing)
diffgeo.invert(model, images, *, steps=50, method="fixed_point"|"ddim", tol=1e-6, max_iter=50, ...) -> Trajectory
diffgeo.edit_x(model, x_t, t, direction, *, strength, method="step"|"guidance", steps=50, t_boost=None,
               prompt=None, edit_prompt=None, ...) -> Trajectory
diffgeo.edit_image(model, images, t, direction, *, strength, ...) -> Trajectory
diffgeo.asyrp(model, x_T, direction, *, strength=1.0, t_edit=None, t_boost=None, steps=50, prompt=None) -> Trajectory
diffgeo.edit_interval(model, images, *, distance="ssim") -> EditInterval(t_edit, t_boost, ...)
diffgeo.editing.mean_difference / pca / tangent -> Direction (k vectors, timesteps, space, model name)
diffgeo.transfer_edit(model, source_basis, target_bases, direction, *, strength, vias=("h", "x")) -> Transfer
diffgeo.editing.train_direction(model, objective, *, out, steps) -> LearnedDirection ; .to_direction(model)
diffgeo.editing.edit_properties(model, direction, *, space="x"|"h", factor, target) -> EditProperties
# analyses, sweeps and the report
diffgeo.analyses.bases_along(model, xs, ts, k) ; local_basis(..., init=previous_basis)   # warm start
diffgeo.core.sweep.sweep(fn, grid, *, cache=DIR, client=None) -> SweepResult         # cached, resumable, Dask
# figures: pure draw_*(ax, data) functions, saving at the edge (no pyplot, no backend switching)
diffgeo.viz.draw_images / draw_labelled_grid / draw_h_statistics / draw_quality / ...; save_figure(fig, path)
# command line: python -m diffgeo VERB (or `diffgeo VERB`); --help lists the verbs
tour, train, probe, evaluate, alignment, report, edit, learn-direction, transfer, models
```
'''


def first_line(obj: object, limit: int = 120) -> str:
    """The first sentence of an object's docstring, on one line, at most ``limit`` characters."""
    doc = " ".join((inspect.getdoc(obj) or "").split("\n\n")[0].split())
    doc = re.sub(r":(?:func|class|mod|data|meth|attr):`~?([^`]+)`", r"`\1`", doc).replace("``", "`")
    m = re.match(r"(.+?[.!?])(\s|$)", doc)
    doc = m.group(1) if m else doc
    return doc if len(doc) <= limit else doc[: limit - 3].rstrip() + "..."


def describe(mod: object, name: str) -> str:
    obj = getattr(mod, name)
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj) or callable(obj):
        kind = "class" if inspect.isclass(obj) else "module" if inspect.ismodule(obj) else "function"
        return f"| `{name}` | {kind} | {first_line(obj).replace('|', chr(92) + '|')} |"
    return f"| `{name}` | constant | `{type(obj).__name__}` |"


def table(mod: object, names: list[str]) -> list[str]:
    return ["| name | kind | what |", "|---|---|---|", *(describe(mod, n) for n in names), ""]


def main() -> str:
    import diffgeo
    from diffgeo.cli import VERBS

    out = ["# API", "",
           "Generated by `docs/gen_api.py` from the code's `__all__` lists (rerun it after changing them).",
           "Import public names from the face (`diffgeo.local_basis`) or from their subpackage",
           "(`diffgeo.editing.mean_difference`): module files inside a subpackage may still move. The old flat",
           "paths (`diffgeo.pullback`, `diffgeo.zoo`, ...) are deprecated aliases for one release",
           "(`diffgeo._moved.MOVED` maps each to its new home).", "",
           "## Main signatures", "", SIGNATURES,
           "## `diffgeo` (the face)", "", first_line(diffgeo), "", *table(diffgeo, list(diffgeo.__all__))]
    for layer in LAYERS:
        name = f"diffgeo.{layer}"
        mod = importlib.import_module(name)
        out += [f"## `{name}`", "", first_line(mod), ""]
        if layer == "cli":
            out += ["`python -m diffgeo VERB [options]` or `diffgeo VERB`; `diffgeo VERB --help` for its options.", "",
                    "| verb | what |", "|---|---|", *(f"| `{v}` | {text} |" for v, (_m, text) in VERBS.items()), ""]
            continue
        if getattr(mod, "__all__", None):
            out += table(mod, list(mod.__all__))
            continue
        for info in pkgutil.iter_modules(mod.__path__, name + "."):
            if info.name.rsplit(".", 1)[1].startswith("_"):
                continue
            sub = importlib.import_module(info.name)
            names = list(getattr(sub, "__all__", None) or [
                n for n, o in vars(sub).items() if not n.startswith("_") and getattr(o, "__module__", None) == sub.__name__
                and (inspect.isfunction(o) or inspect.isclass(o))])
            out += [f"### `{info.name}`", "", first_line(sub), "", *table(sub, names)]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    path = Path(__file__).with_name("api.md")
    path.write_text(main())
    print(f"wrote {path}")
