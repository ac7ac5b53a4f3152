"""The ``diffgeo edit`` command."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from diffgeo.cli._args import ArgumentParser, check_model_arg, non_negative_int, positive_int, preflight
from diffgeo.cli.edit_image import main as image_main
from diffgeo.core.checks import check_output_folder
from diffgeo.data.digits import canonical_digit_caption, load_digits_images
from diffgeo.data.shapes import make_scenes
from diffgeo.editing.factors import FACTOR_DEFAULTS, factor_directions, properties_stem, save_properties_figure
from diffgeo.editing.interval import PAPER_T_BOOST, PAPER_T_EDIT, edit_interval
from diffgeo.editing.properties import _default_t_edit, edit_properties, logger
from diffgeo.models.loading import load
from diffgeo.sampling.ddim import sample
from diffgeo.sampling.inversion import invert


# -- command line --------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diffgeo edit {interval,roundtrip} --model NAME``: t_edit / t_boost by the rule, or the
    inversion round-trip RMSE (fixed-point against plain) on real scenes / digits; prints JSON.
    ``edit properties ...``: the property table (:func:`diffgeo.editing.properties.main`).

    >>> main(["rename"])   # refused by the parser: interval, roundtrip or properties
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """

    p = ArgumentParser(prog="diffgeo edit", description=main.__doc__.partition(">>>")[0])
    if argv is None:
        argv = sys.argv[1:]
    if list(argv[:1]) == ["image"]:
        return image_main(list(argv[1:]))
    if list(argv[:1]) == ["properties"]:

        return properties_main(list(argv[1:]))
    p.add_argument("what", choices=("interval", "roundtrip", "properties", "image"))
    p.add_argument("--model", default="shapes")
    p.add_argument("--n", type=positive_int, default=8)
    p.add_argument("--steps", type=positive_int, default=50)
    p.add_argument("--distance", default="ssim", choices=("ssim", "lpips"))
    p.add_argument("--seed", type=non_negative_int, default=987_654)
    args = p.parse_args(argv)
    checks = [lambda: check_model_arg(args.model)]
    if args.what == "interval" and args.distance == "lpips":
        checks.append(_has_lpips)
    preflight(p, *checks)

    model = load(args.model)
    if model.x_shape == (3, 32, 32):

        images, prompt = make_scenes(args.n, seed=args.seed).images, ("" if model.is_conditional else None)
    elif args.model == "digits":

        d = load_digits_images()
        idx = torch.randperm(len(d.labels), generator=torch.Generator().manual_seed(args.seed))[:args.n]
        images, prompt = d.images[idx].clamp(-1, 1), [canonical_digit_caption(int(c)) for c in d.labels[idx]]
    else:
        raise ValueError(f"--model {args.model}: no real images for it; use shapes, shapes-text or digits")
    out: dict[str, Any] = {"model": model.name}
    with torch.no_grad():
        if args.what == "interval":
            iv = edit_interval(model, images, distance=args.distance, prompt=prompt)
            out.update(t_edit=iv.t_edit, t_boost=iv.t_boost, thresholds=iv.thresholds, distance=iv.distance,
                       paper=[PAPER_T_EDIT, PAPER_T_BOOST])
        else:
            for method in ("fixed_point", "ddim"):
                inv = invert(model, images, steps=args.steps, method=method, prompt=prompt,
                             use_clipped_model_output=True)
                back = sample(model, noise=inv.result, steps=args.steps, prompt=prompt,
                              use_clipped_model_output=True).result
                rmse = (back - images).flatten(1).pow(2).mean(1).sqrt()
                out[method] = {"rmse_mean": float(rmse.mean()), "rmse_max": float(rmse.max()),
                               "unconverged_steps": len(inv.meta.get("unconverged", []))}

    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


def _has_lpips() -> bool:
    if importlib.util.find_spec("lpips") is None:
        raise ImportError("--distance lpips needs the optional 'lpips' package (pip install 'diffgeo[lpips]'; it "
                          "needs torchvision); the offline default is --distance ssim")
    return True


def properties_main(argv: Sequence[str] | None = None) -> int:
    """``python -m diffgeo edit properties --model shapes --factor colour``: the property table of the
    a -> b mean-difference direction of one factor (:func:`factor_directions`; defaults in
    :data:`FACTOR_DEFAULTS`) in x and in h, composed with the default second factor's direction;
    writes figures/edit_properties_<model>_<factor>[_<a>-<b>]_{x,h}.{json,csv} and one figure with
    x and h side by side (.png). Digits: ``--model digits --factor digit --a 1 --b 7``; text models
    generate (and take h) with ``--prompt`` (default ``""``, the unconditional branch: with the
    prompt of a, "a handwritten 1", guidance holds the samples at a and no edit changed a digit
    in a 4-sample trial).

    >>> properties_main(["--factor", "texture"])   # refused by the parser: a factor of FACTOR_DEFAULTS
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """

    p = ArgumentParser(prog="diffgeo edit properties", description=main.__doc__.partition(">>>")[0])
    p.add_argument("--model", default="shapes")
    p.add_argument("--factor", default="colour", choices=tuple(FACTOR_DEFAULTS))
    p.add_argument("--a", default=None, help="class edited from (default per factor)")
    p.add_argument("--b", default=None, help="class edited to: the target (default per factor)")
    p.add_argument("--no-composition", action="store_true")
    p.add_argument("--n", type=positive_int, default=32, help="evaluation samples")
    p.add_argument("--n-direction", type=positive_int, default=16, help="images per group for the directions")
    p.add_argument("--steps", type=positive_int, default=10)
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the evaluation samples")
    p.add_argument("--space", default="both", choices=("x", "h", "both"))
    p.add_argument("--out", default="figures")
    p.add_argument("--prompt", default=None, help="text models: generation prompt, also used for h (default '': "
                   "unconditional samples; the prompt of a pins the samples to a)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    preflight(p, lambda: check_model_arg(args.model), lambda: check_output_folder(args.out, "--out"))

    a0, b0, second_factor, second_pair = FACTOR_DEFAULTS[args.factor]
    a, b = args.a or a0, args.b or b0
    model = load(args.model)
    prompt = (args.prompt if args.prompt is not None else "") if model.is_conditional else None
    t_edit = _default_t_edit(model, args.steps)
    kw = dict(n=args.n_direction, steps=args.steps, t_edit=t_edit, prompt=prompt)
    dirs = dict(zip(("x", "h"), factor_directions(model, args.factor, a, b, **kw)))
    seconds = {}
    if second_factor is not None and not args.no_composition:
        seconds = dict(zip(("x", "h"), factor_directions(model, second_factor, *second_pair, **kw)))
    stem = properties_stem(model.name, args.factor, a, b)
    tables = []
    for space in ("x", "h"):
        if args.space in (space, "both"):
            t = edit_properties(model, dirs[space], space=space, factor=args.factor, target=b, n=args.n, steps=args.steps,
                         t_edit=t_edit, second=seconds.get(space), second_factor=second_factor if seconds else None,
                         second_target=second_pair[1] if seconds else None, seed=args.seed, prompt=prompt,
                         progress=False if args.no_progress else None)
            t.save(Path(args.out) / f"{stem}_{space}")
            tables.append(t)
    try:
        save_properties_figure(tables, Path(args.out) / f"{stem}.png")
    except ImportError as err:  # the figure is optional (matplotlib); the tables are written
        logger.warning("no figure: %s", err)
    return 0
