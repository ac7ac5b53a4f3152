"""Sample quality of the embedded shapes model: validity and factor distribution (512 samples)."""

from __future__ import annotations

import pytest
import torch

from diffgeo.data.shapes import sample_factors
from diffgeo.evaluate import evaluate_samples, ks_statistic


@pytest.fixture(scope="module")
def report(shapes_model):
    return evaluate_samples(shapes_model, n=512, steps=50, progress=False)


def test_at_least_90_percent_of_512_samples_are_valid(report):
    assert report.n == 512
    assert report.valid_rate >= 0.90, report.valid_rate


# Measured on the shipped 4,750-step model (figures/shapes_quality.json): colour TV 0.05, x KS 0.05,
# y KS 0.05 match the training distribution; shape (triangles 52%, TV 0.19), size (skewed small,
# KS 0.29) and background (collapsed towards mid-grey, KS 0.65) do not. Without x0 clipping the
# backgrounds cover their range but only 17% of samples are valid. Those three factors are an
# open shortfall (see the issue note), not asserted here.
def test_generated_colours_match_training_frequencies(report):
    assert report.class_tv["colour"] <= 0.1, report.class_frequencies["colour"]


@pytest.mark.parametrize("name", ["x", "y"])
def test_generated_positions_match_training_distribution(report, name):
    assert report.continuous_ks[name] <= 0.15, (name, report.continuous_ks[name])


def test_ks_statistic_against_scipy():
    from scipy.stats import ks_2samp

    a, b = sample_factors(300, seed=1).x.double(), sample_factors(200, seed=2).x.double() * 1.05
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a.numpy(), b.numpy()).statistic, abs=1e-9)
    assert ks_statistic(a, a + 100) == 1.0
    assert ks_statistic(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])) == 0.0
