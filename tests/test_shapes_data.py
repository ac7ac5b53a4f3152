"""The procedural shapes data: determinism, factor ranges, and rendering against geometry."""

from __future__ import annotations

import math

import pytest
import torch

from diffgeo.data import shapes
from diffgeo.data.shapes import COLOUR_RGB, RANGES, make_scenes, render, sample_factors


def test_deterministic_from_seed():
    a, b, c = make_scenes(16, seed=5), make_scenes(16, seed=5), make_scenes(16, seed=6)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_factors_cover_their_ranges_uniformly():
    # n=20000: the 95% half-width of a class frequency is 1.96 sqrt(p(1-p)/n) = 0.0065 (p=1/3) and
    # 0.0052 (p=1/6), of a mean 1.96 (hi-lo)/sqrt(12 n) = 0.004 (hi-lo); the bounds are 3-5x those.
    f = sample_factors(20000, seed=0)
    assert torch.bincount(f.shape, minlength=3).float().div(20000).sub(1 / 3).abs().max() < 0.02
    assert torch.bincount(f.colour, minlength=6).float().div(20000).sub(1 / 6).abs().max() < 0.02
    for name, (lo, hi) in RANGES.items():
        v = getattr(f, name)
        assert lo <= v.min() and v.max() <= hi
        assert abs(v.mean().item() - (lo + hi) / 2) < 0.02 * (hi - lo)


@pytest.mark.parametrize("name, area, perimeter", [
    ("circle", lambda r: math.pi * r * r, lambda r: 2 * math.pi * r),
    ("square", lambda r: (1.7 * r) ** 2, lambda r: 4 * 1.7 * r),
    ("triangle", lambda r: 3 * math.sqrt(3) / 4 * (1.15 * r) ** 2, lambda r: 3 * math.sqrt(3) * 1.15 * r),
])
def test_covered_area_matches_geometry(name, area, perimeter):
    # The class named `name` draws that figure. 4x4 supersampling: the area error is at most half a
    # sub-pixel (1/8 px) along the perimeter.
    shape = shapes.SHAPES.index(name)
    f = sample_factors(50, seed=1)
    f = f.replace(shape=torch.full((50,), shape), colour=torch.zeros(50, dtype=torch.long),
                  background=torch.full((50,), -1.0))
    img = render(f)
    covered = (img[:, 0] + 1) / 2  # red channel: 0 on background, 1 inside
    for i in range(50):
        r = f.size[i].item()
        assert abs(covered[i].sum().item() - area(r)) <= perimeter(r) / 8


def test_pixels_show_background_and_colour():
    f = sample_factors(30, seed=2)
    img = render(f)
    assert torch.allclose(img[:, :, 0, 0], f.background[:, None].expand(-1, 3))  # corners are background
    cx, cy = f.x.long(), f.y.long()
    centre = img[torch.arange(30), :, cy, cx]
    assert torch.allclose(centre, COLOUR_RGB[f.colour], atol=1e-6)  # centres are the object's colour


def test_moving_x_moves_the_object():
    f = sample_factors(1, seed=3).replace(x=torch.tensor([12.0]))
    g = f.replace(x=torch.tensor([18.0]))
    a, b = render(f), render(g)
    assert torch.allclose(torch.roll(a, 6, dims=3), b, atol=1e-5)


def test_colour_names_are_their_additive_primaries():
    # red, green, blue and their pairwise sums; the captions use these names for these colours
    primaries = {"red": {0}, "yellow": {0, 1}, "green": {1}, "cyan": {1, 2}, "blue": {2}, "magenta": {0, 2}}
    assert len(shapes.COLOURS) == len(COLOUR_RGB) == len(primaries)
    for i, name in enumerate(shapes.COLOURS):
        expected = torch.tensor([1.0 if c in primaries[name] else -1.0 for c in range(3)])
        assert torch.equal(COLOUR_RGB[i], expected), name


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 1"):
        sample_factors(0)
    with pytest.raises(ValueError, match="unknown factors"):
        sample_factors(2).replace(hue=torch.zeros(2))

