"""What every verb shares: one parser kind, integer argument types, and the error boundary.

>>> parser = ArgumentParser(prog="diffgeo demo")
>>> _ = parser.add_argument("--n", type=positive_int)
>>> parser.parse_args(["--n", "3"]).n
3
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

__all__ = ["ArgumentParser", "positive_int", "non_negative_int", "run_main"]


# -- command-line arguments ------------------------------------------------------------------------------
class ArgumentParser(argparse.ArgumentParser):
    """argparse with one line on a bad argument: ``error: ...`` on standard error, exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _cli_int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


#: argparse ``type=`` for counts (>= 1) and seeds (>= 0).
positive_int = _cli_int(1)
non_negative_int = _cli_int(0)



def run_main(fn: Callable[[], Any]) -> Any:
    """Run a command-line verb: a documented error (TypeError, ValueError, OSError) becomes one line
    ``error: ...`` on standard error and exit status 2, instead of a traceback.

    >>> run_main(lambda: 7)
    7
    >>> run_main(lambda: int("seven"))   # "error: invalid literal ..." on standard error, no traceback
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    try:
        return fn()
    except (TypeError, ValueError, OSError) as err:
        if os.environ.get("DIFFGEO_TRACEBACK"):
            raise
        sys.stderr.write(f"error: {err}\n")
        raise SystemExit(2) from None
