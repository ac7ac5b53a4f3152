"""Null generators and the BCa interval against cases with a known answer (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffgeo.evaluation.nulls import (chance_retention, ddim_shift_gain, mantel_test, nearest_cosine,
                                      random_directions_like, random_subspace_null, random_tangent_directions)
from diffgeo.evaluation.stats import bca_interval
from diffgeo.sampling.ddim import ddim_step


def test_random_lines_in_the_plane_have_uniform_angle():
    # two random lines in R^2: the angle between them is uniform on [0, pi/2], mean pi/4, sd (pi/2)/sqrt(12);
    # 4000 draws: standard error 0.0072, the bound is 4 of them
    null = random_subspace_null(2, 1, n_draws=4000, seed=1)
    assert abs(float(null.distance.mean()) - math.pi / 4) < 4 * (math.pi / 2) / math.sqrt(12 * 4000)


def test_random_subspaces_of_a_large_space_are_near_the_maximum_and_keep_k_over_n():
    n, k, draws = 3072, 5, 300
    null = random_subspace_null(n, k, n_draws=draws, seed=2)
    ratio = null.distance / null.max_distance
    # k << n: cosines O(sqrt(k/n)) = 0.04, so distance / max -> 1 (first order: 1 - (2/pi) mean cos ~ 0.975)
    assert 0.96 < float(ratio.mean()) < 0.99 and float(ratio.max()) <= 1.0
    # mean cos^2 is k/n in expectation: its sd over draws is about k/n * sqrt(2/k); 4 standard errors
    se = chance_retention(n, k) * math.sqrt(2 / k) / math.sqrt(draws)
    assert abs(float(null.retention.mean()) - chance_retention(n, k)) < 4 * se
    # the whole space: every pair of subspaces is the same subspace
    assert float(random_subspace_null(6, 6, n_draws=5).distance.abs().max()) < 1e-6
    with pytest.raises(ValueError, match="1 <= k <= n"):
        random_subspace_null(3, 4)


def test_random_directions_have_the_norm_and_no_preferred_direction():
    v = torch.randn(1, 10, 10, generator=torch.Generator().manual_seed(0))
    d = random_directions_like(v, 2000, seed=3)
    assert torch.allclose(d.flatten(1).norm(dim=1), v.norm().expand(2000).to(d.dtype), rtol=1e-5)
    cos = (d.flatten(1).double() @ v.flatten().double()) / v.norm().double() ** 2
    # uniform on the sphere of R^100: E cos = 0, var cos = 1/100; 2000 draws: se(mean) 0.0022, se(var) ~3% of it
    assert abs(float(cos.mean())) < 4 * 0.1 / math.sqrt(2000)
    assert abs(float(cos.var()) - 0.01) < 0.0015


def _distances(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[:, None] - points[None], axis=-1)


def test_mantel_p_values_are_uniform_under_the_null_and_small_under_a_planted_correlation():
    from scipy.stats import kstest

    rng = np.random.default_rng(0)
    ps = []
    for rep in range(200):   # independent point sets: a true null
        a, b = _distances(rng.normal(size=(8, 2))), _distances(rng.normal(size=(8, 2)))
        ps.append(mantel_test(a, b, n_perm=99, seed=rep)[1])
    ps = np.array(ps)
    # uniform on {1/100, ..., 1}: KS against U(0, 1) (the grid costs at most 0.01 of the KS distance)
    assert kstest(ps, "uniform").pvalue > 1e-3
    assert np.mean(ps < 0.05) < 0.11     # binomial(200, 0.05): mean 10, sd 3.1; the bound is 22
    planted = rng.normal(size=(8, 2))
    r, p = mantel_test(_distances(planted), _distances(planted + 0.1 * rng.normal(size=(8, 2))), n_perm=999)
    assert r > 0.8 and p < 0.01
    _, p_less = mantel_test(_distances(planted), _distances(planted), n_perm=199, alternative="less")
    assert p_less > 0.9
    with pytest.raises(ValueError, match="at least 4"):
        mantel_test(np.zeros((3, 3)), np.zeros((3, 3)))


def test_ddim_shift_gain_matches_a_direct_ddim_step():
    g = torch.Generator().manual_seed(0)
    x, eps, d = (torch.randn(1, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    for a_t, a_prev in ((0.3, 0.4), (0.05, 0.2), (0.9, 0.95)):
        base, _ = ddim_step(x, eps, a_t, a_prev)
        both, _ = ddim_step(x, eps + d, a_t, a_prev)
        p_only, _ = ddim_step(x, eps + d, a_t, a_prev, eps_direction=eps)
        sym, asym = ddim_shift_gain(a_t, a_prev)
        torch.testing.assert_close(both - base, sym * d)
        torch.testing.assert_close(p_only - base, asym * d)
        assert abs(sym) < abs(asym)     # Theorem 1: the symmetric shift mostly cancels


def test_bca_interval_width_and_degenerate_cases():
    # mean of 400 N(0, 1) draws: the 95% interval's half-width is ~1.96 / 20 = 0.098; within 25%
    x = np.random.default_rng(1).normal(size=400)
    v, lo, hi = bca_interval(400, lambda i: float(x[i].mean()), n_boot=1000)
    assert lo < v < hi and 0.75 * 0.196 < hi - lo < 1.25 * 0.196
    # a skewed statistic (exponential data, n=30): BCa moves the interval right of the percentile's centre
    y = np.random.default_rng(2).exponential(size=30)
    v, lo, hi = bca_interval(30, lambda i: float(y[i].mean()), n_boot=2000)
    assert hi - v > v - lo
    const = np.ones(6)
    assert bca_interval(6, lambda i: float(const[i].mean()), n_boot=200) == (1.0, 1.0, 1.0)
    v, lo, hi = bca_interval(1, lambda i: 2.0)
    assert v == 2.0 and lo != lo and hi != hi


def test_random_tangent_directions_are_uniform_on_the_subspace_sphere():
    # a rotated 2-dim subspace of R^6: the draws stay in it, have norm 1, and their nearest-basis |cos| is
    # max(|cos a|, |sin a|) for a uniform angle a: mean 2 sqrt(2) / pi, sd 0.088 (E[max^2] = 1/2 + 1/pi);
    # 4000 draws: standard error 0.0014, the bound is 4 of them
    q = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64))[0]
    v = q[:2]
    d = random_tangent_directions(v, 4000, seed=4)
    assert torch.allclose(d.norm(dim=1), torch.ones(4000, dtype=torch.float64))
    assert float((d - (d @ v.T) @ v).abs().max()) < 1e-12                       # inside span(v)
    cos = nearest_cosine(v, d)
    sd = math.sqrt(0.5 + 1 / math.pi - 8 / math.pi ** 2)
    assert abs(float(cos.mean()) - 2 * math.sqrt(2) / math.pi) < 4 * sd / math.sqrt(4000)
    assert float(cos.min()) >= 1 / math.sqrt(2) - 1e-12                         # at least 1/sqrt(k) inside the span
    assert nearest_cosine(v, v).tolist() == pytest.approx([1.0, 1.0])           # a basis vector is its own nearest
    with pytest.raises(ValueError, match="orthonormal rows"):
        random_tangent_directions(torch.zeros(3), 2)
    with pytest.raises(ValueError, match="same space"):
        nearest_cosine(v, torch.ones(2, 5))


def test_random_unit_vectors_have_cosine_sqrt_2_over_pi_n():
    # |cos| of a random unit vector of R^n with a fixed one: mean sqrt(2 / (pi n)) (to O(1/n)), sd
    # sqrt((1 - 2/pi) / n); n = 400, 3000 draws: standard error 0.00031 against a mean of 0.040
    n, draws = 400, 3000
    e = torch.zeros(1, n, dtype=torch.float64)
    e[0, 0] = 1.0
    d = random_directions_like(torch.ones(n), draws, seed=5).double()
    cos = nearest_cosine(e, d)
    se = math.sqrt((1 - 2 / math.pi) / n) / math.sqrt(draws)
    assert abs(float(cos.mean()) - math.sqrt(2 / (math.pi * n))) < 4 * se + 1 / n ** 1.5
