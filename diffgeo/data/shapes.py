"""Procedural 32x32 RGB scenes with known factors: one shape on a grey background.

Factors (all drawn independently, uniformly):

====================  ==========================================  =====================
factor                values                                      kind
====================  ==========================================  =====================
``shape``             0 circle, 1 square, 2 triangle              class (3)
``colour``            0 red, 1 yellow, 2 green, 3 cyan, 4 blue,   class (6)
                      5 magenta
``size``              half-extent in pixels, [5, 9]               continuous
``x``, ``y``          centre in pixels, [11, 21] (y grows down)   continuous
``background``        grey level in [-0.8, 0.2]                   continuous
====================  ==========================================  =====================

Images are in [-1, 1], shape (N, 3, 32, 32), anti-aliased by 4x4 supersampling, so every
continuous factor moves pixels smoothly. Everything is deterministic from a seed.

>>> scenes = make_scenes(4, seed=0)
>>> scenes.images.shape, scenes.images.min() >= -1, scenes.images.max() <= 1
(torch.Size([4, 3, 32, 32]), tensor(True), tensor(True))
>>> torch.equal(render(scenes.factors), scenes.images)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "SHAPES",
    "COLOURS",
    "COLOUR_RGB",
    "CONTINUOUS",
    "RANGES",
    "RESOLUTION",
    "Factors",
    "Scenes",
    "sample_factors",
    "render",
    "make_scenes",
]

RESOLUTION = 32
SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "yellow", "green", "cyan", "blue", "magenta")
COLOUR_RGB = torch.tensor(
    [
        [1.0, -1.0, -1.0],
        [1.0, 1.0, -1.0],
        [-1.0, 1.0, -1.0],
        [-1.0, 1.0, 1.0],
        [-1.0, -1.0, 1.0],
        [1.0, -1.0, 1.0],
    ]
)
CONTINUOUS = ("size", "x", "y", "background")
RANGES = {"size": (5.0, 9.0), "x": (11.0, 21.0), "y": (11.0, 21.0), "background": (-0.8, 0.2)}
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Factors:
    """Ground-truth factors of N scenes.

    shape, colour: (N,) int64 class indices; size, x, y, background: (N,) float32.
    """

    shape: torch.Tensor
    colour: torch.Tensor
    size: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor
    background: torch.Tensor

    def __len__(self) -> int:
        return int(self.shape.shape[0])

    def __getitem__(self, idx) -> "Factors":
        return Factors(**{k: v[idx] for k, v in self.as_dict().items()})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "x": self.x,
            "y": self.y,
            "background": self.background,
        }

    def replace(self, **changes: torch.Tensor) -> "Factors":
        """A copy with some factors replaced (used to make controlled edits)."""
        values = self.as_dict()
        unknown = set(changes) - set(values)
        if unknown:
            raise ValueError(f"unknown factors {sorted(unknown)}; known: {sorted(values)}")
        values.update(changes)
        return Factors(**values)


@dataclass(frozen=True)
class Scenes:
    """Images (N, 3, 32, 32) in [-1, 1] with their factors."""

    images: torch.Tensor
    factors: Factors


def sample_factors(n: int, *, seed: int | None = None, generator: torch.Generator | None = None) -> Factors:
    """Draw n factor sets independently and uniformly (see the module table).

    >>> sample_factors(3, seed=1).shape.shape
    torch.Size([3])
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    g = generator if generator is not None else torch.Generator().manual_seed(0 if seed is None else seed)

    def uniform(name: str) -> torch.Tensor:
        lo, hi = RANGES[name]
        return lo + (hi - lo) * torch.rand(n, generator=g)

    return Factors(
        shape=torch.randint(len(SHAPES), (n,), generator=g),
        colour=torch.randint(len(COLOURS), (n,), generator=g),
        size=uniform("size"),
        x=uniform("x"),
        y=uniform("y"),
        background=uniform("background"),
    )


def _coverage(f: Factors) -> torch.Tensor:
    """Fraction of each pixel covered by the shape, (N, 32, 32)."""
    s = _SUPERSAMPLE
    coords = (torch.arange(RESOLUTION * s, dtype=torch.float32) + 0.5) / s  # pixel units
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dx = xx[None] - f.x.float()[:, None, None]
    dy = yy[None] - f.y.float()[:, None, None]
    r = f.size.float()[:, None, None]
    circle = dx * dx + dy * dy <= r * r
    square = torch.maximum(dx.abs(), dy.abs()) <= 0.85 * r
    # Equilateral triangle pointing up, circumradius 1.15 r, centred on (x, y).
    R = 1.15 * r
    sqrt3 = 3.0**0.5
    triangle = (dy <= R / 2) & (sqrt3 * dx - dy <= R) & (-sqrt3 * dx - dy <= R)
    shape = f.shape[:, None, None]
    inside = torch.where(shape == 0, circle, torch.where(shape == 1, square, triangle)).float()
    n = inside.shape[0]
    return inside.view(n, RESOLUTION, s, RESOLUTION, s).mean(dim=(2, 4))


def render(factors: Factors) -> torch.Tensor:
    """Render scenes from their factors: (N, 3, 32, 32) in [-1, 1].

    >>> images = render(sample_factors(2, seed=0))
    >>> images.shape, bool(images.min() >= -1 and images.max() <= 1)
    (torch.Size([2, 3, 32, 32]), True)
    """
    cov = _coverage(factors)[:, None]  # (N, 1, H, W)
    colour = COLOUR_RGB[factors.colour.long()][:, :, None, None]  # (N, 3, 1, 1)
    bg = factors.background.float()[:, None, None, None]
    return (1 - cov) * bg + cov * colour


def make_scenes(n: int, *, seed: int = 0) -> Scenes:
    """n scenes with their factors, deterministic from ``seed``.

    >>> a, b = make_scenes(2, seed=3), make_scenes(2, seed=3)
    >>> torch.equal(a.images, b.images), torch.equal(a.images, render(a.factors))
    (True, True)
    """
    factors = sample_factors(n, seed=seed)
    return Scenes(images=render(factors), factors=factors)
