"""Jacobian products and local bases against independent ground truth.

Ground truth here: matrices with a chosen SVD, elementwise maps with an analytic Jacobian,
central finite differences of the public ``Model.h`` (no torch.func involved), the mid-block
output of a full forward pass, and the exact SVD of the embedded model's full Jacobian.
"""

from __future__ import annotations


import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor

import diffgeo
from diffgeo.models.hooks import capture
from diffgeo.models.model import Model
from diffgeo.geometry.basis import LocalBasis, exact_basis, local_basis
from diffgeo.geometry.pullback import forward_ad_ready, h_map, jvp, vjp
from conftest import tiny_unet_config


# -- helpers (independent of the library) -------------------------------------------------------
def angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles between row spans, via arcsin of the orthogonal residual (small-angle exact)."""
    qa = torch.linalg.qr(a.reshape(a.shape[0], -1).double().T)[0]
    qb = torch.linalg.qr(b.reshape(b.shape[0], -1).double().T)[0]
    resid = qb - qa @ (qa.T @ qb)
    return torch.arcsin(torch.linalg.svdvals(resid).clamp(0, 1))


def orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(r.diagonal())


def matrix_with_svd(s: list[float], m: int, n: int, seed: int = 0):
    """A (m, n) = U diag(s) V^T with random orthogonal U, V; returns A, U[:, :r], s, V[:, :r]."""
    gen = torch.Generator().manual_seed(seed)
    u, v = orthogonal(m, gen)[:, : len(s)], orthogonal(n, gen)[:, : len(s)]
    sv = torch.tensor(s, dtype=torch.float64)
    return u @ torch.diag(sv) @ v.T, u, sv, v


def tiny_model(dtype=torch.float64, seed=0) -> Model:
    """A random 8x8 U-Net with attention in the encoder (x: 3x8x8, h: 32x2x2)."""
    torch.manual_seed(seed)
    unet = UNet2DModel(**tiny_unet_config(sample_size=8)).to(dtype)
    return Model(unet, DDPMScheduler(num_train_timesteps=1000), name="tiny")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def noisy_x(shapes_model):
    from diffgeo.data.shapes import make_scenes

    x0 = make_scenes(1, seed=5).images
    t = 100
    a = shapes_model.alphas_cumprod[t].float()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    return (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(shapes_model.device, shapes_model.dtype), t


@pytest.fixture(scope="module")
def embedded_exact(shapes_model, noisy_x):
    x, t = noisy_x
    return exact_basis(shapes_model, x, t)


# -- the forward-mode fix --------------------------------------------------------------------
def _state(unet):
    procs = {n: m.processor for n, m in unet.named_modules() if isinstance(m, Attention)}
    hooks = {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in unet.named_modules()}
    return procs, hooks


@pytest.mark.parametrize("method", ["sdpa_math", "attn_processor"])
def test_forward_ad_fix_is_switched_on_inside_and_restored_exactly(method):
    unet = UNet2DModel(**tiny_unet_config(sample_size=8)).eval()
    procs, hooks = _state(unet)
    assert procs and not any(isinstance(p, AttnProcessor) for p in procs.values())
    x, v, t = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8), torch.tensor([50])
    sdp_flags = (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled(),
                 torch.backends.cuda.mem_efficient_sdp_enabled())
    with forward_ad_ready(unet, method):
        _, tangent = torch.func.jvp(lambda x: unet(x, t).sample, (x,), (v,))
        if method == "attn_processor":
            assert all(isinstance(m.processor, AttnProcessor) for m in unet.modules() if isinstance(m, Attention))
        assert sum(len(m._forward_pre_hooks) for m in unet.modules()) > 0
    assert torch.isfinite(tangent).all()
    after_procs, after_hooks = _state(unet)
    assert after_hooks == hooks
    assert all(after_procs[n] is p for n, p in procs.items())
    with pytest.raises(RuntimeError, match="boom"):
        with forward_ad_ready(unet, method):
            raise RuntimeError("boom")
    after_procs, after_hooks = _state(unet)
    assert after_hooks == hooks and all(after_procs[n] is p for n, p in procs.items())
    assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled(),
            torch.backends.cuda.mem_efficient_sdp_enabled()) == sdp_flags


@pytest.mark.parametrize("method", ["sdpa_math", "attn_processor"])
def test_each_fix_gives_products_equal_to_central_differences(tiny, method):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 3, 8, 8, generator=gen, dtype=torch.float64)
    v = torch.randn(3, 3, 8, 8, generator=gen, dtype=torch.float64)
    f = h_map(tiny, x, 300)
    batched = torch.func.vmap(lambda w: torch.func.jvp(f.fn, (f.x,), (w,))[1])
    with forward_ad_ready(tiny.unet, method):
        jv = batched(v).reshape(3, *tiny.h_shape)
    fd = torch.cat([central_difference(tiny, x, 300, w[None]) for w in v])  # no autograd involved
    # measured 2e-10 (sdpa_math) and 3e-8 (attn_processor: diffusers' AttnProcessor runs its softmax
    # in float32 even for a float64 model) of the largest entry
    err = float((jv - fd).abs().max() / fd.abs().max())
    assert jv.dtype == torch.float64 and err < 1e-6, err


# -- products ------------------------------------------------------------------------------------
def central_difference(model, x, t, v, eps=1e-5):
    return (model.h(x + eps * v, t) - model.h(x - eps * v, t)) / (2 * eps)


def test_jvp_and_vjp_match_central_differences_float64(tiny):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, *tiny.x_shape, generator=gen, dtype=torch.float64)
    vs = torch.randn(3, *tiny.x_shape, generator=gen, dtype=torch.float64)
    us = torch.randn(2, *tiny.h_shape, generator=gen, dtype=torch.float64)
    fd = torch.cat([central_difference(tiny, x, 400, v[None]) for v in vs])
    jv = jvp(tiny, x, 400, vs)
    assert torch.allclose(jv, fd, rtol=1e-6, atol=1e-8 * fd.abs().max())
    jtu = vjp(tiny, x, 400, us)
    # adjoint identity against the finite differences: <J^T u, v> = <u, J v>
    lhs = jtu.reshape(2, -1) @ vs.reshape(3, -1).T
    rhs = us.reshape(2, -1) @ fd.reshape(3, -1).T
    assert torch.allclose(lhs, rhs, rtol=1e-6, atol=1e-9 * rhs.abs().max())


def test_exact_jacobian_columns_match_central_differences(tiny):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, *tiny.x_shape, generator=gen, dtype=torch.float64)
    f = h_map(tiny, x, 250)
    jac = f.jacobian()
    assert jac.shape == (f.m, f.n) and f.n_products == min(f.n, f.m)
    for j in (0, 77, f.n - 1):
        e = torch.zeros(f.n, dtype=torch.float64)
        e[j] = 1
        fd = central_difference(tiny, x, 250, e.reshape(1, *tiny.x_shape)).reshape(-1)
        assert torch.allclose(jac[:, j], fd, rtol=1e-6, atol=1e-8 * fd.abs().max())


def test_truncated_map_equals_mid_block_of_a_full_forward(tiny, shapes_model, noisy_x):
    for model, x, t in ((tiny, torch.randn(1, *tiny.x_shape, dtype=torch.float64), 700), (shapes_model, *noisy_x)):
        x = x.to(model.device)
        with capture(model.unet) as cap:
            model.unet(x, torch.tensor([t], device=model.device)).sample
        assert torch.allclose(h_map(model, x, t).value(), cap.value[0], rtol=1e-5, atol=1e-5)
    # and its J v equals finite differences of the full forward's mid-block output (float64)
    x = torch.randn(1, *tiny.x_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    v = torch.randn(1, *tiny.x_shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def full_h(x):
        with capture(tiny.unet) as cap:
            tiny.unet(x, torch.tensor([700])).sample
        return cap.value

    fd = (full_h(x + 1e-5 * v) - full_h(x - 1e-5 * v)) / 2e-5
    assert torch.allclose(jvp(tiny, x, 700, v), fd, rtol=1e-6, atol=1e-8 * fd.abs().max())


# -- linear maps with a known SVD ---------------------------------------------------------------
LINEAR_CASES = {
    "distinct": ([10.0, 8.0, 6.5, 5.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.0], 5),
    "repeated_top3": ([5.0, 5.0, 5.0, 3.0, 2.9, 2.0, 1.0, 0.5], 3),
    "repeated_inside": ([6.0, 4.0, 4.0, 4.0, 2.0, 1.9, 1.0, 0.5], 4),
    "near_repeated": ([5.0, 5.0 * (1 - 1e-7), 4.0, 3.9, 3.0, 1.0, 0.5, 0.1], 2),
    "low_rank": ([3.0, 2.0, 1.0, 0.5], 4),
}


@pytest.mark.parametrize("case", sorted(LINEAR_CASES))
def test_linear_map_with_known_svd(case):
    s_true, k = LINEAR_CASES[case]
    a_mat, u_true, s_t, v_true = matrix_with_svd(s_true, m=50, n=30, seed=len(case))
    f = lambda x: a_mat @ x  # noqa: E731
    x0 = torch.randn(30, dtype=torch.float64)
    for basis in (local_basis(f, x0, None, k, tol=1e-10, seed=0, block=4, progress=False), exact_basis(f, x0, None, k)):
        assert torch.allclose(basis.s, s_t[:k], rtol=1e-10, atol=0)
        # the top-k subspace (well defined: s_k > s_{k+1} in every case)
        assert angles(basis.v, v_true[:, :k].T).max() < 1e-7
        assert angles(basis.u, u_true[:, :k].T).max() < 1e-7
        # u = A v / s, orthonormal rows
        assert torch.allclose(basis.u_flat * basis.s[:, None], basis.v_flat @ a_mat.T, atol=1e-10)
        eye = torch.eye(k, dtype=torch.float64)
        assert torch.allclose(basis.v_flat @ basis.v_flat.T, eye, atol=1e-10)
        assert torch.allclose(basis.u_flat @ basis.u_flat.T, eye, atol=1e-10)
        # residuals are what they claim to be
        resid = (basis.v_flat @ a_mat.T @ a_mat - basis.s[:, None] ** 2 * basis.v_flat).norm(dim=1) / basis.s ** 2
        assert torch.allclose(basis.residuals, resid, atol=1e-12) and resid.max() < 1e-9
        # individual vectors where the singular value is simple: equal up to the deterministic sign
        for i in range(k):
            if s_true.count(s_true[i]) == 1 and case != "near_repeated":
                vi = v_true[:, i] * torch.sign(v_true[:, i][v_true[:, i].abs().argmax()])
                assert torch.allclose(basis.v_flat[i], vi, atol=1e-8)
        idx = basis.v_flat.abs().argmax(dim=1)
        assert (basis.v_flat.gather(1, idx[:, None]) > 0).all()


def test_repeated_singular_values_with_default_block():
    a_mat, _, s_t, v_true = matrix_with_svd([7.0] * 6 + [3.0, 2.0, 1.0], m=40, n=25, seed=3)
    basis = local_basis(lambda x: a_mat @ x, torch.zeros(25, dtype=torch.float64), None, 6, tol=1e-10, seed=1,
                        progress=False)
    assert torch.allclose(basis.s, s_t[:6], rtol=1e-10)
    assert angles(basis.v, v_true[:, :6].T).max() < 1e-7


# -- elementwise nonlinear maps with an analytic Jacobian ----------------------------------------
def test_elementwise_map_has_coordinate_axes_as_basis():
    gen = torch.Generator().manual_seed(4)
    c = torch.linspace(1.0, 3.0, 40, dtype=torch.float64)
    x = torch.rand(40, generator=gen, dtype=torch.float64) * 3
    basis = local_basis(lambda x: c * torch.sin(x), x, None, 5, tol=1e-10, seed=0, progress=False)
    jdiag = c * torch.cos(x)                                    # J = diag(c cos x)
    order = jdiag.abs().argsort(descending=True)[:5]
    assert torch.allclose(basis.s, jdiag.abs()[order], rtol=1e-10)
    assert torch.allclose(basis.v_flat, torch.eye(40, dtype=torch.float64)[order], atol=1e-8)
    assert torch.allclose(basis.u_flat, torch.eye(40, dtype=torch.float64)[order] * torch.sign(jdiag[order])[:, None],
                          atol=1e-8)


def test_mixing_nonlinear_map_matches_analytic_jacobian_svd():
    gen = torch.Generator().manual_seed(5)
    b_mat = torch.randn(45, 35, generator=gen, dtype=torch.float64)
    x = torch.randn(35, generator=gen, dtype=torch.float64)
    jac = b_mat * (1 - torch.tanh(x) ** 2)                      # d/dx B tanh(x) = B diag(1 - tanh^2 x)
    _, s_true, vh = torch.linalg.svd(jac)
    basis = local_basis(lambda x: b_mat @ torch.tanh(x), x, None, 6, tol=1e-11, seed=2, progress=False)
    assert torch.allclose(basis.s, s_true[:6], rtol=1e-9)
    assert angles(basis.v, vh[:6]).max() < 1e-7


# -- the embedded model against its exact SVD -----------------------------------------------------
def test_embedded_model_matches_exact_svd(shapes_model, noisy_x, embedded_exact):
    x, t = noisy_x
    s_all = embedded_exact.s.double()
    ratios = s_all[:8] / s_all[1:9]
    k = int(ratios.argmax()) + 1                                # the clearest gap among k <= 8
    assert ratios[k - 1] > 1.05, f"no clear spectral gap at t={t}: s = {s_all[:9].tolist()}"
    basis = local_basis(shapes_model, x, t, k, tol=1e-5, seed=0, progress=False)
    assert angles(basis.v, embedded_exact.v[:k]).max() <= 1e-3
    assert ((basis.s.double() - s_all[:k]).abs() / s_all[:k]).max() <= 1e-4
    assert basis.meta["model"] == "shapes" and basis.meta["t"] == t and basis.meta["k"] == k


@pytest.fixture(scope="module")
def embedded_k10(shapes_model, noisy_x):
    x, t = noisy_x
    return local_basis(shapes_model, x, t, 10, seed=0, progress=False)


def test_default_tolerance_on_embedded_model(shapes_model, noisy_x, embedded_exact, embedded_k10):
    x, t = noisy_x
    basis = embedded_k10
    assert basis.residuals.max() <= diffgeo.geometry.basis.DEFAULT_TOL
    # Ritz values never exceed the true ones and converge quadratically: 1e-4 relative at tol 1e-3
    s_true = embedded_exact.s[:10].double()
    assert ((basis.s.double() - s_true).abs() / s_true).max() <= 1e-4
    # the claimed residuals are real: check them with fresh products
    f = h_map(shapes_model, x, t)
    jtjv = f.vjp(f.jvp(basis.v)).reshape(10, -1).double()
    resid = (jtjv - basis.s.double()[:, None] ** 2 * basis.v_flat.double()).norm(dim=1) / basis.s.double() ** 2
    assert torch.allclose(resid, basis.residuals.double(), rtol=0.05, atol=2e-5)


def test_u_is_jv_over_s_by_finite_differences(shapes_model, noisy_x, embedded_k10):
    x, t = noisy_x
    basis = embedded_k10
    for i in range(2):
        eps = 1e-2
        fd = (shapes_model.h(x + eps * basis.v[i:i + 1], t) - shapes_model.h(x - eps * basis.v[i:i + 1], t)) / (2 * eps)
        rel = (fd[0] - basis.s[i] * basis.u[i]).norm() / fd.norm()
        assert rel < 2e-2


# -- determinism, metadata, files ------------------------------------------------------------------
def test_same_seed_same_result_and_recorded_seed_reproduces():
    tiny = tiny_model(torch.float32)
    x = torch.randn(1, *tiny.x_shape, generator=torch.Generator().manual_seed(6))
    a = local_basis(tiny, x, 300, 2, seed=11, tol=1e-1, progress=False)
    b = local_basis(tiny, x, 300, 2, seed=11, tol=1e-1, progress=False)
    assert torch.equal(a.v, b.v) and torch.equal(a.s, b.s) and a.n_products == b.n_products
    c = local_basis(tiny, x, 300, 2, tol=1e-1, progress=False)
    assert isinstance(c.meta["seed"], int)
    d = local_basis(tiny, x, 300, 2, seed=c.meta["seed"], tol=1e-1, progress=False)
    assert torch.equal(c.v, d.v)


def test_save_and_load_round_trip(tiny, tmp_path):
    x = torch.randn(1, *tiny.x_shape, dtype=torch.float64)
    basis = local_basis(tiny, x, 300, 2, seed=0, tol=1e-2, progress=False)
    path = basis.save(tmp_path / "basis")
    back = LocalBasis.load(path)
    for name in ("v", "u", "s", "residuals", "x"):
        assert torch.equal(getattr(back, name), getattr(basis, name))
    assert back.meta == basis.meta and back.iterations == basis.iterations and back.n_products == basis.n_products
    assert back.meta["method"] == "block_krylov" and back.meta["t"] == 300 and back.meta["model"] == "tiny"


def test_text_unet_conditioning_is_passed_through():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=8, attention_head_dim=4).double()
    model = Model(unet, DDPMScheduler(num_train_timesteps=1000), name="tinytext")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 4, 4, generator=gen, dtype=torch.float64)
    e1, e2 = (torch.randn(1, 5, 16, generator=gen, dtype=torch.float64) for _ in range(2))
    b1 = local_basis(model, x, 500, 3, cond={"encoder_hidden_states": e1}, tol=1e-9, seed=0, block=8,
                     progress=False)
    b2 = local_basis(model, x, 500, 3, cond={"encoder_hidden_states": e2}, tol=1e-9, seed=0, block=8,
                     progress=False)
    ex1 = exact_basis(model, x, 500, 3, cond={"encoder_hidden_states": e1})
    assert angles(b1.v, ex1.v).max() < 1e-6 and torch.allclose(b1.s, ex1.s, rtol=1e-9)
    assert not torch.allclose(b1.s, b2.s)  # the conditioning reaches the map
    v = torch.randn(1, 4, 4, 4, generator=gen, dtype=torch.float64)
    fd = (model.h(x + 1e-5 * v, 500, cond={"encoder_hidden_states": e1})
          - model.h(x - 1e-5 * v, 500, cond={"encoder_hidden_states": e1})) / 2e-5
    assert torch.allclose(jvp(model, x, 500, v, cond={"encoder_hidden_states": e1}), fd, rtol=1e-6,
                          atol=1e-8 * fd.abs().max())


# -- bad input -------------------------------------------------------------------------------------
def test_bad_inputs_have_clear_messages(shapes_model):
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="k must be >= 1"):
        local_basis(shapes_model, x, 500, 0, progress=False)
    with pytest.raises(ValueError, match="exceeds the rank bound"):
        local_basis(shapes_model, x, 500, 3073, progress=False)
    with pytest.raises(ValueError, match="one sample"):
        local_basis(shapes_model, torch.zeros(2, 3, 32, 32), 500, 2, progress=False)
    with pytest.raises(ValueError, match="shape"):
        local_basis(shapes_model, torch.zeros(1, 3, 16, 16), 500, 2, progress=False)
    for bad_t in (1000, -1):
        with pytest.raises(ValueError, match="outside the schedule"):
            local_basis(shapes_model, x, bad_t, 2, progress=False)
    with pytest.raises(TypeError, match="integer"):
        local_basis(shapes_model, x, 2.5, 2, progress=False)
    for bad_tol in (0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="tol must be a positive"):
            local_basis(shapes_model, x, 500, 2, tol=bad_tol, progress=False)
    with pytest.raises(ValueError, match="t is only meaningful"):
        local_basis(lambda x: x, torch.zeros(3), 10, 1, progress=False)


def test_non_finite_products_name_t_and_what_to_try(shapes_model, monkeypatch):
    real = shapes_model.h_fn
    monkeypatch.setattr(shapes_model, "h_fn", lambda x, t, cond=None: real(x, t, cond) * torch.exp(x.sum() * 1e4))
    with pytest.raises(FloatingPointError, match=r"t=500.*(float32|timestep)"):
        local_basis(shapes_model, torch.ones(1, 3, 32, 32), 500, 2, progress=False)


@pytest.mark.parametrize("block", [1, 3])
def test_block_smaller_than_k(block):
    a_mat, _, s_t, v_true = matrix_with_svd([9.0, 7.0, 6.0, 4.0, 3.0, 2.0, 1.0], m=30, n=20, seed=7)
    basis = local_basis(lambda x: a_mat @ x, torch.zeros(20, dtype=torch.float64), None, 5, block=block, tol=1e-10,
                        max_iter=60, seed=0, progress=False)
    assert basis.k == 5 and torch.allclose(basis.s, s_t[:5], rtol=1e-10)
    assert angles(basis.v, v_true[:, :5].T).max() < 1e-7


# -- warm starts (bases along trajectories) -------------------------------------------------------
def _log_spectrum_map(n=100, m=120, seed=8):
    """A linear map with singular values 10 .. 0.1 (log-spaced, all simple) and its exact SVD."""
    s = torch.logspace(1, -1, n, dtype=torch.float64).tolist()
    return matrix_with_svd(s, m=m, n=n, seed=seed)


def test_warm_start_from_the_exact_basis_needs_fewer_products_for_the_same_answer():
    a_mat, u_true, s_t, v_true = _log_spectrum_map()
    f, x0, k = (lambda x: a_mat @ x), torch.zeros(100, dtype=torch.float64), 5
    cold = local_basis(f, x0, None, k, tol=1e-10, seed=0, progress=False)
    gen = torch.Generator().manual_seed(9)
    near = v_true[:, :k].T + 1e-3 * torch.randn(k, 100, generator=gen, dtype=torch.float64)
    # from the answer: one block product and the Rayleigh-Ritz check; from 1e-3 away: still fewer than cold
    for init, share in ((v_true[:, :k].T, 0.25), (near, 1.0)):
        warm = local_basis(f, x0, None, k, tol=1e-10, seed=0, progress=False, init=init)
        assert warm.meta["warm"] and warm.n_products < share * cold.n_products
        for basis in (cold, warm):
            assert angles(basis.v, v_true[:, :k].T).max() < 1e-8
            assert torch.allclose(basis.s, s_t[:k], rtol=1e-10)


@pytest.mark.parametrize("start", ["random", "orthogonal_to_answer", "bottom_singular_vectors", "fewer_than_k"])
def test_warm_start_from_a_bad_subspace_still_finds_the_exact_basis(start):
    # the complement of the top-k space is invariant under A^T A: a start inside it never leaves it
    # unless the solver adds directions of its own (the random guard vectors)
    a_mat, _, s_t, v_true = _log_spectrum_map()
    f, x0, k = (lambda x: a_mat @ x), torch.zeros(100, dtype=torch.float64), 5
    gen = torch.Generator().manual_seed(10)
    rand = torch.randn(k, 100, generator=gen, dtype=torch.float64)
    top = v_true[:, :k]
    init = {"random": rand, "orthogonal_to_answer": rand - (rand @ top) @ top.T,
            "bottom_singular_vectors": v_true[:, -k:].T, "fewer_than_k": (rand - (rand @ top) @ top.T)[:2]}[start]
    assert (init @ top).abs().max() < 1e-12 or start == "random"
    basis = local_basis(f, x0, None, k, tol=1e-10, seed=0, max_iter=60, progress=False, init=init)
    assert angles(basis.v, top.T).max() < 1e-7
    assert torch.allclose(basis.s, s_t[:k], rtol=1e-10)


def test_warm_start_from_the_exact_basis_on_embedded_model(shapes_model, noisy_x, embedded_exact, embedded_k10):
    x, t = noisy_x
    warm = local_basis(shapes_model, x, t, 10, seed=0, progress=False, init=embedded_exact.v[:10])
    assert warm.residuals.max() <= diffgeo.geometry.basis.DEFAULT_TOL
    assert warm.n_products < embedded_k10.n_products
    # as accurate as the cold basis (a 1e-4 rad floor for float32 products)
    cold_angle = angles(embedded_k10.v, embedded_exact.v[:10]).max()
    assert angles(warm.v, embedded_exact.v[:10]).max() <= max(float(cold_angle), 1e-4)
