"""One progress switch for the whole package: tqdm bars, on by default, off with ``set_progress(False)``.

Every function that shows a bar takes ``progress: bool | None = None``: None follows the switch,
True or False overrides it for that call.

>>> set_progress(False)
>>> bar = progress_bar(range(3), desc="quiet")
>>> (bar.disable, sum(bar))
(True, 3)
>>> progress_bar(range(3), progress=True, desc="shown anyway").disable
False
>>> set_progress(True)
"""

from __future__ import annotations

from typing import Any, Iterable

from tqdm.auto import tqdm

__all__ = ["set_progress", "progress_enabled", "progress_bar"]

_enabled = True


def set_progress(enabled: bool) -> None:
    """Turn every diffgeo progress bar on or off (calls that pass ``progress=`` keep their own choice).

    >>> set_progress(False); progress_enabled()
    False
    >>> set_progress(True); progress_enabled()
    True
    """
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"set_progress takes True or False, got {enabled!r}")
    _enabled = enabled


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether a bar shows: ``progress`` when given, else the package switch.

    >>> progress_enabled(False), progress_enabled(True)
    (False, True)
    """
    if progress is None:
        return _enabled
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None (the package switch), got {progress!r}")
    return progress


def progress_bar(iterable: Iterable | None = None, *, progress: bool | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar (``tqdm.auto``: a widget in notebooks) that honours :func:`set_progress`.

    ``kwargs`` go to tqdm (``desc``, ``total``, ``leave``, ``initial``).

    >>> list(progress_bar(range(3), progress=False, desc="steps"))
    [0, 1, 2]
    """
    return tqdm(iterable, disable=not progress_enabled(progress), **kwargs)
