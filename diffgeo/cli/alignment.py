"""The ``diffgeo alignment`` command."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from diffgeo.cli._args import ArgumentParser, non_negative_float, non_negative_int, positive_int, preflight
from diffgeo.core.checks import check_output_folder
from diffgeo.core.io import atomic_path
from diffgeo.data.prompts import PHRASINGS, TASKS
from diffgeo.evaluation.alignment import GUIDANCE_SWEEP, _jsonable, log, save_prompt_grid, sweep, text_alignment
from diffgeo.models.loading import load
from diffgeo.models.zoo import entry, text_models
from diffgeo.readers import get_reader
from diffgeo.sampling.generation import DEFAULT_STEPS


def main(argv: list[str] | None = None) -> int:
    """``python -m diffgeo alignment NAME``: prompt grid and alignment sweep of a text model.

    >>> main(["shapes"])   # refused before loading: shapes is not a text model
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """

    parser = ArgumentParser(prog="diffgeo alignment",
                                     description="Prompt grid and measured text alignment of an embedded text model.")
    parser.add_argument("model", choices=text_models())
    parser.add_argument("--n", type=positive_int, default=None, help="samples per guidance scale (default: the model's in "
                                                            "diffgeo.models.zoo)")
    parser.add_argument("--scales", type=non_negative_float, nargs="+", default=list(GUIDANCE_SWEEP))
    parser.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--columns", type=positive_int, default=8, help="samples per prompt in the grid")
    parser.add_argument("--guidance", type=non_negative_float, default=None,
                        help="guidance scale of the grid (default: the model's in diffgeo.models.zoo)")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    preflight(parser, lambda: check_output_folder(args.out, "--out"))
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = load(args.model)
    spec = entry(model)
    progress = False if args.no_progress else None
    grid = save_prompt_grid(model, args.out / f"{args.model}_prompts.png", columns=args.columns,
                            guidance_scale=args.guidance, steps=args.steps, seed=args.seed, progress=progress)
    n = args.n or spec.alignment_n
    kw = dict(n=n, steps=args.steps, seed=args.seed, progress=progress)
    # Both DDIM variants of a clipping scheduler: the direction term with the raw (guided) eps, as
    # diffusers by default, and with eps recomputed from the clipped x0.
    results = [r for clipped in (False, True)
               for r in sweep(model, args.scales, use_clipped_model_output=clipped, **kw)]
    # The other phrasing (paraphrases and partial captions, or the canonical one) at the default guidance.
    other = next(p for p in PHRASINGS if p != TASKS[spec.task][1])
    results.append(text_alignment(model, phrasing=other, **kw))
    reader = get_reader(spec.reader)
    summary: dict = {"model": args.model, "model_steps": model.provenance.get("steps"), "n": n, "steps": args.steps,
                     "seed": args.seed, "default_guidance": spec.guidance,
                     "reader": {"name": reader.name, "held_out_accuracy": reader.accuracy},
                     "command": "python -m diffgeo alignment " + " ".join(sys.argv[2:] if argv is None else argv)}
    for r in results:
        log.info("guidance %4.1f, %s eps, %s prompts: agreement %s (valid %s)", r.guidance_scale,
                 "clipped" if r.use_clipped_model_output else "raw", r.phrasing,
                 {k: round(v, 3) for k, v in r.agreement.items()},
                 "n/a" if r.valid_rate is None else f"{r.valid_rate:.3f}")
    summary["results"] = [r.to_dict() for r in results]
    path = args.out / f"{args.model}_alignment.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(summary), indent=1))
    log.info("wrote %s and %s", grid, path)
    return 0
