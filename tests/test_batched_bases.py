"""Bases for many points in one call (diffgeo.local_bases) against one-at-a-time bases and exact SVDs.

Ground truth: the exact SVD of an analytic Jacobian (tanh of a random linear map), the single-point
solver (itself checked against exact SVDs in tests/test_pullback.py), and hand arithmetic for the
memory budget.
"""

from __future__ import annotations

import pytest
import torch

import diffgeo
from diffgeo.geometry.basis import local_basis
from diffgeo.geometry.batched import local_bases
from diffgeo.geometry.pullback import chunk_for_budget


def angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles between row spans, via arcsin of the orthogonal residual (small-angle exact)."""
    qa = torch.linalg.qr(a.reshape(a.shape[0], -1).double().cpu().T)[0]
    qb = torch.linalg.qr(b.reshape(b.shape[0], -1).double().cpu().T)[0]
    return torch.arcsin(torch.linalg.svdvals(qb - qa @ (qa.T @ qb)).clamp(0, 1))


W = torch.randn(10, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def tanh_map(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(W @ x)


def exact_svd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, V^T) of J = diag(1 - tanh(Wx)^2) W, written out by hand."""
    jac = (1 - torch.tanh(W @ x).square())[:, None] * W
    _, s, vh = torch.linalg.svd(jac)
    return s, vh


@pytest.mark.parametrize("max_memory", [None, 2 * (6 + 10) * 8])  # the second: one point, one product per call
def test_batched_bases_equal_the_exact_svd_of_an_analytic_map(max_memory):
    xs = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    bases = local_bases(tanh_map, xs, None, 3, tol=1e-10, seed=0, progress=False, max_memory=max_memory)
    assert len(bases) == 5
    for x, basis in zip(xs, bases):
        s, vh = exact_svd(x)
        assert torch.allclose(basis.s, s[:3], rtol=1e-9)
        assert angles(basis.v, vh[:3]).max() < 1e-8
        jac = (1 - torch.tanh(W @ x).square())[:, None] * W
        assert torch.allclose(basis.u * basis.s[:, None], basis.v @ jac.T, atol=1e-9)   # u = J v / s
        assert torch.equal(basis.x, x) and basis.meta["batched"]


def test_batched_bases_equal_one_at_a_time_on_the_embedded_model(shapes_model):
    # 2 points at two timesteps, k=4: about 6 s on one thread (batched + single)
    gen = torch.Generator().manual_seed(2)
    xs = torch.randn(2, *shapes_model.x_shape, generator=gen)
    ts = [300, 600]
    bases = local_bases(shapes_model, xs, ts, 4, seed=0, progress=False)
    for i, basis in enumerate(bases):
        single = local_basis(shapes_model, xs[i], ts[i], 4, seed=0, progress=False)
        # the same solver on the same products up to float32 rounding of the batched forward: the
        # subspaces agree far inside the tolerance the solver stops at (residual 1e-3)
        assert angles(basis.v, single.v).max() < 1e-4
        assert ((basis.s - single.s).abs() / single.s).max() < 1e-5
        assert basis.t == ts[i] and basis.iterations == single.iterations
        assert basis.n_products == single.n_products
        assert basis.v.device == shapes_model.device and basis.v.dtype == shapes_model.dtype


def test_memory_budget_arithmetic():
    # (1 + c) * points * activations <= budget, capped; at least one
    assert chunk_for_budget(100, 1, 64, 1000, torch.device("cpu")) == 9
    assert chunk_for_budget(100, 3, 64, 1000, torch.device("cpu")) == 2
    assert chunk_for_budget(100, 1, 4, 10**9, torch.device("cpu")) == 4
    assert chunk_for_budget(100, 20, 64, 1000, torch.device("cpu")) == 1


def test_max_memory_below_one_product_is_refused_before_any_product(shapes_model, monkeypatch):
    def no_products(*args, **kwargs):
        raise AssertionError("a Jacobian product ran before the memory check")

    monkeypatch.setattr(torch.func, "jvp", no_products)
    monkeypatch.setattr(torch.func, "vjp", no_products)
    x = torch.zeros(2, *shapes_model.x_shape)
    for call in (lambda: local_bases(shapes_model, x, 500, 2, max_memory=1000, progress=False),
                 lambda: local_basis(shapes_model, x[:1], 500, 2, max_memory=1000, progress=False)):
        with pytest.raises(ValueError, match=r"max_memory=1000 bytes is too small: one Jacobian product at one "
                                             r"point needs about \d+ bytes \([\d.]+ MiB\)"):
            call()


def test_bad_arguments_are_refused_clearly(shapes_model):
    x = torch.zeros(2, *shapes_model.x_shape)
    with pytest.raises(ValueError, match="3 timesteps for 2 points"):
        local_bases(shapes_model, x, [100, 200, 300], 2)
    with pytest.raises(ValueError, match="ts is required"):
        local_bases(shapes_model, x, None, 2)
    with pytest.raises(ValueError, match=r"t must|\[0, 999\]|timestep"):
        local_bases(shapes_model, x, [100, 5000], 2)
    with pytest.raises(ValueError, match="ts is only meaningful"):
        local_bases(tanh_map, torch.zeros(2, 6, dtype=torch.float64), 500, 2)
    with pytest.raises(ValueError, match="list of 2 warm starts"):
        local_bases(shapes_model, x, 500, 2, init=[None])
    with pytest.raises(ValueError, match="exceeds the rank bound"):
        local_bases(tanh_map, torch.zeros(2, 6, dtype=torch.float64), None, 7)
    with pytest.raises(TypeError, match="max_memory must be an integer"):
        local_bases(shapes_model, x, 500, 2, max_memory=1.5)


def test_non_finite_products_are_reported_with_the_points(shapes_model, monkeypatch):
    real = shapes_model.h_fn
    # h explodes for the second point only (x = 1 everywhere): its products overflow
    def exploding(x, t, cond=None):
        return real(x, t, cond) * torch.exp(x.flatten(1).sum(1) * 1e4)[:, None, None, None]

    monkeypatch.setattr(shapes_model, "h_fn", exploding)
    xs = torch.stack([torch.zeros(shapes_model.x_shape), torch.ones(shapes_model.x_shape)])
    with pytest.raises(diffgeo.core.checks.NonFiniteError, match=r"non-finite Jacobian product at the points"):
        local_bases(shapes_model, xs, 500, 2, progress=False)
