"""The ``diffgeo probe`` command."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from diffgeo.cli._args import ArgumentParser, check_output_file, non_negative_int, positive_int, preflight
from diffgeo.core.io import result_path, save_tensors_json
from diffgeo.readers.probe import PROBE_PATH, evaluate_probe, load_probe, log, train_probe


def main(argv: list[str] | None = None) -> int:
    """``diffgeo probe``: train, evaluate and save the shapes attribute probe.

    >>> main(["--steps", "many"])   # refused before training: --steps is an integer
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    parser = ArgumentParser(prog="diffgeo probe", description="Train and ship the shapes probe.")
    parser.add_argument("--steps", type=positive_int, default=2000)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--out", type=Path, default=PROBE_PATH)
    args = parser.parse_args(argv)
    preflight(parser, lambda: check_output_file(result_path(args.out)))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.time()
    probe = train_probe(steps=args.steps, seed=args.seed)
    wall = time.time() - t0
    metrics = evaluate_probe(probe)
    save_tensors_json(args.out, probe.state_dict(), {
        "kind": "ShapesProbe", "command": f"python -m diffgeo probe --steps {args.steps} --seed {args.seed}",
        "steps": args.steps, "wall_seconds": round(wall, 1), "held_out": metrics})
    load_probe.cache_clear()
    log.info("probe saved to %s: %s", args.out, metrics)
    return 0
