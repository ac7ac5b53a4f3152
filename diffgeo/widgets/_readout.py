"""What a reader says about generated images, as short captions for the dashboards.

The shapes models are read by the attribute probe (:mod:`diffgeo.probe`): shape, colour and size,
and a red frame on images the probe cannot re-render (invalid). Other models get no captions.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["readout"]


def _reads_shapes(model: Any) -> bool:
    try:
        from ..zoo import entry

        return entry(model).reader == "shapes" or (entry(model).name == "generic" and _shapes_like(model))
    except ImportError:  # registry not there yet
        return _shapes_like(model)


def _shapes_like(model: Any) -> bool:
    return str(getattr(model, "name", "")).startswith("shapes") and tuple(getattr(model, "x_shape", ())) == (3, 32, 32)


def readout(model: Any, images: torch.Tensor) -> tuple[list[str] | None, list[bool] | None]:
    """Captions (one per image) and invalid-marks for images (N, C, H, W) in [-1, 1], or
    ``(None, None)`` when no reader knows the model.

    >>> import diffgeo
    >>> from diffgeo.data.shapes import make_scenes
    >>> captions, marks = readout(diffgeo.load("shapes"), make_scenes(2, seed=5).images)
    >>> len(captions), marks
    (2, [False, False])
    """
    if not _reads_shapes(model):
        return None, None
    from ..data.shapes import COLOURS, SHAPES
    from ..probe import validity

    v = validity(images)
    f = v.factors
    captions = [f"{COLOURS[int(c)]} {SHAPES[int(s)]} {float(z):.1f}" for s, c, z in zip(f.shape, f.colour, f.size)]
    return captions, (~v.valid).tolist()
