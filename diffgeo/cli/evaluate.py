"""The ``diffgeo evaluate`` command."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from diffgeo.cli._args import ArgumentParser, check_model_arg, non_negative_int, positive_int, preflight
from diffgeo.core.checks import check_output_folder
from diffgeo.core.io import atomic_path
from diffgeo.evaluation.plots import plot_invalid, plot_report
from diffgeo.evaluation.quality import evaluate_digits, log, quality_of, sample_images
from diffgeo.models.loading import load


def main(argv: list[str] | None = None) -> int:
    """``diffgeo evaluate``: sample quality of a model read by its reader, as figures and JSON.

    >>> main(["--n", "0"])   # refused before loading: --n must be a positive integer
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    parser = ArgumentParser(prog="diffgeo evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--n", type=positive_int, default=512)
    parser.add_argument("--steps", type=positive_int, default=50)
    parser.add_argument("--seed", type=non_negative_int, default=1234,
                        help="the first batch's seed (the next batches add 1, 2, ...)")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    args = parser.parse_args(argv)
    preflight(parser, lambda: check_model_arg(args.model), lambda: check_output_folder(args.out, "--out"))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.model == "digits":  # a figure of merit against the real digits (no figure)
        quality = evaluate_digits(load("digits"), n=min(args.n, 450))
        with atomic_path(args.out / "digits_quality.json") as tmp:
            tmp.write_text(json.dumps(quality.summary(), indent=1))
        log.info("%s", json.dumps(quality.summary()))
        return 0
    images = sample_images(load(args.model), n=args.n, steps=args.steps, seed=args.seed)
    report = quality_of(images, steps=args.steps, seed=args.seed)
    stem = Path(args.model).resolve().name  # named by the last part of a folder or hub id: runs/x -> x_quality.json
    plot_report(report, args.out / f"{stem}_quality.png")
    plot_invalid(images, report, args.out / f"{stem}_invalid.png")
    with atomic_path(args.out / f"{stem}_quality.json") as tmp:
        tmp.write_text(json.dumps(report.summary(), indent=1))
    log.info("%s", json.dumps(report.summary()))
    return 0
