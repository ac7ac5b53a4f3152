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


def test_generated_classes_match_training_frequencies(report):
    # Training classes are uniform; the total-variation distance to uniform must be small.
    for name, tv in report.class_tv.items():
        assert tv <= 0.1, (name, report.class_frequencies[name])


def test_generated_continuous_factors_match_training_distribution(report):
    for name, ks in report.continuous_ks.items():
        assert ks <= 0.15, (name, ks)


def test_ks_statistic_against_scipy():
    from scipy.stats import ks_2samp

    a, b = sample_factors(300, seed=1).x.double(), sample_factors(200, seed=2).x.double() * 1.05
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a.numpy(), b.numpy()).statistic, abs=1e-9)
    assert ks_statistic(a, a + 100) == 1.0
    assert ks_statistic(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])) == 0.0
