"""The claim record and its rules: versioned rule constants, verdicts on known intervals, the Asyrp statistics
on known answers, and the untrained-network null (same architecture, other weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffgeo.analyses import rules
from diffgeo.analyses.asyrp_objects import cv_effect, interaction_ratio, lack_of_fit
from diffgeo.analyses.curved import untrained_like
from diffgeo.analyses._common import load_model
from diffgeo.analyses.sizing import plan, target_half_width, units_needed
from diffgeo.analyses.rules import (RULE_CONSTANTS, RULE_TEXT, RULE_VERSIONS, TOO_FEW, UNTESTABLE, bound_verdict,
                                    equivalence_verdict, excess_verdict, measured_claim, permutation_verdict,
                                    rule_digest, untestable_claim)
from diffgeo.evaluation.stats import bca_interval


def test_rule_constants_cannot_change_without_a_new_version():
    """Changing a rule constant changes its digest: record a new version with the new digest in RULE_VERSIONS."""
    assert set(RULE_CONSTANTS) == set(RULE_VERSIONS) == set(RULE_TEXT)
    for name, versions in RULE_VERSIONS.items():
        assert sorted(versions) == list(range(1, len(versions) + 1)), f"{name}: versions must be 1, 2, ..."
        assert len(set(versions.values())) == len(versions), f"{name}: two versions share one digest"
        current = versions[max(versions)]
        assert rule_digest(name) == current, (f"rule {name!r}: its constants changed (digest {rule_digest(name)}) but "
                                              f"version {max(versions)} records {current}: add a new version")


def test_the_digest_sees_every_constant(monkeypatch):
    before = rule_digest("bound")
    monkeypatch.setitem(rules.BOUNDS, "4", 0.6)
    assert rule_digest("bound") != before
    monkeypatch.setitem(RULE_CONSTANTS["excess"], "min_units", 4)
    assert rule_digest("excess") != RULE_VERSIONS["excess"][max(RULE_VERSIONS["excess"])]


def test_verdicts_on_known_intervals():
    n = rules.MIN_UNITS
    assert excess_verdict(0.1, 0.2, n=n, sign=+1) == "reproduced"
    assert excess_verdict(0.1, 0.2, n=n, sign=-1) == "not reproduced"
    assert excess_verdict(-0.1, 0.2, n=n, sign=+1) == "inconclusive"
    assert excess_verdict(0.1, 0.2, n=n - 1, sign=+1) == TOO_FEW
    assert excess_verdict(float("nan"), 0.2, n=n, sign=+1) == "inconclusive"
    b = rules.BOUNDS["4"]
    assert bound_verdict(b - 0.2, b - 0.1, n=n, claim="4", side=-1) == "reproduced"
    assert bound_verdict(b - 0.1, b + 0.1, n=n, claim="4", side=-1) == "inconclusive"
    m = rules.BOUNDS["7e"]
    assert equivalence_verdict(-m / 2, m / 2, n=n, claim="7e") == "reproduced"
    assert equivalence_verdict(-2 * m, m / 2, n=n, claim="7e") == "inconclusive"
    assert equivalence_verdict(-3 * m, -2 * m, n=n, claim="7e") == "not reproduced"
    assert permutation_verdict(0.5, 0.01, n=n) == "not reproduced"


def test_claim_record_carries_source_null_excess_unit_and_rule_version():
    c = measured_claim("x", "a", "m", "s", "Paper, Sec. 1", "stat", value=0.9, null="random", null_value=0.95,
                       excess=(0.05, 0.01, 0.09), n=6, unit="samples", rule="excess", verdict="reproduced")
    d = json.loads(json.dumps(c.to_dict()))
    assert d["source"] == "Paper, Sec. 1" and d["null_value"] == 0.95 and d["excess"] == 0.05
    assert d["rule_version"] == f"excess v{max(RULE_VERSIONS['excess'])} ({rule_digest('excess')})"
    u = untestable_claim("3", "a", "m", "s", "Paper", "needs 6 trainings")
    assert u.verdict == UNTESTABLE and u.note == "needs 6 trainings" and u.value != u.value


def test_asyrp_statistics_on_known_answers():
    s = np.linspace(-2, 2, 9)
    assert lack_of_fit(s, np.stack([3 * s + 1] * 4, 1)) == pytest.approx(0.0, abs=1e-12)
    # a symmetric quadratic has no linear part: a line explains none of it
    assert lack_of_fit(s, np.stack([s ** 2] * 4, 1)) == pytest.approx(1.0)
    assert cv_effect(np.array([2.0, 2.0, 2.0])) == 0.0
    assert cv_effect(np.array([1.0, 3.0])) == pytest.approx(np.std([1.0, 3.0], ddof=1) / 2.0)
    zero, one = np.zeros(5), np.ones(5)
    assert interaction_ratio(zero, one, one, 2 * one) == 0.0         # additive
    assert interaction_ratio(zero, one, one, one) == -1.0            # b cancels a when combined
    assert np.isnan(interaction_ratio(zero, zero, one, one))        # a alone does nothing: undefined, not 0


def test_untrained_null_has_the_architecture_but_not_the_weights():
    trained, untrained = load_model("digits"), untrained_like("digits")
    assert type(untrained.unet) is type(trained.unet) and untrained.unet.config == trained.unet.config
    assert untrained.h_module == trained.h_module and untrained.x_shape == trained.x_shape
    p, q = dict(trained.unet.named_parameters()), dict(untrained.unet.named_parameters())
    assert p.keys() == q.keys()
    differ = [k for k in p if p[k].shape == q[k].shape and not torch.equal(p[k], q[k])]
    assert len(differ) > len(p) // 2
    x = torch.randn(1, *trained.x_shape, generator=torch.Generator().manual_seed(0))
    kw = {"prompt": "3"} if trained.is_conditional else {}
    assert not torch.allclose(trained.h(x, 500, **kw), untrained.h(x, 500, **kw))


def test_units_needed_reaches_the_target_half_width_on_gaussian_data():
    # a mean of N(0.5, 1) units: the 95% half-width is ~1.96 / sqrt(n); from n = 16 (hw ~0.49), halving it
    # needs 4x the units; at the planned n, fresh data's BCa half-width is within 25% of the target
    # (the half-width's own relative sd at n = 64 is ~1/sqrt(2n) = 9%, so 25% is ~3 sd)
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 1.0, 16)
    v, lo, hi = bca_interval(16, lambda i: float(x[i].mean()), n_boot=2000)
    hw = (hi - lo) / 2
    n = units_needed(16, hw, hw / 2)
    assert n in (64, 65)
    y = rng.normal(0.5, 1.0, n)
    _, lo2, hi2 = bca_interval(n, lambda i: float(y[i].mean()), n_boot=2000)
    assert abs((hi2 - lo2) / 2 - hw / 2) < 0.25 * hw / 2
    # the plan: an excess claim of the fast table with a clear sign keeps its n; a bound claim sized by its gap
    rows = [{"id": "1", "n": 6, "excess": 0.09, "ci_low": 0.086, "ci_high": 0.093, "rule_version": "excess v1"},
            {"id": "7a", "n": 16, "excess": 0.8, "ci_low": 0.6, "ci_high": 1.0, "rule_version": "bound v2"}]
    assert plan(rows) == {"1": 6, "7a": 29}          # 7a: target (0.8 - 0.5) / 2 = 0.15 < hw 0.2: 16 (4/3)^2 = 28.4
    assert target_half_width(rows[1]) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="target > 0"):
        units_needed(6, 0.1, 0.0)
