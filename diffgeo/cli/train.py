"""The ``diffgeo train`` command."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from diffgeo.cli._args import ArgumentParser
from diffgeo.training import LOSS_WEIGHTS, PREDICTIONS, average, export, recipe_names, train
from diffgeo.training.loop import log


def main(argv: list[str] | None = None) -> int:
    """``diffgeo train NAME``: train (or resume) a recipe of diffgeo.models.recipes, then export it.

    >>> main(["no-such-recipe"])   # refused by the parser: a recipe of diffgeo.models.recipes
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    parser = ArgumentParser(prog="diffgeo train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=recipe_names())
    parser.add_argument("--run-dir", type=Path, default=None, help="checkpoints (default runs/NAME)")
    parser.add_argument("--steps", type=int, default=None, help="total steps (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ckpt-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--export-only", action="store_true", help="export the latest checkpoint and stop")
    parser.add_argument("--init", type=Path, default=None,
                        help="warm start from this package folder when RUN_DIR holds no checkpoint")
    parser.add_argument("--loss-weight", choices=LOSS_WEIGHTS, default="eps",
                        help="eps: the plain MSE of the target; v (epsilon models): epsilon MSE weighted by "
                             "min(1/alpha-bar, cap); min-snr: x0 MSE weighted by min(SNR, cap)")
    parser.add_argument("--weight-cap", type=float, default=None,
                        help="the weighting's cap (default: 1000 for v, 5 for min-snr)")
    parser.add_argument("--ema-decay", type=float, default=None, help="EMA decay (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: the recipe's)")
    parser.add_argument("--no-ema-warmup", action="store_true",
                        help="average at the full EMA decay from the first step (for a warm start)")
    parser.add_argument("--lr-decay", action="store_true", help="cosine learning-rate decay to 0 over the run")
    parser.add_argument("--prediction", choices=PREDICTIONS, default=None,
                        help="the U-Net's output (default: the recipe's); see training_target")
    parser.add_argument("--export-to", type=Path, default=None, help="export folder (default: the package's)")
    parser.add_argument("--average", type=Path, nargs="+", default=None, metavar="FOLDER",
                        help="write the weight average of these exported folders (to --export-to) and stop")
    parser.add_argument("--no-export", action="store_true",
                        help="train only (e.g. a short timing run with --steps 10 --run-dir /tmp/x)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.average:
        if args.init or args.export_only or args.no_export or args.run_dir:
            parser.error("--average writes an average of exported folders; it takes no --init, --run-dir, "
                         "--export-only or --no-export (train and export the inputs first)")
        dest = average(args.name, args.average, dest=args.export_to)
        log.info("wrote the average of %d models of %s to %s", len(args.average), args.name, dest)
        return 0
    run_dir = args.run_dir or Path("runs") / args.name
    if not args.export_only:
        train(args.name, run_dir=run_dir, steps=args.steps, seed=args.seed, ckpt_every=args.ckpt_every,
              threads=args.threads, init=args.init, loss_weight=args.loss_weight, weight_cap=args.weight_cap,
              lr_decay=args.lr_decay, prediction=args.prediction, ema_decay=args.ema_decay,
              batch_size=args.batch_size, ema_warmup=not args.no_ema_warmup)
    if args.no_export:
        return 0
    dest = export(args.name, run_dir=run_dir, dest=args.export_to)
    log.info("exported %s to %s", args.name, dest)
    return 0
