"""The ``diffgeo train`` command.

Exports go to ``--export-to FOLDER``; replacing the weights shipped inside the installed package
(``diffgeo/embedded/NAME``) needs the explicit ``--overwrite-embedded``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from diffgeo.cli._args import (
    ArgumentParser,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    preflight,
)
from diffgeo.core.checks import check_output_folder
from diffgeo.models.loading import EMBEDDED_DIR
from diffgeo.training import LOSS_WEIGHTS, PREDICTIONS, average, export, recipe_names, train
from diffgeo.training.loop import check_init, log


def _ema_decay(text: str) -> float:
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value


_ema_decay.__name__ = "number"


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
    parser.add_argument("--steps", type=positive_int, default=None, help="total steps (default: the recipe's)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--ckpt-every", type=positive_int, default=250)
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--export-only", action="store_true", help="export the latest checkpoint and stop")
    parser.add_argument("--init", type=Path, default=None,
                        help="warm start from this package folder when RUN_DIR holds no checkpoint")
    parser.add_argument("--loss-weight", choices=LOSS_WEIGHTS, default="eps",
                        help="eps: the plain MSE of the target; v (epsilon models): epsilon MSE weighted by "
                             "min(1/alpha-bar, cap); min-snr: x0 MSE weighted by min(SNR, cap)")
    parser.add_argument("--weight-cap", type=positive_float, default=None,
                        help="the weighting's cap (default: 1000 for v, 5 for min-snr)")
    parser.add_argument("--ema-decay", type=_ema_decay, default=None, help="EMA decay in [0, 1) (default: the "
                                                                           "recipe's)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default: the recipe's)")
    parser.add_argument("--no-ema-warmup", action="store_true",
                        help="average at the full EMA decay from the first step (for a warm start)")
    parser.add_argument("--lr-decay", action="store_true", help="cosine learning-rate decay to 0 over the run")
    parser.add_argument("--prediction", choices=PREDICTIONS, default=None,
                        help="the U-Net's output (default: the recipe's); see training_target")
    parser.add_argument("--export-to", type=Path, default=None, help="export folder (required unless "
                                                                     "--overwrite-embedded or --no-export)")
    parser.add_argument("--overwrite-embedded", action="store_true",
                        help="export into the installed package (diffgeo/embedded/NAME), replacing the shipped "
                             "weights")
    parser.add_argument("--average", type=Path, nargs="+", default=None, metavar="FOLDER",
                        help="write the weight average of these exported folders (to --export-to) and stop")
    parser.add_argument("--no-export", action="store_true",
                        help="train only (e.g. a short timing run with --steps 10 --run-dir /tmp/x)")
    args = parser.parse_args(argv)
    exporting = bool(args.average) or not args.no_export
    if args.average and (args.init or args.export_only or args.no_export or args.run_dir):
        parser.error("--average writes an average of exported folders; it takes no --init, --run-dir, "
                     "--export-only or --no-export (train and export the inputs first)")
    if args.export_only and args.no_export:
        parser.error("--export-only and --no-export exclude each other")
    if args.export_to is not None and args.overwrite_embedded:
        parser.error("--export-to and --overwrite-embedded exclude each other: give one destination")
    if exporting and args.export_to is None and not args.overwrite_embedded:
        parser.error(f"no export destination: pass --export-to FOLDER (or --no-export); replacing the weights "
                     f"shipped in the package ({EMBEDDED_DIR / args.name}) needs --overwrite-embedded")
    if args.no_export and args.overwrite_embedded:
        parser.error("--overwrite-embedded exports; it cannot go with --no-export")
    run_dir = args.run_dir or Path("runs") / args.name
    checks = [lambda: check_output_folder(run_dir, "--run-dir")]
    if exporting:
        dest = args.export_to or EMBEDDED_DIR / args.name
        checks.append(lambda: check_output_folder(dest.parent, "--export-to's parent"))
    if args.init is not None:
        checks.append(lambda: check_init(args.init, "--init"))
    if args.export_only and not args.average:
        checks.append(lambda: _has_checkpoint(run_dir))
    if args.average:
        checks += [lambda f=f: _is_folder(f, "--average") for f in args.average]
    preflight(parser, *checks)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.average:
        dest = average(args.name, args.average, dest=args.export_to)
        log.info("wrote the average of %d models of %s to %s", len(args.average), args.name, dest)
        return 0
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


def _has_checkpoint(run_dir: Path) -> Path:
    ckpt = run_dir / "checkpoint.safetensors"
    if not ckpt.is_file():
        raise FileNotFoundError(f"--export-only: {run_dir} holds no checkpoint.safetensors; train first (or pass "
                                "the --run-dir that holds it)")
    return ckpt


def _is_folder(path: Path, flag: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{flag} {path} is not a folder: give folders written by diffgeo train --export-to")
    return path
