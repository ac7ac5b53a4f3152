"""The reader interface: the :class:`Reader` protocol and the image check every reader makes.

>>> import torch
>>> from diffgeo.readers import get_reader
>>> check_images(get_reader("digits"), torch.zeros(2, 1, 16, 16)).shape
torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable

import torch

__all__ = ["Reader", "check_images"]


@runtime_checkable
class Reader(Protocol):
    """Images (N, *image_shape) in [-1, 1] -> {factor: (N,) int64} (+ ``"valid"``: (N,) bool)."""

    name: str
    classes: Mapping[str, Sequence[str]]
    image_shape: tuple[int, ...]
    accuracy: float | None

    def read(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        ...


def check_images(reader: Reader, images: torch.Tensor) -> torch.Tensor:
    """Images (N, *reader.image_shape) as float32 on the CPU, or a ValueError naming the shape.

    >>> from diffgeo.readers import get_reader
    >>> check_images(get_reader("digits"), torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != reader.image_shape:
        raise ValueError(f"the {reader.name} reader takes images (N, {', '.join(map(str, reader.image_shape))}) in "
                         f"[-1, 1], got {getattr(images, 'shape', type(images).__name__)}")
    return images.detach().float().cpu()
