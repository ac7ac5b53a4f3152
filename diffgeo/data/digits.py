"""Real handwritten digits: scikit-learn's copy of the UCI digits (1,797 images, 8x8, 16 grey levels),
upsampled to 16x16 for the embedded ``digits`` model, with captions naming the digit.

Images are (N, 1, 16, 16) in [-1, 1] (ink is +1), upsampled bilinearly (``align_corners=False``).
Captions name the digit in several phrasings ("a handwritten 3", "the number three",
"digit 3", ...), so that a frozen sentence encoder maps them near each other.

>>> d = load_digits_images()
>>> d.images.shape, d.labels.shape, float(d.images.min()), float(d.images.max())
(torch.Size([1797, 1, 16, 16]), torch.Size([1797]), -1.0, 1.0)
>>> caps = digit_captions(torch.tensor([3, 7]), seed=0)   # a random phrasing that names the digit
>>> [str(d) in c.split() or NUMBER_WORDS[d] in c.split() for d, c in zip((3, 7), caps)]
[True, True]
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["RESOLUTION", "NUMBER_WORDS", "Digits", "load_digits_images", "digit_captions", "canonical_digit_caption"]

RESOLUTION = 16
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEMPLATES = ("a handwritten {d}", "the number {w}", "the digit {d}", "a {d}", "{w}", "a handwritten {w}",
              "the numeral {d}", "digit {w}", "a hand-drawn {d}", "the number {d}")


@dataclass(frozen=True)
class Digits:
    """images: (N, 1, R, R) float32 in [-1, 1]; labels: (N,) int64 digit classes."""

    images: torch.Tensor
    labels: torch.Tensor


@lru_cache(maxsize=4)
def _raw() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None]  # (N, 1, 8, 8) in [0, 16]
    return x, torch.as_tensor(bunch.target, dtype=torch.long)


def load_digits_images(resolution: int = RESOLUTION) -> Digits:
    """All 1,797 digits at ``resolution`` 16 (bilinear upsampling, what the ``digits`` model sees) or
    8 (the originals), scaled to [-1, 1].

    >>> load_digits_images(8).images.shape
    torch.Size([1797, 1, 8, 8])
    """
    if resolution not in (8, 16):
        raise ValueError(f"resolution must be 8 or 16, got {resolution}")
    x, y = _raw()
    x = x / 8.0 - 1.0
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return Digits(images=x.clamp(-1, 1).contiguous(), labels=y.clone())


def digit_captions(labels: torch.Tensor, *, seed: int = 0, dropout: float = 0.0) -> list[str]:
    """One random phrasing per label; a ``dropout`` fraction become ``""`` (unconditional).

    >>> len(digit_captions(torch.arange(10), seed=1)), digit_captions(torch.tensor([5]), dropout=0.0) != [""]
    (10, True)
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    rng = random.Random(seed)
    out = []
    for lab in labels.tolist():
        text = rng.choice(_TEMPLATES).format(d=lab, w=NUMBER_WORDS[lab])
        out.append("" if rng.random() < dropout else text)
    return out


def canonical_digit_caption(label: int) -> str:
    """The evaluation prompt for a digit, e.g. ``"a handwritten 3"``.

    >>> canonical_digit_caption(3)
    'a handwritten 3'
    """
    return f"a handwritten {int(label)}"
