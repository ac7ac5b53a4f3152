"""The attribute probe and the validity criterion, on held-out and corrupted scenes; sample quality."""

from __future__ import annotations

import pytest
import torch

from diffgeo.data.shapes import make_scenes, render
from diffgeo.probe import VALID_RMSE, evaluate_probe, load_probe, validity

HELD_OUT_SEED = 4242  # training draws seeds >= 10_000_000


@pytest.fixture(scope="module")
def held_out():
    return make_scenes(1000, seed=HELD_OUT_SEED)


def test_probe_reads_factors_of_held_out_scenes(held_out):
    pred = load_probe().predict(held_out.images)
    true = held_out.factors
    assert (pred.shape == true.shape).float().mean() >= 0.99
    assert (pred.colour == true.colour).float().mean() >= 0.99
    for name, max_mae in (("size", 0.2), ("x", 0.2), ("y", 0.2), ("background", 0.02)):
        mae = (getattr(pred, name) - getattr(true, name)).abs().mean()
        assert mae <= max_mae, (name, mae)


def test_validity_accepts_held_out_real_scenes(held_out):
    assert validity(held_out.images).rate >= 0.98


def _two_objects(n: int, seed: int) -> torch.Tensor:
    a, b = make_scenes(n, seed=seed), make_scenes(n, seed=seed + 1)
    # second object moved to a far corner region so the two do not coincide
    fb = b.factors.replace(x=torch.where(a.factors.x > 16, b.factors.x - 7, b.factors.x + 7),
                           y=torch.where(a.factors.y > 16, b.factors.y - 7, b.factors.y + 7),
                           background=a.factors.background, size=b.factors.size.clamp(max=6))
    other = render(fb)
    mask = (other - fb.background[:, None, None, None]).abs().sum(1, keepdim=True) > 0.3
    return torch.where(mask, other, a.images)


@pytest.mark.parametrize("corruption", ["two_objects", "blend", "noise"])
def test_validity_rejects_corrupted_scenes(corruption):
    n = 300
    if corruption == "two_objects":
        images = _two_objects(n, seed=50)
    elif corruption == "blend":
        images = 0.5 * make_scenes(n, seed=60).images + 0.5 * make_scenes(n, seed=61).images
    else:
        x = make_scenes(n, seed=70).images
        images = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    result = validity(images)
    assert 1 - result.rate >= 0.95, f"only {1 - result.rate:.1%} of {corruption} images rejected"


def test_threshold_is_stated():
    assert 0 < VALID_RMSE < 0.2


def test_evaluate_probe_agrees_with_direct_scoring():
    metrics = evaluate_probe(load_probe(), n=200, seed=HELD_OUT_SEED)
    scenes = make_scenes(200, seed=HELD_OUT_SEED)
    pred = load_probe().predict(scenes.images)
    assert metrics["shape_accuracy"] == pytest.approx(float((pred.shape == scenes.factors.shape).float().mean()))
