"""The registry of models diffgeo knows: one :class:`Entry` per embedded model.

An entry holds what the rest of the package would otherwise look up by name: the default
guidance scale of generation (``guidance_scale=None`` anywhere means this), the default prompts
of a prompt grid, the reader that scores its samples (:mod:`diffgeo.readers`), and how it was
trained (the recipe in :mod:`diffgeo.models.recipes` and the training data). A model the registry does
not know (a local folder, a hub id) gets :data:`GENERIC`: guidance 1, no prompts, no reader, no
recipe. Training, the tour, the alignment measures and the evaluation all look models up here.

>>> import diffgeo
>>> entry("digits").guidance, entry("digits").reader, entry("digits").prompts()[:2]
(2.0, 'digits', ['a handwritten 0', 'a handwritten 1'])
>>> entry(diffgeo.load("shapes")).reader
'shapes'
>>> entry("someone/else").name, entry("someone/else").guidance
('generic', 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from diffgeo.data.captions import make_captions
from diffgeo.data.digits import canonical_digit_caption, digit_captions, load_digits_images
from diffgeo.data.prompts import shapes_prompts
from diffgeo.data.shapes import COLOURS, SHAPES, make_scenes
from diffgeo.models import recipes
from diffgeo.models.recipes import Recipe

__all__ = ["Entry", "entry", "ENTRIES", "GENERIC", "text_models"]

# Training data: (step_seed, batch_size, caption dropout) -> images (B, C, H, W) in [-1, 1] and
# their captions (None for unconditional models).
Batch = Callable[[int, int, float], "tuple[torch.Tensor, list[str] | None]"]


@dataclass(frozen=True)
class Entry:
    """What diffgeo knows about one model.

    name: the registry key (the embedded folder's name); guidance: the default guidance scale of
    generation; prompts: () -> the default rows of a prompt grid (None: the model takes no
    prompts); task: the alignment task its samples are scored on (``"digits"`` or
    ``"shapes-text"``, see :mod:`diffgeo.evaluation.alignment`), or None; reader: the name of the reader
    in :mod:`diffgeo.readers` that reads its images, or None; alignment_n: samples per guidance
    scale of its alignment measurement; recipe: the training recipe
    (:class:`diffgeo.models.recipes.Recipe`), or None; data: the training batches (see ``Batch``).
    """

    name: str
    guidance: float = 1.0
    prompts: Callable[[], list[str]] | None = None
    task: str | None = None
    reader: str | None = None
    alignment_n: int = 256
    recipe: Recipe | None = None
    data: Batch | None = None


# -- training data ------------------------------------------------------------------------------
def _shapes_batch(seed: int, batch_size: int, dropout: float) -> tuple[torch.Tensor, None]:

    return make_scenes(batch_size, seed=seed).images, None


def _shapes_text_batch(seed: int, batch_size: int, dropout: float) -> tuple[torch.Tensor, list[str]]:

    scenes = make_scenes(batch_size, seed=seed)
    return scenes.images, make_captions(scenes.factors, seed=seed, dropout=dropout).texts


def _digits_batch(seed: int, batch_size: int, dropout: float) -> tuple[torch.Tensor, list[str]]:

    data = load_digits_images()
    idx = torch.randint(len(data.labels), (batch_size,), generator=torch.Generator().manual_seed(seed))
    return data.images[idx], digit_captions(data.labels[idx], seed=seed, dropout=dropout)


# -- default prompts ----------------------------------------------------------------------------
def _digit_rows() -> list[str]:

    return [canonical_digit_caption(d) for d in range(10)]


def _shapes_rows() -> list[str]:

    return shapes_prompts(len(SHAPES) * len(COLOURS)).prompts


# Guidance scales: chosen from each model's alignment sweep (``python -m diffgeo alignment NAME``;
# the measured numbers are in figures/NAME_alignment.json and the README).
ENTRIES: dict[str, Entry] = {
    "shapes": Entry("shapes", reader="shapes", recipe=recipes.SHAPES, data=_shapes_batch),
    "shapes-text": Entry("shapes-text", guidance=1.5, prompts=_shapes_rows, task="shapes-text", reader="shapes",
                         alignment_n=256, recipe=recipes.SHAPES_TEXT, data=_shapes_text_batch),
    "digits": Entry("digits", guidance=2.0, prompts=_digit_rows, task="digits", reader="digits", alignment_n=500,
                    recipe=recipes.DIGITS, data=_digits_batch),
}
#: The entry of a model diffgeo does not know.
GENERIC = Entry("generic")


def entry(model: Any) -> Entry:
    """The registry entry of a Model or a model name (:data:`GENERIC` when unknown).

    A Model is looked up by its ``name`` (an embedded name, or the folder name of a copy of one
    that kept its ``provenance.json``: the provenance's ``name`` decides).

    >>> entry("shapes-text").guidance
    1.5
    """
    if isinstance(model, str):
        return ENTRIES.get(model, GENERIC)
    provenance = getattr(model, "provenance", None) or {}
    name = provenance.get("name", getattr(model, "name", None))
    return ENTRIES.get(name, GENERIC) if isinstance(name, str) else GENERIC


def text_models() -> list[str]:
    """Names of the registered models that take prompts.

    >>> text_models()
    ['digits', 'shapes-text']
    """
    return sorted(name for name, e in ENTRIES.items() if e.prompts is not None)
