"""Prompt sets for measuring text alignment: prompts with the factors each one names.

A :class:`PromptSet` holds n prompts, the true class of every factor they are about
(``targets``) and which prompts name which factor (``named``; a partial caption such as
"a square" names no colour). Classes are balanced over the prompts (label ``i % classes``).
:data:`TASKS` maps each alignment task of :mod:`diffgeo.models.zoo` to its prompt set.

>>> s = shapes_prompts(4)
>>> s.prompts, s.named["colour"].tolist()
(['a red circle', 'a red square', 'a red triangle', 'a yellow circle'], [True, True, True, True])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import diffgeo.data.digits as digits_data
from diffgeo.data.captions import canonical_caption, make_captions
from diffgeo.data.shapes import COLOURS, SHAPES, sample_factors

__all__ = ["PromptSet", "digit_prompts", "shapes_prompts", "task_prompts", "TASKS", "PHRASINGS"]

PHRASINGS = ("canonical", "captions")


@dataclass(frozen=True)
class PromptSet:
    """prompts: n strings; targets: factor -> (n,) int64 true classes; named: factor -> (n,) bool,
    whether each prompt names that factor."""

    prompts: list[str]
    targets: dict[str, torch.Tensor]
    named: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.prompts)


def _check(n: int, phrasing: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing must be one of {', '.join(map(repr, PHRASINGS))}, got {phrasing!r}")


def digit_prompts(n: int, *, seed: int = 0, phrasing: str = "captions") -> PromptSet:
    """n prompts balanced over the ten digits (label ``i % 10``): ``"captions"`` draws each in one
    of the training phrasings from ``seed``, ``"canonical"`` says "a handwritten d".

    >>> s = digit_prompts(3, phrasing="canonical")
    >>> s.prompts, s.targets["digit"].tolist()
    (['a handwritten 0', 'a handwritten 1', 'a handwritten 2'], [0, 1, 2])
    """
    _check(n, phrasing)
    labels = torch.arange(n) % 10
    if phrasing == "captions":
        prompts = digits_data.digit_captions(labels, seed=seed)
    else:
        prompts = [digits_data.canonical_digit_caption(d) for d in labels.tolist()]
    return PromptSet(prompts, {"digit": labels}, {"digit": torch.ones(n, dtype=torch.bool)})


def shapes_prompts(n: int, *, seed: int = 0, phrasing: str = "canonical") -> PromptSet:
    """n shapes prompts, shape and colour balanced over the 18 combinations (other factors drawn
    from ``seed``): ``"canonical"`` ("a red circle", both named) or ``"captions"`` (the training
    captions' random phrasings, which name some factors only).

    >>> s = shapes_prompts(20, phrasing="captions")
    >>> s.targets["shape"][:4].tolist(), bool(s.named["shape"].any())
    ([0, 1, 2, 0], True)
    """
    _check(n, phrasing)
    i = torch.arange(n)
    factors = sample_factors(n, seed=seed).replace(shape=i % len(SHAPES), colour=(i // len(SHAPES)) % len(COLOURS))
    targets = {"shape": factors.shape, "colour": factors.colour}
    if phrasing == "canonical":
        return PromptSet(canonical_caption(factors), targets, {k: torch.ones(n, dtype=torch.bool) for k in targets})
    caps = make_captions(factors, seed=seed, dropout=0.0)
    return PromptSet(caps.texts, targets, {k: caps.named[k] for k in targets})


#: alignment task -> (prompt set, its default phrasing)
TASKS: dict[str, tuple[Callable[..., PromptSet], str]] = {
    "digits": (digit_prompts, "captions"),
    "shapes-text": (shapes_prompts, "canonical"),
}


def task_prompts(task: str, n: int, *, seed: int = 0, phrasing: str | None = None) -> PromptSet:
    """The prompt set of an alignment task (phrasing None: the task's default).

    >>> len(task_prompts("digits", 20)), task_prompts("shapes-text", 1).prompts
    (20, ['a red circle'])
    """
    if task not in TASKS:
        raise ValueError(f"unknown alignment task {task!r}: known tasks are {', '.join(sorted(TASKS))}")
    make, default = TASKS[task]
    return make(n, seed=seed, phrasing=phrasing or default)
