"""LOCO-style directions (diffgeo.editing.loco) against exact SVDs of linear maps, and bad masks."""

import pytest
import torch

from diffgeo.editing.loco import check_mask, loco_directions, scene_mask


def _svd_right(a: torch.Tensor, k: int) -> torch.Tensor:
    return torch.linalg.svd(a, full_matrices=False).Vh[:k]


def _same_span_up_to_sign(a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
    cos = (a * b).sum(-1).abs()
    assert cos.min() > 1 - tol, cos


def test_linear_map_matches_exact_svd_and_projection():
    g = torch.Generator().manual_seed(3)
    n = 12
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    mask = torch.zeros(3, 2, 2, dtype=torch.bool)
    mask[0] = True                       # 4 of the 12 outputs are the region to edit
    m = mask.flatten()
    k, r = 2, 3
    d = loco_directions(lambda x: (a @ x.flatten()).view(3, 2, 2), torch.zeros(3, 2, 2, dtype=torch.float64), None,
                        mask, k=k, r=r, tol=1e-10, max_iter=50)
    v_in = _svd_right(a * m[:, None].double(), k)
    w = _svd_right(a * (~m)[:, None].double(), r)
    want = v_in - (v_in @ w.T) @ w
    want = want / want.norm(dim=1, keepdim=True)
    _same_span_up_to_sign(d.v_raw.flatten(1).double(), v_in, 1e-6)
    _same_span_up_to_sign(d.v.flatten(1).double(), want, 1e-6)
    # projected directions are orthogonal to the removed out-of-mask space
    assert (d.v.flatten(1).double() @ w.T).abs().max() < 1e-6


def test_null_space_projection_removes_all_leakage_of_a_low_rank_outside():
    # outside the mask the map has rank 2, so removing its top 2 right singular vectors leaves
    # directions that change nothing outside the mask (exactly, for a linear map)
    g = torch.Generator().manual_seed(4)
    n = 10
    inside = torch.randn(4, n, generator=g, dtype=torch.float64)
    outside = torch.randn(6, 2, generator=g, dtype=torch.float64) @ torch.randn(2, n, generator=g, dtype=torch.float64)
    a = torch.cat([inside, outside])
    mask = torch.tensor([True] * 4 + [False] * 6)
    d = loco_directions(lambda x: a @ x, torch.zeros(n, dtype=torch.float64), None, mask, k=2, r=2, tol=1e-10,
                        max_iter=50)
    assert d.leakage.max() < 1e-6
    assert d.leakage_raw.max() > 1e-2           # before the projection the edit did leak
    out = (a[4:] @ d.v.T.double()).abs().max()
    assert out < 1e-6


@pytest.mark.parametrize("mask, match", [
    (torch.ones(5, 5, dtype=torch.bool), "has shape"),
    (torch.zeros(2, 2, dtype=torch.bool), "empty"),
    (torch.ones(2, 2, dtype=torch.bool), "whole image"),
    (torch.full((2, 2), 0.5), "boolean"),
])
def test_bad_masks_are_refused_before_any_work(mask, match):
    calls = []

    def fn(x):
        calls.append(1)
        return x

    with pytest.raises(ValueError, match=match):
        loco_directions(fn, torch.zeros(3, 2, 2), None, mask, k=1, r=1)
    assert not calls


def test_check_mask_broadcasts_hw_over_channels():
    m = torch.zeros(4, 4, dtype=torch.bool)
    m[1, 1] = True
    assert check_mask(m, (3, 4, 4)).sum() == 3


def test_scene_mask_covers_the_rendered_shape():
    from diffgeo.data.shapes import make_scenes, render

    s = make_scenes(4, seed=9)
    masks = scene_mask(s.images, dilate=0, fit=False)
    # the shape's pixels are those that differ from the plain background
    bg = render(s.factors.replace(size=s.factors.size * 0 + 0.01))
    shape_px = (s.images - bg).abs().amax(1) > 0.05
    assert (shape_px & ~masks).sum() <= 2 * len(s.images)     # probe errors of a pixel at the rim at most
    assert masks.float().mean() < 0.5
