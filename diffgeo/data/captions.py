"""Captions for the shapes scenes, generated from their factors.

Each caption names a random subset of the factors (shape and colour usually, size, position and
background sometimes) with synonyms ("circle"/"disk", "red"/"crimson", "small"/"little") in
one of several word orders ("a small crimson disk on the left", "a square that is blue",
"green triangle, top right"). Caption dropout replaces a caption by ``""`` (the empty,
unconditional prompt) for classifier-free guidance. :func:`canonical_caption` gives one fixed
phrasing for evaluation prompts.

Words for the continuous factors cut each range into thirds: size small / (unnamed) / large;
x left / centre / right; y top / middle / bottom; background dark / mid grey / light.

>>> from diffgeo.data.shapes import sample_factors
>>> f = sample_factors(3, seed=0)
>>> caps = make_captions(f, seed=0, dropout=0.0)
>>> [parse_caption(text)["shape"] == (int(s) if named else None)       # names the true shape or none
...  for text, s, named in zip(caps.texts, f.shape, caps.named["shape"])]
[True, True, True]
>>> canonical_caption(f.replace(shape=torch.tensor([2, 0, 1]), colour=torch.tensor([0, 4, 1])))
['a red triangle', 'a blue circle', 'a yellow square']
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from diffgeo.data.shapes import COLOURS, RANGES, SHAPES, Factors

__all__ = ["SHAPE_WORDS", "COLOUR_WORDS", "Captions", "make_captions", "caption_one", "canonical_caption",
           "parse_caption"]

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disk", "disc", "round shape", "dot"),
    "square": ("square", "box", "block", "square shape"),
    "triangle": ("triangle", "triangular shape", "wedge"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "lime"),
    "cyan": ("cyan", "turquoise", "aqua"),
    "blue": ("blue", "navy", "cobalt"),
    "magenta": ("magenta", "pink", "fuchsia"),
}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
X_WORDS = {"left": ("left",), "right": ("right",)}
Y_WORDS = {"top": ("top", "upper"), "bottom": ("bottom", "lower")}
BACKGROUND_WORDS = {"dark": ("on a dark background", "on black", "against a dark backdrop"),
                    "light": ("on a light background", "on pale grey", "against a bright backdrop")}
# Probability that a caption names each factor (at least one factor is always named).
NAME_PROB = {"shape": 0.85, "colour": 0.85, "size": 0.35, "position": 0.35, "background": 0.2}


def _third(value: float, name: str) -> int:
    lo, hi = RANGES[name]
    return min(2, max(0, int(3 * (value - lo) / (hi - lo))))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _position(x: float, y: float, rng: random.Random) -> str | None:
    hx = ("left", None, "right")[_third(x, "x")]
    vy = ("top", None, "bottom")[_third(y, "y")]
    if hx is None and vy is None:
        return rng.choice(("in the centre", "in the middle"))
    if hx and vy:
        v = rng.choice(Y_WORDS[vy])
        return rng.choice((f"at the {v} {hx}", f"in the {v} {hx} corner", f"{v} {hx}"))
    if hx:
        return rng.choice((f"on the {hx}", f"at the {hx}", f"to the {hx}"))
    return rng.choice((f"at the {vy}", f"near the {vy}"))


def caption_one(shape: int, colour: int, size: float, x: float, y: float, background: float,
                rng: random.Random) -> tuple[str, dict[str, bool]]:
    """One random caption of one scene and which factors it names.

    >>> text, named = caption_one(0, 0, 0.3, 0.5, 0.5, 0.0, random.Random(0))
    >>> parse_caption(text)["shape"] in (0, None), sorted(named) == sorted(NAME_PROB)
    (True, True)
    """
    named = {k: rng.random() < p for k, p in NAME_PROB.items()}
    if not any(named.values()):
        named[rng.choice(("shape", "colour"))] = True
    size_word = ("small", None, "large")[_third(size, "size")]
    bg_word = ("dark", None, "light")[_third(background, "background")]
    named["size"] = named["size"] and size_word is not None
    named["background"] = named["background"] and bg_word is not None
    noun = rng.choice(SHAPE_WORDS[SHAPES[shape]]) if named["shape"] else rng.choice(("shape", "object", "thing"))
    col = rng.choice(COLOUR_WORDS[COLOURS[colour]]) if named["colour"] else None
    siz = rng.choice(SIZE_WORDS[size_word]) if named["size"] else None
    pos = _position(x, y, rng) if named["position"] else None
    bg = rng.choice(BACKGROUND_WORDS[bg_word]) if named["background"] else None
    adjectives = " ".join(w for w in (siz, col) if w)
    form = rng.randrange(5)
    if form == 1 and col:  # "a square that is blue"
        head = " ".join(w for w in (siz, noun) if w)
        text = f"{_article(head)} {head} that is {col}"
    elif form == 2 and (col or siz):  # "green triangle, top right"
        text = f"{adjectives} {noun}"
    elif form == 3:  # "there is a red circle"
        head = " ".join(w for w in (adjectives, noun) if w)
        text = f"there is {_article(head)} {head}"
    else:  # "a small crimson disk on the left"
        head = " ".join(w for w in (adjectives, noun) if w)
        text = f"{_article(head)} {head}"
    tail = [w for w in (pos, bg) if w]
    rng.shuffle(tail)
    if tail:
        text = text + (", " if form == 2 else " ") + " ".join(tail)
    return text, named


@dataclass(frozen=True)
class Captions:
    """N captions with the factors each one names.

    texts: N strings (``""`` for dropped captions); named: factor -> (N,) bool, for
    ``shape``, ``colour``, ``size``, ``position``, ``background``.
    """

    texts: list[str]
    named: dict[str, torch.Tensor]


def make_captions(factors: Factors, *, seed: int = 0, dropout: float = 0.0) -> Captions:
    """Random captions of the scenes with these factors; a ``dropout`` fraction become ``""``.

    Deterministic from ``seed``.

    >>> from diffgeo.data.shapes import sample_factors
    >>> f = sample_factors(4, seed=0)
    >>> make_captions(f, seed=1).texts == make_captions(f, seed=1).texts, len(make_captions(f).named["shape"])
    (True, 4)
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    rng = random.Random(seed)
    texts, named = [], {k: [] for k in NAME_PROB}
    for i in range(len(factors)):
        text, which = caption_one(int(factors.shape[i]), int(factors.colour[i]), float(factors.size[i]),
                                  float(factors.x[i]), float(factors.y[i]), float(factors.background[i]), rng)
        if rng.random() < dropout:
            text, which = "", {k: False for k in which}
        texts.append(text)
        for k in named:
            named[k].append(which[k])
    return Captions(texts, {k: torch.tensor(v, dtype=torch.bool) for k, v in named.items()})


def canonical_caption(factors: Factors) -> list[str]:
    """One fixed phrasing per scene naming its colour and shape, e.g. ``"a red circle"``, for
    evaluation prompts.

    >>> from diffgeo.data.shapes import sample_factors
    >>> f = sample_factors(1, seed=0)
    >>> canonical_caption(f.replace(shape=torch.tensor([1]), colour=torch.tensor([4])))
    ['a blue square']
    """
    out = []
    for i in range(len(factors)):
        colour = COLOURS[int(factors.colour[i])]
        out.append(f"{_article(colour)} {colour} {SHAPES[int(factors.shape[i])]}")
    return out


def parse_caption(text: str) -> dict[str, int | None]:
    """The shape and colour class a caption names (None where it names none), from the word lists.

    >>> parse_caption("a small crimson disk on the left")
    {'shape': 0, 'colour': 0}
    """
    low = f" {text.lower()} "
    found: dict[str, int | None] = {"shape": None, "colour": None}
    for key, table, classes in (("shape", SHAPE_WORDS, SHAPES), ("colour", COLOUR_WORDS, COLOURS)):
        for cls, words in table.items():
            if any(f" {w} " in low or f" {w}," in low for w in words):
                found[key] = classes.index(cls)
    return found
