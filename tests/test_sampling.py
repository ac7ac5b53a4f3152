"""DDIM sampling and inversion against diffusers, a closed-form Gaussian model, and the embedded model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler, UNet2DModel

import diffgeo
from diffgeo.sampling.ddim import CLEAN, Trajectory, ddim_timesteps
from conftest import tiny_unet_config

#: Fixed-point inversion then sampling on the embedded model's own samples (10 steps each way)
#: measured RMSE 0.0016 and 0.0022 over 8 samples each (seeds 3 and 4; per sample at most 0.0047);
#: plain DDIM inversion gives 0.28. The bound is 10x the measured values and 1/10 of plain DDIM's.
#: The exact inverse is checked on the Gaussian model.
RECONSTRUCTION_RMSE_BOUND = 0.02


# -- step-for-step against diffusers ---------------------------------------------------------
@pytest.mark.parametrize("eta, steps, clipped_eps", [(0.0, 10, False), (0.0, 7, False), (0.6, 10, False),
                                                     (0.0, 10, True), (0.6, 10, True)])
def test_matches_diffusers_ddim_step_for_step(shapes_model, eta, steps, clipped_eps):
    m = shapes_model
    assert m.scheduler.config.clip_sample  # so that use_clipped_model_output changes the path
    g = torch.Generator().manual_seed(11)
    x_T = torch.randn(2, *m.x_shape, generator=g)
    with torch.no_grad():
        ours = diffgeo.sample(m, noise=x_T, steps=steps, eta=eta, seed=5, progress=False,
                              use_clipped_model_output=clipped_eps)
    sched = DDIMScheduler.from_config(m.scheduler.config)
    sched.set_timesteps(steps)
    assert ours.timesteps[:-1].tolist() == sched.timesteps.tolist()
    g_ref = torch.Generator().manual_seed(5)  # our sampler draws its step noise from the seed in order
    x = x_T
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            eps = m.unet(x, t.expand(2)).sample
            z = torch.randn(x.shape, generator=g_ref) if eta > 0 else None
            out = sched.step(eps, t, x, eta=eta, variance_noise=z, use_clipped_model_output=clipped_eps)
            # Float32 rounding (a different operation order than diffusers) is ~1e-6 per step, and what
            # a step starts from is carried on by the rest of the path. x0 = (x_t - sqrt(1-a) eps) /
            # sqrt(a) magnifies it by 1/sqrt(a) and the network: 1e-4 there. The states: on the
            # 7,050-step shapes they stayed within 2e-6; the 9,050-step one is more sensitive at low t
            # and carries 7e-7 at t=900 to 1.6e-5 at t=100 (10 steps, raw eps; the same comparison in
            # float64 agrees to 2.5e-14, so this is rounding, not a different formula). With eps
            # recomputed from the clipped x0, eps = (x_t - sqrt(a) x0) / sqrt(1-a) feeds the x0
            # rounding back into the state, amplified by sqrt(a / (1-a)) (about 2.6 at t=100). 5e-5 for
            # both: 3x the largest drift measured.
            assert close(ours.x0_preds[i], out.pred_original_sample, tol=1e-4), f"x0 at step {i}"
            x = out.prev_sample
            assert close(ours.xs[i + 1], x, tol=5e-5), f"x at step {i}"


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    """Equal to 1e-5 relative to the tensor's scale (float32 arithmetic in a different order)."""
    return bool((a - b).abs().max() <= tol * max(1.0, float(b.abs().max())))


# -- a model whose eps is known in closed form ----------------------------------------------
class GaussianScoreUNet(UNet2DModel):
    """eps(x_t, t) exact for data N(mu, Sigma): sqrt(1 - a) C_t^{-1} (x_t - sqrt(a) mu), C_t = a Sigma + (1 - a) I."""

    def setup(self, mu, sigma, alphas_cumprod):
        self.mu, self.sigma, self.abar = mu, sigma, alphas_cumprod

    def forward(self, sample, timestep, *args, **kwargs):
        b = sample.shape[0]
        x = sample.reshape(b, -1).double()
        d = x.shape[1]
        out = torch.empty_like(x)
        for tt in timestep.unique():
            a = self.abar[tt]
            sel = timestep == tt
            cov = a * self.sigma + (1 - a) * torch.eye(d, dtype=torch.float64)
            out[sel] = (1 - a) ** 0.5 * torch.linalg.solve(cov, (x[sel] - a**0.5 * self.mu).T).T
        return SimpleNamespace(sample=out.reshape(sample.shape).to(sample.dtype))


@pytest.fixture(scope="module")
def gaussian_model():
    unet = GaussianScoreUNet(sample_size=2, in_channels=1, out_channels=1, layers_per_block=1,
                             block_out_channels=(8,), down_block_types=("DownBlock2D",),
                             up_block_types=("UpBlock2D",), norm_num_groups=4).double()
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4, generator=g, dtype=torch.float64) * 2
    a = torch.randn(4, 4, generator=g, dtype=torch.float64)
    sigma = a @ a.T / 4 + 0.1 * torch.eye(4, dtype=torch.float64)
    unet.setup(mu, sigma, sched.alphas_cumprod.double())
    return diffgeo.models.model.Model(unet, sched, name="gaussian"), mu, sigma


def exact_flow_map(x_T, t_start, model, mu, sigma):
    """The probability-flow ODE from t_start to 0 for Gaussian data, in closed form.

    It keeps the eigenvectors of Sigma and rescales each coordinate: with a = alpha-bar(t_start),
    x_0 = mu + U diag(sqrt(lam / (a lam + 1 - a))) U^T (x_T - sqrt(a) mu).
    """
    a = float(model.alphas_cumprod[t_start])
    lam, u = torch.linalg.eigh(sigma)
    scale = (lam / (a * lam + 1 - a)).sqrt()
    z = x_T.reshape(len(x_T), -1) - a**0.5 * mu
    return mu + (z @ u) * scale @ u.T


def test_deterministic_ddim_converges_to_the_exact_flow_map(gaussian_model):
    model, mu, sigma = gaussian_model
    x_T = torch.randn(256, 1, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    errors = {}
    for steps in (50, 200):
        t_start = int(ddim_timesteps(model, steps)[0])
        with torch.no_grad():
            x0 = diffgeo.sample(model, noise=x_T, steps=steps, progress=False).result.reshape(256, 4)
        errors[steps] = float((x0 - exact_flow_map(x_T, t_start, model, mu, sigma)).abs().max())
    # DDIM is a first-order solver: 4x the steps gives about 1/4 of the error.
    assert errors[200] < 0.35 * errors[50], errors
    assert errors[200] < 0.05, errors


def test_deterministic_ddim_carries_noise_to_the_data_gaussian(gaussian_model):
    model, mu, sigma = gaussian_model
    with torch.no_grad():
        x0 = diffgeo.sample(model, 20000, steps=200, seed=0, progress=False).result.reshape(20000, 4)
    se = (sigma.diagonal() / 20000).sqrt()  # standard error of each mean
    # n=20000: the largest of 4 |z| exceeds 4.5 with probability 4 x 7e-6; the bound also absorbs
    # the 200-step discretisation bias (under 0.05 per coordinate, see the test above)
    assert ((x0.mean(0) - mu).abs() / se).max() < 4.5
    # a covariance entry's standard error sqrt((s_ii s_jj + s_ij^2) / n) is 0.004-0.010 of max|Sigma|
    # at n=20000: the 0.03 bound is 3 standard errors for one entry and 3.6-7 for the other nine
    # (chance of a false failure about 0.5%)
    cov_err = (torch.cov(x0.T) - sigma).abs().max() / sigma.abs().max()
    assert cov_err < 0.03, cov_err


def exact_inverse_flow_map(x0, t_start, model, mu, sigma):
    """The inverse of :func:`exact_flow_map`: x_T = sqrt(a) mu + U diag(1 / scale) U^T (x_0 - mu)."""
    a = float(model.alphas_cumprod[t_start])
    lam, u = torch.linalg.eigh(sigma)
    scale = (lam / (a * lam + 1 - a)).sqrt()
    return a**0.5 * mu + ((x0.reshape(len(x0), -1) - mu) @ u) / scale @ u.T


@pytest.mark.parametrize("method", ["fixed_point", "ddim"])
def test_gaussian_inversion_approaches_the_exact_inverse_map(gaussian_model, method):
    model, mu, sigma = gaussian_model
    n = 256 if method == "ddim" else 32  # fixed-point iterations cost; the normality check is on ddim's 256
    g = torch.Generator().manual_seed(2)
    data = mu + torch.randn(n, 4, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(sigma).T
    data = data.reshape(n, 1, 2, 2)
    errors, round_trip = {}, {}
    for steps in (50, 200):
        t_start = int(ddim_timesteps(model, steps)[0])
        with torch.no_grad():
            inv = diffgeo.invert(model, data, steps=steps, method=method, progress=False)
            rec = diffgeo.sample(model, noise=inv.result, steps=steps, progress=False).result
        assert inv.timesteps[0] == CLEAN and inv.timesteps[-1] == t_start
        exact = exact_inverse_flow_map(data, t_start, model, mu, sigma)
        errors[steps] = float((inv.result.reshape(n, 4) - exact).abs().max())
        round_trip[steps] = float((rec - data).abs().max())
    # A first-order solver of the probability-flow ODE: 4x the steps gives about 1/4 of the error.
    assert errors[200] < 0.35 * errors[50] and errors[200] < 0.07, errors
    if method == "fixed_point":  # inverts the discrete sampler itself, up to its tolerance
        assert max(round_trip.values()) < 0.03, round_trip
    else:  # plain inversion inverts the ODE, not the sampler: the round trip is first order too
        assert round_trip[200] < 0.35 * round_trip[50], round_trip
    if method == "ddim":
        # n=256 inverted data are about standard normal: the standard error of a mean is 0.0625 and
        # of a standard deviation 0.044, so 0.3 is 4.8 and 6.8 of them
        latent = inv.result.reshape(n, 4)
        assert latent.std(0).sub(1).abs().max() < 0.3 and latent.mean(0).abs().max() < 0.3


# -- the embedded model ---------------------------------------------------------------------
def test_inversion_then_sampling_reconstructs_own_samples(shapes_model):
    with torch.no_grad():
        x0 = diffgeo.sample(shapes_model, 4, steps=10, seed=3, progress=False).result
        inv = diffgeo.invert(shapes_model, x0, steps=10, progress=False)
        rec = diffgeo.sample(shapes_model, noise=inv.result, steps=10, progress=False).result
    rmse = (rec - x0).pow(2).mean().sqrt()
    assert rmse < RECONSTRUCTION_RMSE_BOUND, rmse


def reference_ddim(unet, alphas_cumprod, x, timesteps, clip=1.0, prediction_type="epsilon", clipped_eps=False):
    """Deterministic DDIM written here from the formulas in docs/science.md: P_t(eps) =
    (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), clipped to [-clip, clip] (the model's clip_sample), then
    x_prev = sqrt(a_prev) P_t + sqrt(1 - a_prev) eps with the unclipped eps (``clipped_eps``: eps
    recomputed from the clipped x0, (x_t - sqrt(a_t) P_t) / sqrt(1 - a_t)); a_prev = 1 after t = 0.
    A v-prediction U-Net's output is converted first: eps = sqrt(a_t) v + sqrt(1 - a_t) x_t."""
    for t, t_prev in zip(timesteps[:-1], timesteps[1:]):
        a = alphas_cumprod[t].double()
        a_prev = alphas_cumprod[t_prev].double() if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        eps = unet(x, torch.full((len(x),), t)).sample.double()
        if prediction_type == "v_prediction":
            eps = a.sqrt() * eps + (1 - a).sqrt() * x.double()
        x0 = ((x.double() - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-clip, clip)
        if clipped_eps:
            eps = (x.double() - a.sqrt() * x0) / (1 - a).sqrt()
        x = (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).to(x.dtype)
    return x


@pytest.mark.parametrize("t, grid, clipped", [
    (500, [500, 400, 300, 200, 100, 0, -1], None),          # on the 10-step grid; the model's default eps
    (515, [515, 500, 400, 300, 200, 100, 0, -1], False)])  # off it: joins the grid; the raw eps
def test_denoise_from_an_intermediate_t_matches_a_hand_written_ddim(shapes_model, t, grid, clipped):
    m = shapes_model
    assert m.scheduler.config.clip_sample and m.scheduler.config.clip_sample_range == 1.0
    abar = DDIMScheduler.from_config(m.scheduler.config).alphas_cumprod  # diffusers' schedule, not ours
    from diffgeo.data.shapes import make_scenes

    g = torch.Generator().manual_seed(1)
    x_t = abar[t].sqrt() * make_scenes(2, seed=8).images + (1 - abar[t]).sqrt() * torch.randn(2, 3, 32, 32, generator=g)
    with torch.no_grad():
        tr = diffgeo.denoise(m, x_t, t, steps=10, progress=False, use_clipped_model_output=clipped)
        # the embedded models' zoo entry makes None mean the clipped eps (diffgeo.models.zoo, clipped_eps=True)
        ref = reference_ddim(m.unet, abar, x_t, grid, prediction_type=m.prediction_type,
                             clipped_eps=clipped is None)
    assert tr.timesteps.tolist() == grid
    assert close(tr.result, ref), float((tr.result - ref).abs().max())


def test_same_seed_same_samples_and_generator_equivalence(shapes_model):
    with torch.no_grad():
        a = diffgeo.sample(shapes_model, 2, steps=5, eta=1.0, seed=9, progress=False).result
        b = diffgeo.sample(shapes_model, 2, steps=5, eta=1.0, seed=9, progress=False).result
        c = diffgeo.sample(shapes_model, 2, steps=5, eta=1.0, generator=torch.Generator().manual_seed(9),
                           progress=False).result
        d = diffgeo.sample(shapes_model, 2, steps=5, eta=1.0, seed=10, progress=False).result
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.allclose(a, d)


def test_callback_sees_every_step(shapes_model):
    seen = []
    with torch.no_grad():
        tr = diffgeo.sample(shapes_model, 1, steps=6, seed=0, progress=False, callback=seen.append)
    assert [d["i"] for d in seen] == list(range(6))
    assert [d["t"] for d in seen] == tr.timesteps[:-1].tolist()
    for d, x0 in zip(seen, tr.x0_preds):
        assert torch.equal(d["x0_pred"], x0)


def test_sampling_is_differentiable_and_matches_finite_differences(tmp_path):
    torch.manual_seed(0)
    unet = UNet2DModel(**tiny_unet_config(sample_size=8)).double()
    model = diffgeo.models.model.Model(unet, DDIMScheduler(num_train_timesteps=1000), name="tiny64")
    g = torch.Generator().manual_seed(4)
    x_T = torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    direction = torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64)
    f = lambda x: diffgeo.sample(model, noise=x, steps=4, progress=False).result.pow(2).sum()  # noqa: E731
    (grad,) = torch.autograd.grad(f(x_T), x_T)
    h = 1e-5
    with torch.no_grad():
        fd = (f(x_T + h * direction) - f(x_T - h * direction)) / (2 * h)
    assert torch.allclose((grad * direction).sum(), fd, rtol=1e-6)


def test_trajectory_save_load_roundtrip(tmp_path, shapes_model):
    with torch.no_grad():
        tr = diffgeo.sample(shapes_model, 2, steps=3, seed=0, progress=False)
    path = tr.save(tmp_path / "traj.safetensors")
    back = Trajectory.load(path)
    assert torch.equal(back.xs, tr.xs) and torch.equal(back.x0_preds, tr.x0_preds)
    assert torch.equal(back.timesteps, tr.timesteps) and back.meta == tr.meta
    assert back.meta["model"] == "shapes" and back.meta["seed"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["traj.safetensors"]  # no temporary left behind


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0), r"\bn must be"),
        (dict(n=2, steps=0), "steps must be"),
        (dict(n=2, steps=2000), "exceeds"),
        (dict(), "exactly one"),
        (dict(n=1, noise=torch.randn(1, 3, 32, 32)), "exactly one"),
        (dict(noise=torch.full((1, 3, 32, 32), float("nan"))), "NaN"),
        (dict(noise=torch.randn(1, 3, 16, 16)), r"expects \(B, 3, 32, 32\)"),
        (dict(n=1, eta=-1.0), "eta"),
    ],
)
def test_bad_sampling_input(shapes_model, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        diffgeo.sample(shapes_model, progress=False, **kwargs)


def test_bad_inversion_input(shapes_model):
    with pytest.raises(ValueError, match="x0 contains NaN"):
        diffgeo.invert(shapes_model, torch.full((1, 3, 32, 32), float("nan")), progress=False)
    with pytest.raises(ValueError, match="outside the schedule"):
        diffgeo.denoise(shapes_model, torch.randn(1, 3, 32, 32), 1000, progress=False)


def test_loading_a_trajectory_from_another_file(tmp_path):
    from diffgeo.core.io import save_tensors_json

    path = save_tensors_json(tmp_path / "x.safetensors", {"a": torch.zeros(1)}, {"kind": "LocalBasis"})
    with pytest.raises(ValueError, match="does not hold a Trajectory"):
        Trajectory.load(path)


def test_ddim_timesteps_leaves_the_model_scheduler_alone(shapes_model):
    sched = shapes_model.scheduler
    before = (sched.num_inference_steps, None if sched.timesteps is None else sched.timesteps.clone())
    assert diffgeo.ddim_timesteps(shapes_model, 7).tolist() == _diffusers_grid(shapes_model, 7)
    assert sched.num_inference_steps == before[0]
    assert (sched.timesteps is None) == (before[1] is None)
    if before[1] is not None:
        assert torch.equal(sched.timesteps, before[1])


def _diffusers_grid(model, steps):
    sched = DDIMScheduler.from_config(model.scheduler.config)
    sched.set_timesteps(steps)
    return sched.timesteps.tolist()


def test_one_loop_guards_and_reports_every_driver(shapes_model):
    # the blow-up guard and the callback live in ddim_loop, so x-space edits and Asyrp get them too
    from diffgeo.core.checks import NonFiniteError
    from diffgeo.editing.hspace import asyrp
    from diffgeo.editing.xspace import edit_x

    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), pytest.raises(NonFiniteError, match=r"x-space edit: the step edit at t=500 .*lower strength"):
        edit_x(shapes_model, x, 500, torch.ones(3, 32, 32), strength=1e20, steps=4, progress=False)
    with torch.no_grad(), pytest.raises(NonFiniteError, match=r"Asyrp blew up at step 0 \(t=750.*lower strength"):
        asyrp(shapes_model, x, torch.ones(128, 8, 8), strength=1e30, t_edit=500, t_boost=0, steps=4, progress=False)
    seen = []
    with torch.no_grad():
        tr = asyrp(shapes_model, x, torch.ones(128, 8, 8), strength=1.0, t_edit=500, t_boost=0, steps=4,
                   progress=False, callback=seen.append)
    assert [d["t"] for d in seen] == tr.timesteps[:-1].tolist() == [750, 500, 250, 0]
    edited = [not torch.equal(d["eps"], d["eps_direction"]) for d in seen]
    assert edited == [True, True, False, False]  # P_t sees the edited h on t >= t_edit only


def test_guard_on_the_device_reports_the_first_bad_step(shapes_model):
    """The flag is read every GUARD_EVERY steps and at the end, not per step; the error still names the first bad
    step and its t. Ground truth: a direction function that turns NaN from t = 498 on (step 2 of the 6-step grid
    830, 664, 498, ...): later steps are NaN too, the first is step 2."""
    from diffgeo.core.checks import NonFiniteError
    from diffgeo.editing.hspace import asyrp
    from diffgeo.sampling.ddim import GUARD_EVERY

    assert GUARD_EVERY > 6  # so that this blow-up is found at the end, after steps 3-5 ran on NaN
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    grid = _diffusers_grid(shapes_model, 6)
    bad_from = grid[2]

    def direction(t):
        return torch.full((1, 128, 8, 8), float("nan") if t <= bad_from else 0.0)

    with torch.no_grad(), pytest.raises(NonFiniteError, match=rf"blew up at step 2 \(t={bad_from} -> {grid[3]}\)"):
        asyrp(shapes_model, x, direction, strength=1.0, t_edit=0, t_boost=0, steps=6, progress=False)
