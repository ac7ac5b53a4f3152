"""Fixed-point inversion (diffgeo.invert): round trips on the embedded models, an exact inverse on
a closed-form check, and every unconverged step reported.

Cost: the issue's targets are 64 images x 50 steps; on this 2-core CPU that is minutes per case, so
the suite runs 2 images x 12 steps per case (the bound is per image, a max, not a mean: one image
over 0.02 fails it) and benchmarks/bench_editing.py measures the full 64 x 50 numbers.
"""

from __future__ import annotations

import logging

import pytest
import torch

import diffgeo
from diffgeo.data import shapes
from diffgeo.sampling import ddim_step

#: The issue's target, per image (max over images, not a mean).
ROUND_TRIP_RMSE = 0.02
STEPS = 12
N = 2
#: A seed never used in training: training draws scenes from seeds 0, 1, 2, ... (one per step,
#: a few thousand steps) and the probe from 10_000_000 + step; this is far from both.
UNSEEN_SEED = 987_654


def _rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).pow(2).mean(1).sqrt()


def _round_trip(model, x0, **kw):
    with torch.no_grad():
        inv = diffgeo.invert(model, x0, steps=STEPS, use_clipped_model_output=True, progress=False, **kw)
        back = diffgeo.sample(model, noise=inv.result, steps=STEPS, use_clipped_model_output=True,
                              progress=False, **kw).result
        plain = diffgeo.invert(model, x0, steps=STEPS, method="ddim", progress=False, **kw)
        back_plain = diffgeo.sample(model, noise=plain.result, steps=STEPS, use_clipped_model_output=True,
                                    progress=False, **kw).result
    return inv, _rmse(back, x0), _rmse(back_plain, x0)


@pytest.fixture(scope="module")
def own_samples(shapes_model):
    with torch.no_grad():
        return diffgeo.sample(shapes_model, N, steps=STEPS, seed=31, progress=False).result


def test_round_trip_of_own_samples(shapes_model, own_samples):
    inv, rmse, rmse_plain = _round_trip(shapes_model, own_samples)
    assert rmse.max() <= ROUND_TRIP_RMSE, rmse
    assert rmse_plain.mean() > 5 * rmse.mean(), (rmse_plain, rmse)  # plain inversion is far off
    assert len(inv.meta["iterations"]) == STEPS and len(inv.meta["residual"][0]) == N
    assert inv.meta["method"] == "fixed_point"


def test_round_trip_of_real_scenes(shapes_model):
    x0 = shapes.make_scenes(N, seed=UNSEEN_SEED).images
    _inv, rmse, rmse_plain = _round_trip(shapes_model, x0)
    assert rmse.max() <= ROUND_TRIP_RMSE, rmse
    assert rmse_plain.mean() > 5 * rmse.mean(), (rmse_plain, rmse)


def test_round_trip_of_real_digits_with_their_prompt():
    from diffgeo.data.digits import canonical_digit_caption, load_digits_images

    model = diffgeo.load("digits")
    d = load_digits_images()
    idx = torch.arange(N) * 97  # spread over the data set
    x0 = d.images[idx].clamp(-1, 1)
    prompts = [canonical_digit_caption(int(c)) for c in d.labels[idx]]
    _inv, rmse, _ = _round_trip(model, x0, prompt=prompts)
    assert rmse.max() <= ROUND_TRIP_RMSE, rmse


def test_each_step_solves_the_samplers_step(shapes_model, own_samples):
    """Independent check of what a converged step means: redo the sampler's forward step from the
    returned x_t with diffgeo's ddim_step and the model's eps, and land on x_{t-1}."""
    with torch.no_grad():
        inv = diffgeo.invert(shapes_model, own_samples[:2], steps=5, use_clipped_model_output=True, progress=False)
        ts = inv.timesteps.tolist()
        for i in range(2, 5):  # steps away from the clean end
            t, t_prev = ts[i + 1], ts[i]
            eps = shapes_model.eps(inv.xs[i + 1], t)
            a, ap = float(shapes_model.alphas_cumprod[t]), float(shapes_model.alphas_cumprod[t_prev])
            fwd, _ = ddim_step(inv.xs[i + 1], eps, a, ap, clip=1.0, use_clipped_model_output=True)
            res = _rmse(fwd, inv.xs[i])
            assert (res <= 1.5 * inv.meta["tol"]).all(), res  # the stop is RMS <= tol (float32 recompute)


def test_unconverged_steps_are_reported_never_silent(shapes_model, caplog):
    x0 = shapes.make_scenes(2, seed=UNSEEN_SEED).images
    with caplog.at_level(logging.WARNING, logger="diffgeo.sampling"), torch.no_grad():
        inv = diffgeo.invert(shapes_model, x0, steps=3, tol=1e-9, max_iter=1, progress=False)
    assert inv.meta["unconverged"], inv.meta
    first = inv.meta["unconverged"][0]
    assert {"step", "t", "residual", "samples"} <= set(first) and first["residual"] > 1e-9
    assert "did not converge" in caplog.text and f"t={first['t']}" in caplog.text


@pytest.mark.parametrize("kwargs, match", [
    (dict(x0=torch.full((1, 3, 32, 32), 1.5)), r"outside the model's clipping range"),
    (dict(x0=torch.zeros(1, 3, 16, 16)), r"expects \(B, 3, 32, 32\)"),
    (dict(x0=torch.zeros(1, 3, 32, 32), method="exact"), "method must be one of"),
    (dict(x0=torch.zeros(1, 3, 32, 32), tol=0.0), "tol must be a positive"),
    (dict(x0=torch.zeros(1, 3, 32, 32), max_iter=True), "max_iter must be an integer"),
    (dict(x0=torch.zeros(1, 3, 32, 32), use_clipped_model_output="no"), "use_clipped_model_output must be"),
])
def test_bad_inversion_input(shapes_model, kwargs, match):
    x0 = kwargs.pop("x0")
    with pytest.raises((ValueError, TypeError), match=match):
        diffgeo.invert(shapes_model, x0, progress=False, **kwargs)
