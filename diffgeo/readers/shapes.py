"""The shapes reader: the attribute probe (:mod:`diffgeo.probe`) reads shape and colour, and an
image is valid when re-rendering the factors it reads reproduces it (:func:`diffgeo.probe.validity`).

>>> from diffgeo.data.shapes import make_scenes
>>> scenes = make_scenes(32, seed=5)
>>> read = shapes_reader().read(scenes.images)
>>> bool((read["shape"] == scenes.factors.shape).float().mean() > 0.9), read["valid"].dtype
(True, torch.bool)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from ..data.shapes import COLOURS, RESOLUTION, SHAPES
from . import check_images

__all__ = ["ShapesReader", "shapes_reader"]


@dataclass(frozen=True)
class ShapesReader:
    """Reads ``shape`` and ``colour`` (class indices into SHAPES / COLOURS) and ``valid``."""

    probe: torch.nn.Module
    name: str = "shapes"
    classes: dict = field(default_factory=lambda: {"shape": SHAPES, "colour": COLOURS})
    image_shape: tuple[int, ...] = (3, RESOLUTION, RESOLUTION)
    accuracy: float | None = None

    def read(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"shape", "colour": (N,) int64, "valid": (N,) bool} of images (N, 3, 32, 32) in [-1, 1]."""
        from ..probe import validity

        val = validity(check_images(self, images), probe=self.probe)
        return {"shape": val.factors.shape, "colour": val.factors.colour, "valid": val.valid}


@lru_cache(maxsize=1)
def shapes_reader() -> ShapesReader:
    """The reader around the shipped probe (cached).

    >>> shapes_reader() is shapes_reader(), shapes_reader().image_shape
    (True, (3, 32, 32))
    """
    from ..probe import load_probe

    return ShapesReader(load_probe())
