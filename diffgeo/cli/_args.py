"""What every verb shares: one parser kind, strict argument types, the checks every verb makes
before any work (model names, output folders and files), and the error boundary.

A verb parses its arguments, then runs :func:`preflight` on every check that needs no model
(names, folders, files): a bad argument is one line ``error: ...`` on standard error and exit
status 2, before any model is loaded, any folder is made or any file is touched.

>>> parser = ArgumentParser(prog="diffgeo demo")
>>> _ = parser.add_argument("--n", type=positive_int)
>>> parser.parse_args(["--n", "3"]).n
3
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

from diffgeo.core.checks import check_output_folder, check_path
from diffgeo.models.loading import _check_folder, _hub_kwargs, _model_index, _resolve

__all__ = ["ArgumentParser", "positive_int", "non_negative_int", "finite_float", "positive_float",
           "non_negative_float", "run_main", "preflight", "check_model_arg", "check_output_file"]


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


def _cli_float(minimum: float | None, open_: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if minimum is not None and (value <= minimum if open_ else value < minimum):
            what = "a positive" if open_ else "a non-negative"
            raise argparse.ArgumentTypeError(f"must be {what} number, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


#: argparse ``type=`` for counts (>= 1) and seeds (>= 0).
positive_int = _cli_int(1)
non_negative_int = _cli_int(0)
#: argparse ``type=`` for real numbers: finite (NaN and inf refused), > 0, >= 0.
finite_float = _cli_float(None, False)
positive_float = _cli_float(0.0, True)
non_negative_float = _cli_float(0.0, False)


# -- checks before any work ----------------------------------------------------------------------------
def preflight(parser: argparse.ArgumentParser, *checks: Callable[[], Any]) -> list[Any]:
    """Run ``checks`` (no model, nothing written); the first TypeError, ValueError, OSError or ImportError
    becomes the
    parser's one-line error (exit status 2). Returns the checks' values.

    >>> preflight(ArgumentParser(prog="demo"), lambda: 1, lambda: "two")
    [1, 'two']
    >>> preflight(ArgumentParser(prog="demo"), lambda: int("three"))   # "error: invalid literal ..."
    Traceback (most recent call last):
    ...
    SystemExit: 2
    """
    out = []
    for check in checks:
        try:
            out.append(check())
        except (TypeError, ValueError, OSError, ImportError) as err:
            parser.error(str(err))
    return out


def check_model_arg(name: Any, flag: str = "--model") -> str:
    """A model argument :func:`diffgeo.load` can take, checked without loading: an embedded name, a
    local folder with every pipeline component (unet/, scheduler/ ...), or a hub id ``owner/name``.

    >>> check_model_arg("shapes")
    'shapes'
    >>> check_model_arg("shapse")   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --model: unknown model 'shapse': not an embedded name (known: ...
    """
    text = str(check_path(name, flag))
    try:
        source, _display, _prov, local = _resolve(text)
        if local:
            _check_folder(Path(source), _model_index(source, local))
        else:
            _hub_kwargs(source)  # a hub id not cached, with the hub offline or unreachable: say so now
    except (ValueError, OSError) as err:
        raise ValueError(f"{flag}: {err}") from None
    return str(name)


def check_output_file(path: Any, flag: str = "--out") -> Path:
    """A file a result can be written to, checked without creating anything: not a folder, and its
    folder exists as a writable folder or can be created.

    >>> import tempfile
    >>> check_output_file(tempfile.mkdtemp(), "--out")   # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --out ... is a folder; give a file name inside it
    """
    file = check_path(path, flag)
    if file.is_dir():
        raise ValueError(f"{flag} {file} is a folder; give a file name inside it")
    check_output_folder(file.parent if str(file.parent) else Path("."), f"{flag} {file}: its folder")
    return file


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
    except (TypeError, ValueError, OSError, ImportError) as err:
        if os.environ.get("DIFFGEO_TRACEBACK"):
            raise
        sys.stderr.write(f"error: {err}\n")
        raise SystemExit(2) from None
