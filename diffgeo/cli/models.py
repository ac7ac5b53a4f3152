"""The ``diffgeo models`` command: the embedded model names, one per line."""

from __future__ import annotations

import sys

from diffgeo.cli._args import ArgumentParser
from diffgeo.models.loading import list_models


def main(argv: list[str] | None = None) -> int:
    """``diffgeo models``: the embedded model names, one per line (standard output).

    >>> main([])
    digits
    shapes
    shapes-text
    0
    """
    ArgumentParser(prog="diffgeo models", description="List the embedded models.").parse_args(argv)
    sys.stdout.write("".join(f"{name}\n" for name in list_models()))
    return 0
