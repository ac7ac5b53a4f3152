"""Claim 7 (the Asyrp property table): each statistic and verdict rule on synthetic per-sample reads
whose answers are known in closed form, and the report's reading of saved tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffgeo.analyses.asyrp import (BOUNDS, asyrp_properties, property_claims, threshold_verdict, timestep_cosine)
from diffgeo.analyses.learned_ft import colour_margin, effect_ratio
from diffgeo.analyses.rules import BOUNDS as RULE_BOUNDS
from diffgeo.analyses.rules import bound_verdict, equivalence_verdict
from diffgeo.editing.properties import EditProperties

S = [-2.0, -1.0, 0.0, 1.0, 2.0]


def _table(change, base_target, *, valid=None, valid_noisy=None, composition=None, cosines=None, model="toy"):
    """An h-space table from per-sample reads (S, n); means derived from them as evaluate does."""
    change = torch.as_tensor(change, dtype=torch.float64)
    n = change.shape[1]
    valid = torch.ones(5, n, dtype=torch.float64) if valid is None else valid
    vn = valid[-1] if valid_noisy is None else valid_noisy
    ps = {"change": change.tolist(), "base_target": list(map(float, base_target)), "valid": valid.tolist(),
          "other_changed": {}, "robust": {"valid": valid[-1].tolist(), "valid_noisy": vn.tolist(),
                                          "change_noisy": change[-1].tolist()}}
    comp = None
    if composition is not None:
        ps["composition"] = {k: v.tolist() for k, v in composition.items()}
        comp = {"factor_b": "shape", "target_b": "square", "strength": 2.0,
                **{k: float(v.mean()) for k, v in composition.items()}}
    meta = {"timestep_cosines": None if cosines is None else
            {"timesteps": [100, 500, 600, 700, 800, 900, 950], "cosines": cosines.tolist()}}
    return EditProperties(model, "h", "colour", "blue", S, change.mean(1).tolist(), change.std(1).tolist(), 0.0,
                          0.0, True, {}, valid.mean(1).tolist(), n, 10, 500, composition=comp,
                          robustness={"noise": 0.5, "strength": 2.0, "validity": float(valid[-1].mean()),
                                      "validity_noisy": float(vn.mean()), "change_noisy": 0.0},
                          meta=meta, per_sample=ps)


def _linear(n=80):
    """Half the samples start at the target. Strength s > 0 moves s/2 of the others to it, s < 0
    moves |s|/2 of the target ones away: mean change s/4 exactly linear, every sample alike at s = 2."""
    base = torch.tensor([1.0, 0.0] * (n // 2))
    change = torch.zeros(5, n)
    for i, s in enumerate(S):
        k = int(abs(s) / 2 * (n // 2))
        idx = (base == (0.0 if s > 0 else 1.0)).nonzero().flatten()[:k]
        change[i, idx] = 1.0 if s > 0 else -1.0
    return change, base


def _claims(table, **kw):
    return {c.id: c for c in property_claims(table, n_boot=300, **kw)}


def test_threshold_verdict():
    assert threshold_verdict(0.81, 0.9, 0.8) == "reproduced"
    assert threshold_verdict(0.1, 0.79, 0.8) == "not reproduced"
    assert threshold_verdict(0.7, 0.85, 0.8) == "inconclusive"
    assert threshold_verdict(float("nan"), 0.9, 0.8) == "inconclusive"
    assert threshold_verdict(0.81, 0.9, 0.8, n=2) == "inconclusive"      # too few units for an interval


def test_linear_homogeneous_composable_robust_consistent_edit_is_reproduced():
    change, base = _linear()
    n = change.shape[1]
    ones = torch.where(base == 0, 1.0, 0.0)
    comp = {"a_alone": ones, "a_in_sum": ones, "b_alone": ones, "b_in_sum": ones}
    cos = torch.full((7, 7), 0.9)
    cos.fill_diagonal_(1.0)
    c = _claims(_table(change, base, composition=comp, cosines=cos))
    assert c["7a"].value == 1.0 and c["7a"].ci_low == 1.0              # every eligible sample reached the target
    assert c["7b"].value == pytest.approx(1.0, abs=1e-12)              # mean change s/4: R^2 = 1 exactly
    assert c["7c"].value == pytest.approx(1.0) and c["7d"].value == 0.0
    assert c["7e"].value == pytest.approx(0.9) and c["7e"].n == 6        # t = 100 lies below t_edit = 500
    assert all(c[k].verdict == "reproduced" for k in ("7a", "7b", "7c", "7d", "7e")), \
        {k: (v.value, v.ci_low, v.ci_high) for k, v in c.items()}
    assert all(c[k].n == n for k in ("7a", "7b", "7c", "7d"))


def test_step_response_half_homogeneous_broken_composition_fragile_not_reproduced():
    n = 80
    base = torch.tensor([1.0, 0.0] * (n // 2))
    eligible = (base == 0).nonzero().flatten()
    change = torch.zeros(5, n)
    change[3:, eligible] = 1.0                 # s = 1, 2: every eligible sample moves; s <= 0: none
    # mean change (0, 0, 0, p, p) for any resample: R^2 = cov^2 / (var s var y) = 0.09 / 0.12 = 0.75 exactly
    c = _claims(_table(change, base))
    assert c["7b"].value == pytest.approx(0.75) and c["7b"].ci_high == pytest.approx(0.75)
    assert c["7b"].verdict == "not reproduced"
    half = torch.zeros(5, n)
    half[4, eligible[: len(eligible) // 2]] = 1.0
    zeros, ones = torch.zeros(n), torch.where(base == 0, 1.0, 0.0)
    comp = {"a_alone": ones, "a_in_sum": ones, "b_alone": ones, "b_in_sum": zeros}
    valid = torch.ones(5, n)
    ortho = torch.eye(7)
    c = _claims(_table(half, base, valid=valid, valid_noisy=zeros, composition=comp, cosines=ortho))
    assert c["7a"].value == 0.5 and c["7a"].ci_high < BOUNDS["7a"]     # 20 of 40 eligible: CI ~[0.35, 0.65]
    assert c["7c"].value == 0.0 and c["7d"].value == -1.0 and c["7e"].value == 0.0
    assert all(c[k].verdict == "not reproduced" for k in ("7a", "7c", "7d", "7e"))


def test_borderline_and_undefined_are_inconclusive_or_skipped():
    n = 80
    base = torch.zeros(n)
    change = torch.zeros(5, n)
    change[4, : int(0.8 * n)] = 1.0                 # exactly at the bound: the interval contains it
    c = _claims(_table(change, base))
    assert c["7a"].value == pytest.approx(0.8) and c["7a"].verdict == "inconclusive"
    flat = _claims(_table(torch.zeros(5, n), base))
    assert math.isnan(flat["7b"].value) and flat["7b"].verdict == "inconclusive"   # no change: no line
    assert flat["7c"].verdict == "skipped" and flat["7e"].verdict == "skipped"      # no second direction / one dh
    old = EditProperties("toy", "h", "colour", "blue", S, [0.0] * 5, [0.0] * 5, 0.0, 0.0, False, {}, [1.0] * 5, 4,
                         10, 500)
    assert {c.verdict for c in property_claims(old)} == {"skipped"}
    change, base = _linear()
    t = _table(change, base)
    no_validity = EditProperties(**{**t.__dict__, "meta": {**t.meta, "validity_read": False}})
    c = _claims(no_validity)
    assert c["7d"].verdict == "skipped" and "cannot tell a valid image" in c["7d"].note
    assert c["7a"].verdict == "reproduced"


def test_timestep_cosine_skips_self_pairs():
    c = torch.tensor([[1.0, 0.2], [0.2, 1.0]])
    assert timestep_cosine(c, torch.tensor([0, 0, 1])) == pytest.approx(0.2)
    assert math.isnan(timestep_cosine(c, torch.tensor([1, 1])))


def test_report_reads_saved_tables(tmp_path):
    change, base = _linear(40)
    _table(change, base, model="toy").save(tmp_path / "edit_properties_toy_colour_h")
    claims = asyrp_properties("toy", tables=[tmp_path / "missing", tmp_path])
    assert [c.id for c in claims] == [f"7{k} colour->blue" for k in "abcde"]
    assert all("read from the saved table" in c.note and "edit_properties_toy_colour_h.json" in c.note
               for c in claims if c.verdict != "skipped")
    assert claims[0].verdict == "reproduced"


def test_saved_tables_of_other_weights_are_not_used(tmp_path):
    # a table keeps the fingerprint of the weights it was measured on; the report skips stale ones
    from diffgeo.analyses.asyrp import _saved_tables

    change, base = _linear(40)
    t = _table(change, base, model="toy")
    EditProperties(**{**t.__dict__, "meta": {**t.meta, "model_fingerprint": "old-weights"}}).save(
        tmp_path / "edit_properties_toy_colour_h")
    assert _saved_tables("toy", [tmp_path], fingerprint="new-weights") == []
    assert len(_saved_tables("toy", [tmp_path], fingerprint="old-weights")) == 1
    assert len(_saved_tables("toy", [tmp_path])) == 1  # no loadable model: by name


def test_learned_ft_statistics_and_their_rules_on_known_answers():
    per = np.array([2.0, 4.0, 6.0])
    assert effect_ratio(per, per) == 0.0                      # the global dh does what f_t does: ratio 1
    assert effect_ratio(per / 2, per) == pytest.approx(-0.5)  # half the effect
    assert math.isnan(effect_ratio(per, np.zeros(3)))
    logits = np.array([[0.0, 5.0, 1.0], [2.0, -1.0, 0.0]])
    assert colour_margin(logits, np.array([0, 0]), 2).tolist() == [1.0, -2.0]
    # 7g's margin and 7h's bound are 7e's and 7a's
    assert RULE_BOUNDS["7g"] == RULE_BOUNDS["7e"] and RULE_BOUNDS["7h"] == RULE_BOUNDS["7a"]
    b = RULE_BOUNDS["7g"]
    assert equivalence_verdict(-b / 2, b / 2, n=12, claim="7g") == "reproduced"
    assert equivalence_verdict(b * 1.1, b * 3, n=12, claim="7g") == "not reproduced"
    assert bound_verdict(0.1, 0.2, n=12, claim="7h", side=-1) == "reproduced"
    assert bound_verdict(0.1, 0.2, n=4, claim="7h", side=-1) == "too few units"
