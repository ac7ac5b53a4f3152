"""Command line: ``python -m diffgeo tour [--model NAME] [--out DIR] [--fast]``."""

from __future__ import annotations

import argparse
import logging


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffgeo", description="diffgeo: looking inside diffusion models")
    sub = parser.add_subparsers(dest="command", required=True)
    tour = sub.add_parser("tour", help="samples, h-space shape and h statistics over timesteps, as figures")
    tour.add_argument("--model", default="shapes", help="embedded name, local folder or hub id (default: shapes)")
    tour.add_argument("--out", default="figures", help="folder for the figures (default: figures)")
    tour.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    tour.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    tour.add_argument("--seed", type=int, default=0)
    tour.add_argument("--fast", action="store_true", help="8 samples, 10 steps (for tests)")
    sub.add_parser("models", help="list the embedded models")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "tour":
        from .tour import run_tour

        n, steps = (8, 10) if args.fast else (args.n, args.steps)
        run_tour(args.model, out=args.out, n=n, steps=steps, seed=args.seed)
    elif args.command == "models":
        from .models import list_models

        for name in list_models():
            logging.getLogger("diffgeo").info(name)
