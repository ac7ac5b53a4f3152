"""What a training step consumes: the recipes, seeded batches, cached caption embeddings and fresh U-Nets.

>>> get_recipe("shapes").conditional, "digits" in recipe_names()
(False, True)
"""

from __future__ import annotations

import torch

from diffgeo.models.recipes import Recipe
from diffgeo.models.zoo import ENTRIES

__all__ = ["recipe_names", "get_recipe"]


def recipe_names() -> list[str]:
    """The models with a training recipe in :mod:`diffgeo.models.zoo`.

    >>> recipe_names()
    ['digits', 'shapes', 'shapes-text']
    """

    return sorted(n for n, e in ENTRIES.items() if e.recipe is not None)


def get_recipe(name: str) -> Recipe:
    """The training recipe of a registered model (its entry in :mod:`diffgeo.models.zoo`).

    >>> get_recipe("digits").unet["sample_size"]
    16
    """

    if name not in recipe_names():
        raise ValueError(f"no training recipe for {name!r}: known recipes are {', '.join(recipe_names())} "
                         "(diffgeo.models.zoo)")
    return ENTRIES[name].recipe


def _batch(name: str, step: int, batch_size: int, seed: int,
           dropout: float = 0.0) -> tuple[torch.Tensor, list[str] | None]:
    """Images (B, C, H, W) in [-1, 1] and their captions (None for unconditional recipes), from the
    model's training data in :mod:`diffgeo.models.zoo`, seeded by (seed, step)."""

    return ENTRIES[name].data(seed * 1_000_003 + step, batch_size, dropout)


class _EmbeddingCache:
    """Frozen-encoder embeddings of captions, memoised (captions repeat a lot): (B, L, D) float32.

    Entries are kept in float16 (about 18 KB each at L=24) up to ``size`` captions.
    """

    def __init__(self, encoder, size: int = 16384):
        self.encoder, self.size, self.table = encoder, size, {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = sorted({c for c in captions if c not in self.table})
        fresh = dict(zip(missing, self.encoder(missing))) if missing else {}
        out = torch.stack([fresh[c] if c in fresh else self.table[c].float() for c in captions])
        if len(self.table) + len(fresh) > self.size:  # full: start over (after this batch is read)
            self.table.clear()
        self.table.update({c: e.half() for c, e in fresh.items()})
        return out


def _make_unet(recipe: Recipe):
    from diffusers import UNet2DConditionModel, UNet2DModel

    return (UNet2DConditionModel if recipe.conditional else UNet2DModel)(**recipe.unet)
