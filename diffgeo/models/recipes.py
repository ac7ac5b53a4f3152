"""The embedded models' training recipes, as plain data: one :class:`Recipe` per model.

:mod:`diffgeo.models.zoo` names each model's recipe; :mod:`diffgeo.training` runs it.

>>> SHAPES.unet["block_out_channels"], DIGITS.unet["sample_size"], SHAPES_TEXT.caption_dropout
((32, 64, 128), 16, 0.1)
"""

from __future__ import annotations

from dataclasses import dataclass

from diffgeo.data import shapes

__all__ = ["Recipe", "SHAPES", "SHAPES_TEXT", "DIGITS"]


@dataclass(frozen=True)
class Recipe:
    """Everything that defines one embedded model's training."""

    unet: dict
    scheduler: dict
    steps: int
    batch_size: int
    lr: float
    warmup: int
    ema_decay: float
    dataset: str
    factors: dict
    conditional: bool = False  # UNet2DConditionModel on caption embeddings
    text_max_length: int = 0  # tokens per caption, special tokens included
    caption_dropout: float = 0.0  # fraction of captions replaced by "" (the unconditional branch)


SHAPES = Recipe(
    unet=dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        attention_head_dim=32,
        norm_num_groups=16,
    ),
    # Sampling clips the predicted x0 to the data range [-1, 1], as google/ddpm-* pixel models do:
    # measured at 3,400 steps, 88% of samples valid with clipping against 4% without.
    scheduler=dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                   prediction_type="epsilon", clip_sample=True),
    steps=6000,
    batch_size=64,
    lr=3e-4,
    warmup=200,
    ema_decay=0.999,
    dataset="diffgeo.data.shapes (procedural, fresh scenes every step)",
    factors={
        "shape": list(shapes.SHAPES),
        "colour": list(shapes.COLOURS),
        **{k: list(v) for k, v in shapes.RANGES.items()},
    },
)


def _text_unet(sample_size: int, channels: int, blocks: tuple[int, ...], cross_levels: int) -> dict:
    """A small UNet2DConditionModel with cross-attention on the ``cross_levels`` lowest resolutions
    and in the mid block (cross-attention at 16x16 costs more than the rest of the net on a CPU)."""
    n = len(blocks)
    down = tuple("CrossAttnDownBlock2D" if i >= n - cross_levels else "DownBlock2D" for i in range(n))
    up = tuple("CrossAttnUpBlock2D" if i < cross_levels else "UpBlock2D" for i in range(n))
    return dict(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=1,
        block_out_channels=blocks,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=384,  # MiniLM-L6 token embeddings
        attention_head_dim=4,  # diffusers' name for the number of heads here
        norm_num_groups=16,
    )


SHAPES_TEXT = Recipe(
    unet=_text_unet(32, 3, (32, 64, 128), cross_levels=1),  # h: 128x8x8, as for shapes
    scheduler=SHAPES.scheduler,
    steps=3000,  # measured 1.8-1.9 s per step on one core next to other work: about 95 min
    batch_size=64,
    lr=3e-4,
    warmup=200,
    ema_decay=0.999,
    dataset="diffgeo.data.shapes scenes with diffgeo.data.captions (procedural, fresh every step)",
    factors=SHAPES.factors,
    conditional=True,
    text_max_length=24,
    caption_dropout=0.1,
)


DIGITS = Recipe(
    unet=_text_unet(16, 1, (32, 64, 64), cross_levels=2),  # h: 64x4x4
    # Sampling clips the predicted x0 to the data range [-1, 1] (see the shapes recipe).
    scheduler=dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                   prediction_type="epsilon", clip_sample=True),
    steps=3000,  # measured 0.54 s CPU per step on one core: about 27 min
    batch_size=64,
    lr=3e-4,
    warmup=200,
    ema_decay=0.999,
    dataset="scikit-learn load_digits (UCI handwritten digits, 1797 real 8x8 images), bilinear to 16x16",
    factors={"digit": list(range(10))},
    conditional=True,
    text_max_length=12,
    caption_dropout=0.1,
)
