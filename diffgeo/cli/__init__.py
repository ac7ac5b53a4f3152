"""The command line: ``python -m diffgeo VERB [options]`` or the ``diffgeo`` console script.

One module per verb in this package, each with ``main(argv) -> int`` (0 on success) and the one
parser kind of :mod:`diffgeo.cli._args`; a verb's module is imported only when it runs, so
``diffgeo --help`` stays fast. ``diffgeo VERB --help`` shows a verb's options; a new verb is one
module and one line in :data:`VERBS`.

>>> main(["models"])
digits
shapes
shapes-text
0
"""

from __future__ import annotations

import importlib
import sys

from diffgeo.cli._args import ArgumentParser, run_main

__all__ = ["VERBS", "main"]

#: verb -> (module in diffgeo.cli, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "tour": ("tour", "samples, h statistics and prompt grids as figures"),
    "train": ("train", "train (or resume) an embedded model from its recipe in diffgeo.models.zoo"),
    "probe": ("probe", "train and ship the shapes attribute probe"),
    "evaluate": ("evaluate", "sample quality of a shapes model, read by the probe"),
    "alignment": ("alignment", "prompt grid and text-alignment sweep of an embedded text model"),
    "report": ("report", "measure each claim of the papers and write figures/report.html (what `make demo` runs)"),
    "edit": ("edit", "t_edit/t_boost by Asyrp's rule, the inversion round-trip error, or the edit property table"),
    "learn-direction": ("learn_direction", "train Asyrp's f_t(h, t) edit direction against the attribute probe "
                                           "(resumable)"),
    "transfer": ("transfer", "carry an x-space edit from one sample to others by parallel transport and read how "
                             "consistent it is"),
    "models": ("models", "list the embedded models"),
}


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="diffgeo", description="diffgeo: looking inside diffusion models.",
                            epilog="`diffgeo VERB --help` shows the options of a verb; "
                                   "`python -m diffgeo VERB` is the same.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (_module, text) in VERBS.items():
        sub.add_parser(verb, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``diffgeo VERB [options]``: the verb's ``main`` gets the options that follow it; returns
    its exit status (a documented error is one line ``error: ...`` and SystemExit(2)).

    >>> main(["models"])
    digits
    shapes
    shapes-text
    0
    >>> main(["no-such-verb"])   # one line "error: unknown verb ..." on standard error
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv or argv[0].startswith("-"):
        parser.parse_args(argv)  # --help, or the error that names the missing verb
        return 0
    verb = argv[0]
    if verb not in VERBS:
        parser.error(f"unknown verb {verb!r}: choose from {', '.join(VERBS)}")
    module = importlib.import_module(f"diffgeo.cli.{VERBS[verb][0]}")
    return int(run_main(lambda: module.main(argv[1:])) or 0)
