"""The ``diffgeo report`` command."""

from __future__ import annotations

import importlib.util
import logging

from diffgeo.analyses import ANALYSES, PRESETS, check_names
from diffgeo.analyses.report import DEFAULT_MODELS, ReportWriteError, log, run_report
from diffgeo.cli._args import ArgumentParser, check_model_arg, non_negative_int, preflight
from diffgeo.core.checks import check_output_folder


def main(argv: list[str] | None = None) -> int:
    """``python -m diffgeo report [--fast] [--model NAME_OR_PATH ...] [--out DIR]``

    >>> main(["--fast", "--preset", "full"])   # refused before any work: the two disagree
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    parser = ArgumentParser(prog="diffgeo report",
                                     description="measure the papers' claims on a model: figures, claims table, HTML")
    parser.add_argument("--fast", action="store_true", help="the fast preset (make demo; minutes on 2 CPU cores)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="fast, full (20 timesteps, k=50, per-claim n from the fast intervals' widths) or tiny; "
                             "default full, or fast with --fast")
    parser.add_argument("--model", action="extend", nargs="+", default=None, metavar="NAME_OR_PATH",
                        help=f"embedded name, local diffusers folder or hub id; repeat for several "
                             f"(default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--out", default="figures", help="output folder (default: figures)")
    parser.add_argument("--analyses", default=None,
                        help=f"comma-separated subset of: {', '.join(ANALYSES)} (default: all)")
    parser.add_argument("--cache", default=None, help="sweep cache folder (default: OUT/cache)")
    parser.add_argument("--dask", default=None, metavar="ADDRESS", help="run the sweeps on this Dask scheduler")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.fast and args.preset not in (None, "fast"):
        parser.error("--fast and --preset disagree; pass one of them")
    preset = "fast" if args.fast else (args.preset or "full")
    analyses = None if args.analyses is None else [a.strip() for a in args.analyses.split(",") if a.strip()]
    try:
        check_names(analyses)
    except ValueError as err:
        parser.error(str(err))
    # models, folders and the optional scheduler before anything is loaded, made or removed
    checks = [lambda m=m: check_model_arg(m) for m in (args.model or DEFAULT_MODELS)]
    checks.append(lambda: check_output_folder(args.out, "--out"))
    if args.cache is not None:
        checks.append(lambda: check_output_folder(args.cache, "--cache"))
    if args.dask:
        checks.append(lambda: _has_distributed())
    preflight(parser, *checks)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    client = None
    if args.dask:
        from distributed import Client

        client = Client(args.dask)
    try:
        report = run_report(args.model, preset=preset, out=args.out, analyses=analyses, cache=args.cache,
                            client=client, seed=args.seed, progress=False if args.no_progress else None)
    except ReportWriteError as err:
        parser.error(str(err))
    finally:
        if client is not None:
            client.close()
    t = report.timings["total"]
    log.info("report: %s (%d claims, %.0f s wall, %.0f s CPU)", report.html, len(report.claims), t["wall_s"],
             t["cpu_s"])
    return 0


def _has_distributed() -> bool:
    if importlib.util.find_spec("distributed") is None:
        raise ImportError("--dask needs the optional packages dask and distributed (pip install 'dask>=2024.1' "
                          "'distributed>=2024.1')")
    return True
