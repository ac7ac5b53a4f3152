"""Readers of generated images, behind one interface.

A reader turns images into the factors a prompt can name: ``reader.read(images)`` takes images
(N, C, H, W) in [-1, 1] and returns ``{factor: (N,) int64 class indices}``, plus ``"valid"``
((N,) bool) when the reader can tell a clean image of its data set from a failed one.
``reader.classes`` names the classes of each factor, ``reader.image_shape`` is the (C, H, W) it
reads and ``reader.accuracy`` its own held-out accuracy (None where not measured).

Readers: ``"shapes"`` (the attribute probe of :mod:`diffgeo.readers.probe`: shape and colour, and
validity by re-rendering) and ``"digits"`` (a classifier of the real UCI digits,
:mod:`diffgeo.readers.digits`). Each model's reader is named in :mod:`diffgeo.models.zoo`. Another reader
(e.g. CLIP zero-shot over the class names, for models without a synthetic data set) registers
with one line in :data:`READERS`.

>>> reader = get_reader("digits")
>>> from diffgeo.data.digits import load_digits_images
>>> d = load_digits_images()
>>> read = reader.read(d.images[:50])
>>> sorted(read), float((read["digit"] == d.labels[:50]).float().mean()) > 0.9
(['digit'], True)
"""

from __future__ import annotations

from typing import Callable


from diffgeo.readers.base import Reader, check_images
from diffgeo.readers.digits import digit_classifier
from diffgeo.readers.shapes import shapes_reader

__all__ = ["Reader", "READERS", "get_reader", "check_images"]


def _shapes() -> Reader:

    return shapes_reader()


def _digits() -> Reader:

    return digit_classifier()


#: name -> a function returning the (cached) reader.
READERS: dict[str, Callable[[], Reader]] = {"shapes": _shapes, "digits": _digits}


def get_reader(name: str) -> Reader:
    """The reader registered under ``name`` (see :data:`READERS`).

    >>> get_reader("shapes").classes["shape"]
    ('circle', 'square', 'triangle')
    """
    if name not in READERS:
        raise ValueError(f"unknown reader {name!r}: known readers are {', '.join(sorted(READERS))}")
    return READERS[name]()
