"""The ``diffgeo tour`` command."""

from __future__ import annotations

import logging

from diffgeo.analyses.tour import run_tour
from diffgeo.cli._args import ArgumentParser, check_model_arg, non_negative_int, positive_int, preflight, run_main
from diffgeo.core.checks import check_output_folder


def main(argv: list[str] | None = None) -> int:
    """``python -m diffgeo tour``: run :func:`run_tour` from the command line.

    >>> main(["--n", "0"])   # refused before loading: --n must be a positive integer
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    parser = ArgumentParser(prog="diffgeo tour",
                            description="Samples, h-space shape and h statistics over timesteps, as figures.")
    parser.add_argument("--model", default="shapes", help="embedded name, local folder or hub id (default: shapes)")
    parser.add_argument("--out", default="figures", help="folder for the figures (default: figures)")
    parser.add_argument("--n", type=positive_int, default=None, help="number of samples (default 64; 8 with --fast)")
    parser.add_argument("--steps", type=positive_int, default=None, help="DDIM steps (default 50; 10 with --fast)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--fast", action="store_true",
                        help="small defaults: 8 samples, 10 steps (an explicit --n / --steps takes precedence)")
    args = parser.parse_args(argv)
    # Explicit values win over --fast: --fast only changes the defaults.
    n = args.n if args.n is not None else (8 if args.fast else 64)
    steps = args.steps if args.steps is not None else (10 if args.fast else 50)
    preflight(parser, lambda: check_model_arg(args.model), lambda: check_output_folder(args.out))  # before any work
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_main(lambda: run_tour(args.model, out=args.out, n=n, steps=steps, seed=args.seed))
    return 0
