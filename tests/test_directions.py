"""Directions: arithmetic, save/load, model checks, and each source against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffgeo
import diffgeo.editing.directions as directions
from diffgeo.editing.directions import Direction
from diffgeo.data import shapes


def _d(vecs, ts=(-1,), model="shapes", space="h"):
    return Direction(vecs, torch.tensor(ts), space, model)


def test_arithmetic_and_nearest_timestep():
    g = torch.Generator().manual_seed(0)
    a = _d(torch.randn(2, 4, 2, 2, generator=g), ts=(100, 500))
    c = _d(torch.randn(1, 4, 2, 2, generator=g))
    s = 2.0 * a - c
    assert torch.allclose(s.at(120), 2 * a.vectors[0] - c.vectors[0])
    assert torch.allclose(s.at(480), 2 * a.vectors[1] - c.vectors[0])
    assert torch.allclose((-a).at(500), -a.vectors[1])
    with pytest.raises(ValueError, match="different space/model/shape"):
        _ = a + _d(torch.zeros(1, 4, 2, 2), model="digits")
    with pytest.raises(ValueError, match="finite number"):
        _ = a * float("nan")


def test_save_load_round_trip(tmp_path):
    d = _d(torch.arange(8.0).view(2, 4, 1, 1), ts=(0, 10))
    path = d.save(tmp_path / "d")
    back = Direction.load(path)
    assert torch.equal(back.vectors, d.vectors) and back.timesteps.tolist() == [0, 10]
    assert back.model == "shapes" and back.space == "h"


def test_model_and_shape_checks(shapes_model):
    with pytest.raises(ValueError, match="made for model 'digits'"):
        _d(torch.zeros(1, 128, 8, 8), model="digits").check(shapes_model, "h")
    with pytest.raises(ValueError, match=r"shape \(64, 8, 8\).*\(128, 8, 8\)"):
        _d(torch.zeros(1, 64, 8, 8)).check(shapes_model, "h")


def test_mean_difference_is_the_difference_of_mean_h(shapes_model):
    f = shapes.sample_factors(6, seed=11)
    a = shapes.render(f.replace(colour=torch.zeros(6, dtype=torch.long)))
    b = shapes.render(f.replace(colour=torch.full((6,), 4, dtype=torch.long)))
    d = directions.mean_difference(shapes_model, a, b, timesteps=[200, 600], seed=3)
    # independent: noise each group with the seeded noise of the documented rule and call Model.h
    for k, t in enumerate((200, 600)):
        ab = float(shapes_model.alphas_cumprod[t])
        z = torch.randn(a.shape, generator=torch.Generator().manual_seed(3 + t))
        with torch.no_grad():
            ref = (shapes_model.h(ab**0.5 * b + (1 - ab) ** 0.5 * z, t).mean(0)
                   - shapes_model.h(ab**0.5 * a + (1 - ab) ** 0.5 * z, t).mean(0))
        assert torch.allclose(d.vectors[k], ref, atol=1e-5)
    assert d.meta["source"] == "mean_difference"


def test_pca_is_the_top_singular_vector_of_centred_h(shapes_model):
    x_T = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    d = directions.pca(shapes_model, x_T, 0, steps=2)
    with torch.no_grad():
        h = shapes_model.h(x_T, int(diffgeo.ddim_timesteps(shapes_model, 2)[0])).flatten(1).double()
    u, s, vt = np.linalg.svd((h - h.mean(0)).numpy(), full_matrices=False)
    ref = torch.as_tensor(vt[0])
    got = d.at(int(diffgeo.ddim_timesteps(shapes_model, 2)[0])).flatten().double()
    assert abs(float(got @ ref)) > 1 - 1e-4 and abs(got.norm() - 1) < 1e-5


def test_tangent_is_the_basis_vector(shapes_model):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    b = diffgeo.local_basis(shapes_model, x, 500, k=2, seed=0)
    dv, du = directions.tangent(b, 1, space="x"), directions.tangent(b, 1, space="h")
    assert torch.equal(dv.vectors[0], b.v[1].float()) and torch.equal(du.vectors[0], b.u[1].float())
    dv.check(shapes_model, "x")
    with pytest.raises(ValueError, match="index must be"):
        directions.tangent(b, 2)
