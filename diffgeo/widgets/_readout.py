"""What a model's reader (:mod:`diffgeo.readers`, named by the registry :mod:`diffgeo.models.zoo`) sees
in generated images, as short captions for the dashboards: the class of each factor it reads
(shape and colour for the shapes models, the digit for ``digits``), and a red frame on images it
calls invalid. Models without a reader get no captions.
"""

from __future__ import annotations

from typing import Any

import torch

from diffgeo.models.zoo import entry
from diffgeo.readers import get_reader

__all__ = ["readout"]


def readout(model: Any, images: torch.Tensor) -> tuple[list[str] | None, list[bool] | None]:
    """Captions (one per image) and invalid-marks for images (N, C, H, W) in [-1, 1], or
    ``(None, None)`` when the model has no reader.

    ``model``: a :class:`diffgeo.Model` or a registry name.

    >>> from diffgeo.data.shapes import make_scenes
    >>> captions, marks = readout("shapes", make_scenes(2, seed=5).images)
    >>> len(captions), marks
    (2, [False, False])
    """

    name = entry(model).reader
    if name is None:
        return None, None
    reader = get_reader(name)
    read = reader.read(images.detach().float().cpu())
    factors = [f for f in reader.classes if f in read]
    captions = [" ".join(str(reader.classes[f][int(read[f][i])]) for f in reversed(factors))
                for i in range(images.shape[0])]
    marks = (~read["valid"]).tolist() if "valid" in read else None
    return captions, marks
