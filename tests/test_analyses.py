"""Analyses: warm-started bases against the exact SVD, and each claim's statistic and verdict on
synthetic bases whose answer is known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

import diffgeo
from diffgeo.analyses import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, TrajectoryBases, bases_along, bootstrap_ci
from diffgeo.analyses.coarse_to_fine import coarse_to_fine
from diffgeo.analyses.discrepancy import discrepancy
from diffgeo.analyses.dataset_complexity import dataset_complexity
from diffgeo.analyses.shared_tangents import shared_tangents
from diffgeo.analyses.text import cond_uncond
from diffgeo.analyses.text_edits import best_gain, branch_distances
from diffgeo.analyses.transport_claims import mean_offdiagonal, pair_excess
from diffgeo.evaluation.stats import spearman


@pytest.fixture(scope="module")
def digits():
    return diffgeo.load("digits")


@pytest.fixture(scope="module")
def neighbours(digits):
    """Two neighbouring timesteps of one 20-step trajectory with their exact bases (full Jacobian + SVD)."""
    traj = diffgeo.sample(digits, 1, steps=20, seed=3, progress=False)
    grid = [int(t) for t in traj.timesteps]
    k = 4
    exact = [diffgeo.exact_basis(digits, traj.xs[i, 0], grid[i], k) for i in (10, 11)]
    return traj, (grid[10], grid[11]), exact, k


def test_warm_start_from_neighbouring_exact_basis(digits, neighbours):
    traj, (t_prev, t), (exact_prev, exact), k = neighbours
    x = traj.xs[11, 0]
    cold = diffgeo.local_basis(digits, x, t, k, tol=1e-4, seed=0, progress=False)
    warm = diffgeo.local_basis(digits, x, t, k, tol=1e-4, seed=0, progress=False, init=exact_prev)
    cold_angle = float(diffgeo.principal_angles(cold, exact).max())
    warm_angle = float(diffgeo.principal_angles(warm, exact).max())
    assert warm.meta["warm"] and not cold.meta["warm"]
    assert warm.n_products < cold.n_products
    assert cold_angle < 5e-3 and warm_angle < 5e-3    # same accuracy: both at the tolerance's level
    torch.testing.assert_close(warm.s.double(), exact.s.double(), rtol=1e-3, atol=0)
    # starting at the answer: converged after the first block (k vectors and the 2 random guard
    # vectors, one product each way)
    at_answer = diffgeo.local_basis(digits, x, t, k, tol=1e-4, seed=0, progress=False, init=exact)
    assert at_answer.n_products == 2 * (k + 2) and float(diffgeo.principal_angles(at_answer, exact).max()) < 5e-3


def test_warm_start_bad_input(digits):
    x = torch.zeros(1, *digits.x_shape)
    with pytest.raises(ValueError, match="init has shape"):
        diffgeo.local_basis(digits, x, 500, 2, init=torch.randn(2, 5), progress=False)
    with pytest.raises(ValueError, match="between 1 and k"):
        diffgeo.local_basis(digits, x, 500, 2, init=torch.randn(3, *digits.x_shape), progress=False)
    with pytest.raises(TypeError, match="init must be"):
        diffgeo.local_basis(digits, x, 500, 2, init=[1, 2], progress=False)


def test_bases_along_trajectory(digits, neighbours):
    traj, ts, exact, k = neighbours
    bases = bases_along(digits, traj, list(ts), k, tol=1e-4)
    assert [b.t for b in bases] == list(ts) and [b.meta["warm"] for b in bases] == [False, True]
    for b, i, ref in zip(bases, (10, 11), exact):
        assert torch.equal(b.x, traj.xs[i, 0])
        assert float(diffgeo.principal_angles(b, ref).max()) < 5e-3
    assert bases[1].n_products < bases[0].n_products
    with pytest.raises(ValueError, match="not on the trajectory"):
        bases_along(digits, traj, [123], 2)


# -- synthetic bases with known answers ----------------------------------------------------------
def _cos_image(freq: int, phase: float, size: int = 16) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64)
    img = torch.cos(2 * math.pi * freq * x / size + phase).expand(size, size)
    return (img / img.norm())[None]


def _tb(v: torch.Tensor, ts=(900, 500, 100), x_shape=(1, 16, 16)) -> TrajectoryBases:
    n, t_count, k = v.shape[:3]
    return TrajectoryBases("synthetic", list(ts), v.reshape(n, t_count, k, -1), torch.ones(n, t_count, k),
                           tuple(x_shape), None, "cond", 0)


def test_coarse_to_fine_verdicts_follow_the_frequencies():
    n = 5
    rising = torch.stack([torch.stack([_cos_image(f, 0.1 * s) for f in (1, 3, 6)]) for s in range(n)])[:, :, None]
    r = coarse_to_fine(_tb(rising))
    # cos(2 pi f x / 16) along x only: centroid exactly f / 16 cycles per pixel
    torch.testing.assert_close(r.mean, torch.tensor([1 / 16, 3 / 16, 6 / 16], dtype=torch.float64))
    assert r.claim.verdict == REPRODUCED and abs(r.claim.value - 5 / 16) < 1e-9
    assert coarse_to_fine(_tb(rising.flip(1))).claim.verdict == NOT_REPRODUCED


def test_shared_tangents_and_discrepancy_on_known_subspaces():
    n, dim = 6, 16 * 16
    e = torch.eye(dim, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    early = e[:2].expand(n, 2, dim)                                 # every sample: span(e1, e2)
    late = torch.stack([e[2 + 2 * i: 4 + 2 * i] for i in range(n)])  # pairwise orthogonal subspaces
    mid = torch.stack([torch.linalg.qr(torch.randn(dim, 2, generator=g, dtype=torch.float64))[0].T for _ in range(n)])
    v = torch.stack([early, mid, late], 1)                          # (N, T, k, dim)
    r = shared_tangents(_tb(v))
    assert float(r.mean[0]) == 0.0 and abs(float(r.mean[-1]) - 1.0) < 1e-12   # 0 and the maximum sqrt(2) pi/2
    c2, c2b = r.claims
    # claim 2: early distance 0, far below random 2-dim subspaces of R^256 (close to the maximum)
    assert c2.verdict == REPRODUCED and c2.value == 0.0 and c2.excess == pytest.approx(r.null_mean) and r.null_mean > 0.8
    assert c2b.verdict == REPRODUCED and abs(c2b.value - 1.0) < 1e-12
    same = shared_tangents(_tb(torch.stack([early, early, early], 1)))
    assert same.claims[1].verdict == INCONCLUSIVE and same.claims[1].value == 0.0
    # samples as far apart as random subspaces at the earliest t: no sharing (excess below 0 by the MC spread only)
    rand = shared_tangents(_tb(torch.stack([mid, mid, mid], 1)))
    assert rand.claims[0].verdict != REPRODUCED
    # discrepancy: a sample's bases at t=900 and t=100 are orthogonal (retained energy 0) -> reproduced
    d = discrepancy(_tb(v))
    assert d.claim.verdict == REPRODUCED and d.claim.value < 1e-12 and d.claim.null_value == 2 / dim
    assert d.claim.excess == pytest.approx(-(2 / dim) / (1 - 2 / dim))     # below chance k/n
    assert d.heatmap.shape == (3, 3) and float(d.heatmap.diagonal().abs().max()) < 1e-6
    flat = discrepancy(_tb(torch.stack([early, early, early], 1)))   # identical across t: energy 1
    assert flat.claim.verdict == NOT_REPRODUCED and abs(flat.claim.value - 1) < 1e-12


def test_dataset_complexity_is_untestable_with_these_models():
    e = torch.eye(256, dtype=torch.float64)
    v = torch.stack([torch.stack([e[:2], e[2:4], e[4:6]])] * 3)
    r = dataset_complexity({"my-model": shared_tangents(_tb(v))})
    assert r.claim.verdict == "untestable here" and "controlled" not in r.claim.verdict
    assert "6 trainings" in r.claim.note and "n = 2" in r.claim.note


def test_cond_uncond_on_known_subspaces():
    n, dim = 5, 64     # 5: the rules' minimum number of units for a verdict
    e = torch.eye(dim, dtype=torch.float64)
    cond = torch.stack([torch.stack([e[:2], e[:2], e[:2]])] * n)
    # uncond: orthogonal early, 45 degrees in one direction at mid, equal late -> distance falls as t falls
    c45 = torch.stack([e[0], (e[1] + e[5]) / math.sqrt(2)])
    uncond = torch.stack([torch.stack([e[2:4], c45, e[:2]])] * n)
    r = cond_uncond(_tb(cond, x_shape=(1, 8, 8)), _tb(uncond, x_shape=(1, 8, 8)))
    dmax = math.sqrt(2) * math.pi / 2
    torch.testing.assert_close(r.mean, torch.tensor([1.0, (math.pi / 4) / dmax, 0.0], dtype=torch.float64))
    assert r.claim.verdict == REPRODUCED   # expected sign: negative (late minus early)


def test_spearman_and_bootstrap_against_references():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a ** 3) == pytest.approx(1.0) and spearman(a, -a) == pytest.approx(-1.0)
    # bootstrap of the mean of N(0,1) draws: n=400, the 95% interval's half-width ~1.96/sqrt(400)=0.098;
    # it must contain the sample mean and have about that width (+-25%)
    x = torch.randn(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v, lo, hi = bootstrap_ci(400, lambda i: float(x[i].mean()), n_boot=1000)
    assert lo < v < hi and 0.75 * 0.196 < hi - lo < 1.25 * 0.196


def test_branch_distances_identical_is_zero_and_orthogonal_is_the_maximum():
    e = torch.eye(6, dtype=torch.float64)
    same = e[None, :2].repeat(3, 1, 1)
    text, seed = branch_distances(same, same, same)
    assert text.abs().max() < 1e-6 and seed.abs().max() < 1e-6
    # one principal angle of 90 degrees out of two: distance pi/2 of the maximum sqrt(2) pi/2
    half = torch.stack([e[[0, 1]], e[[0, 2]], e[[2, 3]]])
    text, _ = branch_distances(same, half, same)
    assert text.tolist() == pytest.approx([0.0, 1 / math.sqrt(2), 1.0], abs=1e-6)


def test_best_gain_and_pair_means_on_known_values():
    before = torch.tensor([0.2, 0.9])
    after = torch.tensor([[0.1, 0.95], [0.5, 0.8], [0.3, 0.7]])
    assert best_gain(before, after).tolist() == pytest.approx([0.3, 0.05])
    m = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 4.0], [5.0, 6.0, 0.0]])
    assert mean_offdiagonal(m, [0, 1, 2]) == pytest.approx(3.5)
    assert mean_offdiagonal(m, [1, 1, 2]) == pytest.approx((4 + 4 + 6 + 6) / 4)   # the duplicate is not self-paired
    assert math.isnan(mean_offdiagonal(m, [2, 2]))


def test_transport_onto_a_rotated_copy_keeps_basis_vectors_above_random_tangent_vectors():
    # B's tangent basis u is A's: transport via H sends v_i(A) to v_i(B) (|cos| 1), while a random tangent vector
    # of A lands on B's nearest vector with mean max-|coordinate| 2 sqrt(2)/pi = 0.90 (k = 2; 2000 draws: se 0.002)
    f = lambda x: torch.tanh(x) * torch.arange(1.0, 7.0, dtype=x.dtype)
    a = diffgeo.exact_basis(f, torch.zeros(6, dtype=torch.float64), None, 2)
    basis, null = pair_excess(a, a, n_random=2000, seed=1)
    assert basis == pytest.approx(1.0, abs=1e-9)
    assert abs(null - 2 * math.sqrt(2) / math.pi) < 4 * 0.088 / math.sqrt(2000)
