"""The command line: ``python -m diffgeo VERB [options]`` or the ``diffgeo`` console script.

Each verb is a ``main(argv)`` in its module (:data:`VERBS`); ``diffgeo VERB --help`` shows its
options. A new verb is one line in the table.

>>> main(["models"])
digits
shapes
shapes-text
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .checks import ArgumentParser, run_main

__all__ = ["VERBS", "main"]

#: verb -> ("module:function" taking argv, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "tour": ("diffgeo.tour:main", "samples, h statistics and prompt grids as figures"),
    "train": ("diffgeo.train:main", "train (or resume) an embedded model from its recipe in diffgeo.zoo"),
    "probe": ("diffgeo.probe:main", "train and ship the shapes attribute probe"),
    "evaluate": ("diffgeo.evaluate:main", "sample quality of a shapes model, read by the probe"),
    "alignment": ("diffgeo.alignment:main", "prompt grid and text-alignment sweep of an embedded text model"),
    "report": ("diffgeo.report:main", "measure each claim of the papers and write figures/report.html (what `make demo` runs)"),
    "edit": ("diffgeo.editing:main", "t_edit/t_boost by Asyrp's rule, the inversion round-trip error, or the edit property table"),
    "learn-direction": ("diffgeo.learned_direction:main", "train Asyrp's f_t(h, t) edit direction against the attribute probe (resumable)"),
    "transfer": ("diffgeo.transfer:main", "carry an x-space edit from one sample to others by parallel transport and read how consistent it is"),
    "models": ("diffgeo.cli:list_models_main", "list the embedded models"),
}


def list_models_main(argv: list[str] | None = None) -> None:
    """``diffgeo models``: the embedded model names, one per line (standard output)."""
    argparse.ArgumentParser(prog="diffgeo models", description="List the embedded models.").parse_args(argv)
    from .loading import list_models

    sys.stdout.write("".join(f"{name}\n" for name in list_models()))


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="diffgeo", description="diffgeo: looking inside diffusion models.",
                                     epilog="`diffgeo VERB --help` shows the options of a verb; "
                                            "`python -m diffgeo VERB` is the same.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, (_target, text) in VERBS.items():
        sub.add_parser(verb, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run ``diffgeo VERB [options]``: the verb's ``main`` gets the options that follow it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv or argv[0].startswith("-"):
        parser.parse_args(argv)  # --help, or the error that names the missing verb
        return
    verb = argv[0]
    if verb not in VERBS:
        parser.error(f"unknown verb {verb!r}: choose from {', '.join(VERBS)}")
    module, func = VERBS[verb][0].split(":")
    # a documented error (bad argument, model or file) is one line ``error: ...`` and exit status 2
    run_main(lambda: getattr(importlib.import_module(module), func)(argv[1:]))
