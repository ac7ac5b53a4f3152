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
# Real images of the training distribution: (n, seed) -> images (n, C, H, W) in [-1, 1].
RealImages = Callable[[int, int], torch.Tensor]


@dataclass(frozen=True)
class Entry:
    """What diffgeo knows about one model.

    name: the registry key (the embedded folder's name); guidance: the default guidance scale of
    generation; prompts: () -> the default rows of a prompt grid (None: the model takes no
    prompts); task: the alignment task its samples are scored on (``"digits"`` or
    ``"shapes-text"``, see :mod:`diffgeo.evaluation.alignment`), or None; reader: the name of the reader
    in :mod:`diffgeo.readers` that reads its images, or None; alignment_n: samples per guidance
    scale of its alignment measurement; recipe: the training recipe
    (:class:`diffgeo.models.recipes.Recipe`), or None; data: the training batches (see ``Batch``);
    analysis_prompts: the prompts the report's text analysis compares (5a; the first is also the
    prompt of 5b), or None for the generic ones; real_images: ``(n, seed) -> (n, C, H, W)`` images
    in [-1, 1] from the model's training distribution (the report's data complexity, a real-image
    reference for the editing code), or None when unknown; clipped_eps: the default of
    ``use_clipped_model_output`` for a scheduler that clips x0 (True: eps recomputed from the
    clipped x0, so that inversion then sampling round-trips; False: diffusers' default, the raw eps).

    >>> entry("digits").real_images(2, 0).shape, entry("shapes-text").analysis_prompts[0]
    (torch.Size([2, 1, 16, 16]), 'a red circle')
    """

    name: str
    guidance: float = 1.0
    prompts: Callable[[], list[str]] | None = None
    task: str | None = None
    reader: str | None = None
    alignment_n: int = 256
    recipe: Recipe | None = None
    data: Batch | None = None
    analysis_prompts: tuple[str, ...] | None = None
    real_images: RealImages | None = None
    clipped_eps: bool = False


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


# -- real images of the training distribution ----------------------------------------------------
def _shapes_images(n: int, seed: int) -> torch.Tensor:
    """n scenes drawn from the shapes generator with ``seed``.

    >>> _shapes_images(2, 0).shape
    torch.Size([2, 3, 32, 32])
    """
    return make_scenes(n, seed=seed).images


def _digits_images(n: int, seed: int) -> torch.Tensor:
    """n digits of the training set: the ``seed``-th block of n in dataset order (seed 0: the first n),
    wrapping round the 1,797 images.

    >>> torch.equal(_digits_images(3, 0), load_digits_images().images[:3])
    True
    """
    images = load_digits_images().images
    return images[(seed * n + torch.arange(n)) % len(images)]


# -- default prompts ----------------------------------------------------------------------------
def _digit_rows() -> list[str]:

    return [canonical_digit_caption(d) for d in range(10)]


def _shapes_rows() -> list[str]:

    return shapes_prompts(len(SHAPES) * len(COLOURS)).prompts


# Guidance scales: chosen from each model's alignment sweep (``python -m diffgeo alignment NAME``;
# the measured numbers are in figures/NAME_alignment.json and the README).
# Analysis prompts: similar and dissimilar pairs on purpose (analysis 5a ranks their distances).
ENTRIES: dict[str, Entry] = {
    "shapes": Entry("shapes", reader="shapes", recipe=recipes.SHAPES, data=_shapes_batch, real_images=_shapes_images,
                    clipped_eps=True),
    "shapes-text": Entry("shapes-text", guidance=1.5, prompts=_shapes_rows, task="shapes-text", reader="shapes",
                         alignment_n=256, recipe=recipes.SHAPES_TEXT, data=_shapes_text_batch,
                         analysis_prompts=("a red circle", "a crimson circle", "a red disk", "a blue circle",
                                           "a blue square", "a green triangle", "a small red circle on the left",
                                           "a yellow square", "a cyan triangle", "a magenta square",
                                           "a large blue circle", "a green square"),
                         real_images=_shapes_images, clipped_eps=True),
    "digits": Entry("digits", guidance=2.0, prompts=_digit_rows, task="digits", reader="digits", alignment_n=500,
                    recipe=recipes.DIGITS, data=_digits_batch,
                    analysis_prompts=("a handwritten 3", "the digit 3", "the number three", "a handwritten 8",
                                      "the digit 8", "a handwritten 1", "the number one", "a handwritten 7",
                                      "the digit 0", "a handwritten 5", "the number five", "a 9"),
                    real_images=_digits_images, clipped_eps=True),
}
#: The entry of a model diffgeo does not know (generic analysis prompts: the report compares
#: whatever a text model it does not know makes of these).
GENERIC = Entry("generic", analysis_prompts=(
    "a photo of a cat", "a photograph of a cat", "a photo of a dog", "a red car", "a blue car",
    "a landscape with mountains", "a portrait of a woman", "a bowl of fruit", "a city at night",
    "a painting of a ship", "a close-up of a flower", "a bird on a branch"))


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
