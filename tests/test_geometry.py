"""Subspace distances, spectra, transport and curvedness against constructions with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from diffgeo.geometry.curvedness import Curvedness, curvedness
from diffgeo.geometry.subspaces import (distance_matrix, grassmann_distance, principal_angles,
                              projection_distance, radial_power_spectrum, spectral_centroid, transport,
                              transport_agreement)
from diffgeo.models.model import Model
from diffgeo.geometry.basis import exact_basis
from conftest import tiny_unet_config


def rotation(n: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(r.diagonal())


def pair_with_angles(thetas: list[float], n: int = 12, seed: int = 0):
    """Orthonormal A (k, n) and B (k, n) whose principal angles are exactly ``thetas``, in a random frame."""
    k = len(thetas)
    e = torch.eye(n, dtype=torch.float64)
    a = e[:k]
    b = torch.stack([math.cos(t) * e[i] + math.sin(t) * e[k + i] for i, t in enumerate(thetas)])
    rot = rotation(n, seed)
    return a @ rot, b @ rot


# -- principal angles and distances ----------------------------------------------------------------
def test_principal_angles_recover_constructed_angles_including_tiny_ones():
    thetas = [1e-9, 1e-4, 0.3, 1.2, math.pi / 2]
    a, b = pair_with_angles(thetas)
    got = principal_angles(a, b)
    assert torch.allclose(got, torch.tensor(sorted(thetas), dtype=torch.float64), rtol=1e-6, atol=1e-15)
    # any spanning set of the same subspaces gives the same angles
    mix = torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(principal_angles(mix @ a, b.flip(0) * 3.0), got, rtol=1e-6, atol=1e-12)
    assert torch.allclose(principal_angles(b, a), got, rtol=1e-6, atol=1e-15)


def test_distances_follow_their_formulas():
    thetas = [0.1, 0.5, 0.9]
    a, b = pair_with_angles(thetas, seed=2)
    t = torch.tensor(thetas, dtype=torch.float64)
    assert grassmann_distance(a, b) == pytest.approx(float(t.square().sum().sqrt()), rel=1e-10)
    pa, pb = a.T @ a, b.T @ b
    chordal = float((pa - pb).norm() / math.sqrt(2))  # projector form, computed independently
    assert projection_distance(a, b) == pytest.approx(chordal, rel=1e-10)
    assert grassmann_distance(a, a) == pytest.approx(0, abs=1e-7)


def test_subspaces_of_different_dimension_and_bad_input():
    e = torch.eye(4, dtype=torch.float64)
    assert torch.allclose(principal_angles(e[:1], e[:3]), torch.zeros(1, dtype=torch.float64))
    assert torch.allclose(principal_angles(e[3:], e[:3]), torch.tensor([math.pi / 2], dtype=torch.float64))
    with pytest.raises(ValueError, match="linearly dependent"):
        principal_angles(torch.stack([e[0], 2 * e[0]]), e[:2])
    with pytest.raises(ValueError, match="different spaces"):
        principal_angles(e[:2], torch.eye(5)[:2])


def test_distance_matrix_is_symmetric_and_matches_pairs():
    bases = [pair_with_angles([0.2, 0.4], seed=s)[i] for s in range(2) for i in range(2)]
    for metric, fn in (("grassmann", grassmann_distance), ("projection", projection_distance)):
        d = distance_matrix(bases, metric)
        assert torch.allclose(d, d.T) and torch.all(d.diagonal().abs() < 1e-7)
        for i in range(4):
            for j in range(4):
                if i != j:
                    assert d[i, j] == pytest.approx(fn(bases[i], bases[j]), rel=1e-12)
    with pytest.raises(ValueError, match="metric"):
        distance_matrix(bases, "cosine")


# -- frequency content -----------------------------------------------------------------------------
def plane_wave(fy: int, fx: int, size: int = 32) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    return torch.cos(2 * math.pi * (fy * yy + fx * xx) / size)


def test_power_spectrum_peaks_at_the_wave_frequency_and_keeps_energy():
    imgs = torch.stack([plane_wave(0, 3), plane_wave(3, 4), plane_wave(1, 0)])[:, None].expand(3, 3, 32, 32)
    freqs, power = radial_power_spectrum(imgs)
    assert freqs[power.argmax(dim=1)].tolist() == [3 / 32, 5 / 32, 1 / 32]
    # Parseval: ring means times ring sizes add up to the total energy
    from diffgeo.geometry.subspaces import _radius

    ring = torch.round(_radius(32, 32) * 32).long().reshape(-1)
    counts = torch.bincount(ring)[torch.bincount(ring) > 0].double()
    assert torch.allclose((power * counts).sum(1), 32 * 32 * imgs.square().sum(dim=(1, 2, 3)))


def test_spectral_centroid_of_pure_waves_and_ordering():
    waves = torch.stack([plane_wave(0, 3), plane_wave(3, 4), plane_wave(8, 0)])
    assert torch.allclose(spectral_centroid(waves), torch.tensor([3 / 32, 5 / 32, 8 / 32], dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 32, 32, generator=gen, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(noise[None], 5, stride=1, padding=2, count_include_pad=False)[0]
    assert float(spectral_centroid(smooth)) < float(spectral_centroid(noise))


# -- transport -------------------------------------------------------------------------------------
def linear_bases(k=3):
    gen = torch.Generator().manual_seed(3)
    a_mat = torch.randn(20, 8, generator=gen, dtype=torch.float64)
    f = lambda x: a_mat @ x  # noqa: E731
    xa, xb = torch.randn(8, generator=gen, dtype=torch.float64), torch.randn(8, generator=gen, dtype=torch.float64)
    return exact_basis(f, xa, None, k), exact_basis(f, xb, None, k)


def test_transport_is_identity_where_the_map_is_linear():
    ba, bb = linear_bases()
    for via in ("h", "x"):
        for i in range(3):
            assert torch.allclose(transport(ba, bb, i, via=via), ba.v[i], atol=1e-10)
        d = ba.v_flat.T @ torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64)
        assert torch.allclose(transport(ba, bb, d, via=via), d / d.norm(), atol=1e-10)
    assert torch.allclose(transport_agreement(ba, bb), torch.ones(3, dtype=torch.float64))


def test_transport_on_an_elementwise_map_follows_the_coordinate_axes():
    # f(x) = c * sin(x): J = diag(c cos x), bases are coordinate axes, u_i = sign(c_i cos x_i) e_i.
    c = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    xa = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.2], dtype=torch.float64)
    xb = torch.tensor([0.1, math.pi - 0.2, 0.3, 0.1, 0.2], dtype=torch.float64)  # cos flips sign on axis 1
    f = lambda x: c * torch.sin(x)  # noqa: E731
    ba, bb = exact_basis(f, xa, None, 3), exact_basis(f, xb, None, 3)
    e = torch.eye(5, dtype=torch.float64)
    assert torch.allclose(ba.v_flat.abs(), e[:3]) and torch.allclose(bb.v_flat.abs(), e[:3])
    for i in range(3):
        assert torch.allclose(transport(ba, bb, i, via="x"), e[i], atol=1e-12)
        flip = torch.sign(torch.cos(xa[i])) * torch.sign(torch.cos(xb[i]))
        assert torch.allclose(transport(ba, bb, i, via="h"), flip * e[i], atol=1e-12)
    assert torch.allclose(transport_agreement(ba, bb), torch.ones(3, dtype=torch.float64))
    # a direction outside B's tangent space cannot be transported
    bc = exact_basis(f, xa, None, 1)
    with pytest.raises(ValueError, match="orthogonal"):
        transport(ba, bc, 2, via="x")


def test_transport_via_x_is_the_projection_onto_b():
    gen = torch.Generator().manual_seed(9)
    w = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    f = lambda x: torch.tanh(w @ x) * 3  # noqa: E731
    ba = exact_basis(f, torch.randn(6, generator=gen, dtype=torch.float64), None, 3)
    bb = exact_basis(f, torch.randn(6, generator=gen, dtype=torch.float64), None, 3)
    for i in range(3):
        p = bb.v_flat.T @ (bb.v_flat @ ba.v_flat[i])  # projection onto span(V_B), computed here
        assert torch.allclose(transport(ba, bb, i, via="x"), p / p.norm(), atol=1e-12)


# -- curvedness ------------------------------------------------------------------------------------
def paraboloid(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, 0.5 * x.square().sum()[None]])


@pytest.mark.parametrize("method", ["exact", "local"])
def test_curvedness_is_zero_on_linear_maps(method):
    gen = torch.Generator().manual_seed(0)
    a_mat = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    xa, xb = torch.randn(6, generator=gen, dtype=torch.float64), torch.randn(6, generator=gen, dtype=torch.float64)
    c = curvedness(lambda x: a_mat @ x, xa, xb, k=3, n_points=5, method=method, tol=1e-10, progress=False)
    assert abs(c.rotation) < 1e-7 and abs(c.off_tangent) < 1e-10 and abs(c.excess_length) < 1e-12
    assert c.chord_x == pytest.approx(float((xb - xa).norm()))


def test_curvedness_of_a_paraboloid_matches_hand_integration():
    # f(x1, x2) = (x1, x2, (x1^2 + x2^2)/2) on the segment x1 = 1, x2 from -a to a; k = 1.
    # J^T J = I + x x^T: the tangent line is span(x), at angle atan(x2) -> (a) = 2 atan(a) / (2a).
    # (b): p_a is the unit vector along (1, -a); 1 - (v(s) . p_a)^2 = (s + a)^2 / ((1+s^2)(1+a^2)),
    #      whose mean over s in [-a, a] is (a + (a^2 - 1) atan a) / (a (1 + a^2)); same from x_b.
    # (c): the image (1, s, (1+s^2)/2) has length a sqrt(1+a^2) + asinh(a); its chord is 2a.
    a = 1.5
    xa = torch.tensor([1.0, -a], dtype=torch.float64)
    xb = torch.tensor([1.0, a], dtype=torch.float64)
    coarse = curvedness(paraboloid, xa, xb, k=1, n_points=5, method="exact", progress=False)
    assert coarse.rotation == pytest.approx(math.atan(a) / a, rel=1e-10)  # exact for any number of points
    fine = curvedness(paraboloid, xa, xb, k=1, n_points=401, method="exact", progress=False)
    assert fine.rotation == pytest.approx(math.atan(a) / a, rel=1e-10)
    b_true = (a + (a * a - 1) * math.atan(a)) / (a * (1 + a * a))
    assert fine.off_tangent == pytest.approx(b_true, rel=1e-4)
    c_true = (a * math.sqrt(1 + a * a) + math.asinh(a)) / (2 * a) - 1
    assert fine.excess_length == pytest.approx(c_true, rel=1e-4)
    local = curvedness(paraboloid, xa, xb, k=1, n_points=5, method="local", tol=1e-12, progress=False)
    assert local.rotation == pytest.approx(coarse.rotation, rel=1e-8)
    assert local.excess_length == pytest.approx(coarse.excess_length, rel=1e-12)


def _fd_jacobian(model, x: torch.Tensor, t: int, eps: float = 1e-5) -> torch.Tensor:
    """Full Jacobian (m, n) of the public ``Model.h`` by central differences (float64, no autograd)."""
    n = x.numel()
    e = torch.eye(n, dtype=x.dtype).reshape(n, *x.shape[1:])
    with torch.no_grad():
        hp, hm = model.h(x + eps * e, t), model.h(x - eps * e, t)
    return ((hp - hm) / (2 * eps)).reshape(n, -1).T


def _small_angles(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Principal angles between orthonormal row spans via arcsin of the residual (exact for small angles)."""
    resid = q - (q @ p.T) @ p
    return torch.arcsin(torch.linalg.svdvals(resid).clamp(0, 1))


def test_curvedness_on_a_model_matches_a_reference_and_round_trips(tmp_path):
    # Reference written here from the three definitions in diffgeo/geometry.py, on a random float64
    # U-Net, with the tangent spaces from the exact SVD of a finite-difference Jacobian of Model.h.
    torch.manual_seed(0)
    unet = UNet2DModel(**tiny_unet_config(sample_size=8)).double()
    model = Model(unet, DDPMScheduler(num_train_timesteps=1000), name="tiny")
    gen = torch.Generator().manual_seed(0)
    xa, xb = (torch.randn(1, 3, 8, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    k, t, n_points = 2, 400, 3
    c = curvedness(model, xa, xb, t, k=k, n_points=n_points, method="exact", progress=False)
    d = (xb - xa).reshape(-1)
    points = [xa + s * (xb - xa) for s in torch.linspace(0, 1, n_points, dtype=torch.float64).tolist()]
    vs = []
    for x in points:
        s_vals, vh = torch.linalg.svd(_fd_jacobian(model, x, t), full_matrices=False)[1:]
        assert s_vals[k - 1] > 1.01 * s_vals[k]  # a top-k subspace that is well defined
        vs.append(vh[:k])
    steps = torch.stack([_small_angles(p, q).square().sum().sqrt() for p, q in zip(vs[:-1], vs[1:])])
    assert torch.allclose(c.steps, steps, rtol=1e-5, atol=1e-8)
    assert c.rotation == pytest.approx(float(steps.sum() / d.norm()), rel=1e-5)
    off = []
    for end in (vs[0], vs[-1]):
        p = end.T @ (end @ d)
        p = p / p.norm()
        frac = torch.stack([1 - (v @ p).square().sum() for v in vs])
        off.append(float((frac[1:] + frac[:-1]).sum() / (2 * (n_points - 1))))  # trapezoid mean
    assert c.off_tangent == pytest.approx(sum(off) / 2, rel=1e-5, abs=1e-9)
    with torch.no_grad():
        hs = [model.h(x, t).reshape(-1) for x in points]
    length = sum(float((q - p).norm()) for p, q in zip(hs[:-1], hs[1:]))
    assert c.excess_length == pytest.approx(length / float((hs[-1] - hs[0]).norm()) - 1, rel=1e-9)
    assert c.rotation > 0.01 and c.off_tangent > 1e-3 and c.excess_length > 1e-4  # a curved segment
    assert c.meta["model"] == "tiny" and c.meta["t"] == t and c.steps.shape == (n_points - 1,)
    back = Curvedness.load(c.save(tmp_path / "c"))
    assert back.rotation == c.rotation and back.meta == c.meta and torch.equal(back.steps, c.steps)
    with pytest.raises(ValueError, match="same point"):
        curvedness(model, xa, xa, 400, k=2, progress=False)
