"""Scheduler fidelity: diffgeo's one DDIM loop against diffusers on real scheduler configurations.

References (never diffgeo itself): ``StableDiffusionPipeline(..., output_type="latent")`` on a tiny random
pipeline with Stable Diffusion 1.5's scheduler config (``set_alpha_to_one: false``, ``steps_offset: 1``,
scaled-linear betas 0.00085-0.012), built offline in the test; ``DDIMScheduler.step`` driven by hand with the
same U-Net for the other options (timestep spacings, prediction types, zero-SNR betas, final alpha);
``DDIMPipeline`` on the embedded ``shapes``.

Tolerances: the issue's 1e-4 on latents of magnitude ~1 (float32; the operation order differs from
diffusers', so each step carries ~1e-6 of rounding). Before the fix the SD config differed by 4e-2.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

import diffgeo
from diffgeo.sampling.ddim import CLEAN, final_abar, prev_timesteps
from conftest import tiny_unet_config
from test_text_models import _randomise, sd_folder  # noqa: F401 (sd_folder: the shared tiny SD fixture)

SD15 = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
            clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
            timestep_spacing="leading")
TOL = 1e-4


@pytest.fixture(scope="module")
def sd15(sd_folder):  # noqa: F811 (the imported fixture, by name)
    """(diffgeo Model, StableDiffusionPipeline) of the tiny random SD pipeline of test_text_models, whose scheduler
    config is Stable Diffusion 1.5's (checked here, so a change there cannot silently weaken these tests)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None, requires_safety_checker=False,
                                                   use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    assert {k: pipe.scheduler.config[k] for k in SD15} == SD15
    return diffgeo.load(sd_folder, device="cpu"), pipe


@pytest.mark.parametrize("steps", [5, 20])
@pytest.mark.parametrize("scale", [1.0, 7.5])
def test_sample_equals_stable_diffusion_pipeline_with_sd15_scheduler(sd15, steps, scale):
    model, pipe = sd15
    assert not model.scheduler.config.set_alpha_to_one and model.scheduler.config.steps_offset == 1
    prompts = ["a red circle", "a blue square"]
    x_T = torch.randn(2, *model.x_shape, generator=torch.Generator().manual_seed(steps))
    with torch.no_grad():
        ref = pipe(prompt=prompts, latents=x_T.clone(), num_inference_steps=steps, guidance_scale=scale, eta=0.0,
                   output_type="latent").images
        ours = diffgeo.sample(model, noise=x_T, prompt=prompts, negative_prompt="", guidance_scale=scale,
                              steps=steps, progress=False)
    assert ours.timesteps[:-1].tolist() == pipe.scheduler.timesteps.tolist()
    err = (ours.result - ref).abs().max().item()
    assert err <= TOL, f"max |diffgeo - StableDiffusionPipeline| = {err:.2e} at {steps} steps, guidance {scale}"


def test_the_last_step_goes_to_alphas_cumprod_0_not_1(sd15):
    """SD's set_alpha_to_one=false: the clean end has alpha-bar alphas_cumprod[0] (diffusers' final_alpha_cumprod)."""
    model, _ = sd15
    ref = DDIMScheduler(**SD15)
    assert final_abar(model) == pytest.approx(float(ref.final_alpha_cumprod), abs=1e-7)
    assert final_abar(model) < 1 - 5e-4  # alphas_cumprod[0] = 1 - 0.00085


def test_inversion_round_trips_on_the_sd15_grid(sd15):
    """invert then sample on the same grid (steps_offset 1, final alpha < 1) gives the latents back."""
    model, _ = sd15
    with torch.no_grad():
        x0 = diffgeo.sample(model, noise=torch.randn(2, *model.x_shape, generator=torch.Generator().manual_seed(4)),
                            prompt="", steps=10, progress=False).result
        inv = diffgeo.invert(model, x0, prompt="", steps=10, progress=False)
        back = diffgeo.sample(model, noise=inv.result, prompt="", steps=10, progress=False).result
    assert inv.timesteps.tolist() == [CLEAN] + ddim_grid(model, 10)[::-1]
    err = (back - x0).pow(2).mean().sqrt().item()
    assert err <= 1e-3, f"round-trip RMSE {err:.2e}"  # the solve's tol is 1e-6 per step; 1e-3 leaves 1000x


def ddim_grid(model, steps):
    return diffgeo.ddim_timesteps(model, steps).tolist()


# -- the other options, against DDIMScheduler.step driven by hand ------------------------------------------------
def _hand_ddim(unet, sched_cfg, x_T, steps):
    """diffusers' reference: DDIMScheduler.step over its own grid; returns the final state."""
    sched = DDIMScheduler.from_config(sched_cfg)
    sched.set_timesteps(steps)
    x = x_T
    for t in sched.timesteps:
        out = unet(x, t.expand(x.shape[0])).sample
        x = sched.step(out, t, x, eta=0.0).prev_sample
    return x, sched.timesteps.tolist()


@pytest.fixture(scope="module")
def pixel_unet():
    torch.manual_seed(0)
    unet = UNet2DModel(**tiny_unet_config(sample_size=8)).eval()
    _randomise(unet, 5)
    return unet


CONFIGS = {  # name: (scheduler overrides, steps); 7 and 3 steps do not divide T, so trailing/linspace step off-grid
    "leading-offset1-final-a0": (dict(steps_offset=1, set_alpha_to_one=False), 7),
    "trailing-7": (dict(timestep_spacing="trailing"), 7),
    "trailing-3-final-a0": (dict(timestep_spacing="trailing", set_alpha_to_one=False), 3),
    "linspace-5": (dict(timestep_spacing="linspace"), 5),
    "v-prediction": (dict(prediction_type="v_prediction", set_alpha_to_one=False), 6),
    "sample-prediction": (dict(prediction_type="sample"), 6),
    "zero-snr-v": (dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", steps_offset=1), 5),
    "scaled-linear-clip": (dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                clip_sample=True), 8),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loop_follows_ddimscheduler_step_for_every_option(pixel_unet, name):
    overrides, steps = CONFIGS[name]
    # built, not copied: a copied config's _use_default_values would make from_config drop the overrides
    cfg = DDIMScheduler(**{"num_train_timesteps": 1000, "clip_sample": False, **overrides}).config
    model = diffgeo.Model(pixel_unet, DDIMScheduler.from_config(cfg), name=name)
    x_T = torch.randn(2, *model.x_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, grid = _hand_ddim(pixel_unet, cfg, x_T, steps)
        ours = diffgeo.sample(model, noise=x_T, steps=steps, use_clipped_model_output=False, progress=False)
    assert ours.timesteps[:-1].tolist() == grid
    scale = max(1.0, float(ref.abs().max()))
    err = (ours.result - ref).abs().max().item() / scale
    assert err <= TOL, f"{name}: max |diffgeo - DDIMScheduler.step| = {err:.2e} (relative to {scale:.2g})"


def test_zero_snr_grid_reaching_alpha_bar_0_is_refused_before_work(pixel_unet):
    """rescale_betas_zero_snr + trailing spacing evaluates t = T-1 where alpha-bar is 0: a clear error, not NaN."""
    sched = DDIMScheduler(rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction",
                          clip_sample=False)
    assert float(sched.alphas_cumprod[-1]) == 0.0
    model = diffgeo.Model(pixel_unet, sched, name="zsnr")
    with pytest.raises(ValueError, match="alpha-bar is 0 at t=999.*timestep_spacing='leading'"):
        diffgeo.sample(model, 1, steps=5, progress=False)


def test_prev_timesteps_are_diffusers_prev_timestep():
    """The trailing 3-step grid [999, 666, 332]: diffusers steps 666 -> 333 (t - T // S), not to the grid's 332."""
    model = diffgeo.Model(UNet2DModel(**tiny_unet_config(sample_size=8)),
                          DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing"), name="trailing")
    assert prev_timesteps(model, 3) == {999: 666, 666: 333, 332: CLEAN}


def test_shapes_matches_ddimpipeline(shapes_model):
    """The embedded shapes model through diffusers' own DDIMPipeline (its noise from the same CPU generator)."""
    pipe = DDIMPipeline(unet=shapes_model.unet, scheduler=DDIMScheduler.from_config(shapes_model.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), eta=0.0, num_inference_steps=10,
                   output_type="np").images
        x_T = torch.randn(2, *shapes_model.x_shape, generator=torch.Generator().manual_seed(3))
        ours = diffgeo.sample(shapes_model, noise=x_T, steps=10, use_clipped_model_output=False, progress=False)
    ours_np = (ours.result / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    err = float(abs(ours_np - ref).max())
    assert err <= TOL, f"max |diffgeo - DDIMPipeline| = {err:.2e}"


def test_asyrp_and_inversion_follow_the_same_grid(pixel_unet):
    """On a grid where diffusers steps off the grid points (trailing, 3 steps, final alpha alphas_cumprod[0]):
    Asyrp at strength 0 is DDIMScheduler.step's path, and plain inversion retraces it backwards exactly when
    fed the sampler's own eps (checked through its first step, which undoes the final step's alpha-bar)."""
    from diffgeo.editing.hspace import asyrp

    overrides, steps = CONFIGS["trailing-3-final-a0"]
    cfg = DDIMScheduler(**{"num_train_timesteps": 1000, "clip_sample": False, **overrides}).config
    model = diffgeo.Model(pixel_unet, DDIMScheduler.from_config(cfg), name="trailing3")
    x_T = torch.randn(2, *model.x_shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, _ = _hand_ddim(pixel_unet, cfg, x_T, steps)
        ours = asyrp(model, x_T, torch.zeros(model.h_shape), strength=0.0, t_edit=500, t_boost=0, steps=steps,
                     progress=False)
        inv = diffgeo.invert(model, ours.result, steps=steps, progress=False)
        back = diffgeo.sample(model, noise=inv.result, steps=steps, progress=False).result
    err = (ours.result - ref).abs().max().item() / max(1.0, float(ref.abs().max()))
    assert err <= TOL, f"Asyrp at strength 0 vs DDIMScheduler.step: {err:.2e}"
    rt = (back - ours.result).abs().max().item() / max(1.0, float(ours.result.abs().max()))
    assert rt <= 1e-3, f"invert then sample on the trailing grid: {rt:.2e}"  # solve tol 1e-6 per step
