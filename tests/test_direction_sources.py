"""Each direction source changes its target factor on shapes: mean difference (h through Asyrp, x
through edit_x), PCA of h and the tangent directions u_i (h) and v_i (x) of a local basis.

Ground truth is the shapes probe's read of the edited images against the unedited ones (the
reader is checked against the renderer in test_probe.py / test_alignment.py). The target factor is
colour. Choices made on a calibration set of samples DISTINCT from the evaluation set (seeds
below): the PCA component and the tangent index, each the one (of the first two) whose edit
changes the colour read of the most calibration samples. Strengths are fixed here, not tuned on
the evaluation samples:

- mean difference, h: strength 3 (units of the red -> blue mean difference of h per timestep).
- mean difference, x: strength 1 of ``sqrt(abar_t) (mean blue scene - mean red scene)``: the move
  of x_t that moves its clean component by the scenes' difference (the raw pixel difference
  overshoots by 1/sqrt(abar_t), 3.6x at t = 500, and wrecks images). 10 DDIM steps, edits at t = 500.
- unit-norm h directions (PCA, u_i): 0.75 of the mean norm of h at t_edit over the calibration
  samples (a step the size of h's own spread between samples).
- unit-norm x directions (v_i): 0.25 of the noise norm sqrt((1 - abar_t) D) of x_t at t_edit.

What this does not check: that the edit is clean (other factors and validity are the property
table's specificity and validity columns, diffgeo.editing.properties), nor that a source moves
towards a particular colour.

PCA of h is unsupervised, and nothing makes one of its first components a colour axis. On the
shipped weights (the weight average) it is not one: on 64 other held-out samples (seed 55,555) the
first three components, taken from these 12 calibration samples, changed the colour read of 16%,
11% and 22% of samples, against 3-8% for three random unit h directions at the same strength (one
run, for scale). So PCA is held to beating random h directions on the same samples, not to a fixed
fraction. The other sources are supervised (mean difference) or picked on the calibration set
(tangents). On the same 64 samples they changed 41% (mean difference h), 41% (u_1; u_0: 14%) and
75-92% (x sources).
"""

from __future__ import annotations

import pytest
import torch

import diffgeo
from diffgeo.editing.directions import Direction, pca, tangent
from diffgeo.editing.factors import factor_directions
from diffgeo.editing.hspace import asyrp
from diffgeo.editing.xspace import edit_x
from diffgeo.readers import get_reader

STEPS, T_EDIT, N_EVAL, N_CAL, CHOICES, N_RANDOM = 10, 500, 96, 12, 2, 3
EVAL_SEED, CAL_SEED = 7_001, 7_002
# n = 96 held-out samples per source, bound 0.25 of them with a changed colour read. A source with a
# true rate of 0.4 (what the mean difference and u_1 measured on other samples) fails it with
# probability P(Bin(96, 0.4) < 24) = 0.1%; one that changes a tenth passes it with probability
# P(Bin(96, 0.1) >= 24) < 0.01%.
# The calibration set picks among CHOICES candidates. With 3 samples, u_0 and u_1 tied at 1/3 on the
# shipped weights, and the tie went to u_0. With 12, the pick follows the rates seen on other samples.
MARGIN = 0.25
# PCA against the mean rate of N_RANDOM random unit h directions at its strength: a true 0.15 against
# 0.05 (see above) gives a difference of 0.10 with sd sqrt(0.15 * 0.85 / 96 + 0.05 * 0.95 / 288) = 0.039,
# so it fails with probability about 0.5% (z = 2.6).


@pytest.fixture(scope="module")
def setup(shapes_model):
    m = shapes_model
    reader = get_reader("shapes")

    def noise(n, seed):
        return torch.randn(n, *m.x_shape, generator=torch.Generator().manual_seed(seed))

    out = {}
    with torch.no_grad():
        for name, n, seed in (("eval", N_EVAL, EVAL_SEED), ("cal", N_CAL, CAL_SEED)):
            x_T = noise(n, seed)
            tr = diffgeo.sample(m, noise=x_T, steps=STEPS, progress=False)
            x_t = tr.xs[tr.timesteps.tolist().index(T_EDIT)]
            out[name] = {"x_T": x_T, "x_t": x_t, "colour": reader.read(tr.result)["colour"]}
        h_norm = float(m.h(out["cal"]["x_t"], T_EDIT).flatten(1).norm(dim=1).mean())
    ab = float(m.alphas_cumprod[T_EDIT])
    return m, reader, out, h_norm, (1 - ab) ** 0.5 * torch.Size(m.x_shape).numel() ** 0.5


def _changed(m, reader, data, space, direction, strength):
    """Fraction of the samples whose colour read differs from their unedited read."""
    with torch.no_grad():
        if space == "h":
            img = asyrp(m, data["x_T"], direction, strength=strength, t_edit=T_EDIT, t_boost=0, steps=STEPS,
                        progress=False).result
        else:
            img = edit_x(m, data["x_t"], T_EDIT, direction, strength=strength, steps=STEPS, progress=False).result
    return float((reader.read(img)["colour"] != data["colour"]).double().mean())


def _pick(m, reader, cal, space, candidates, strength):
    """The candidate (index, direction) whose edit changes the colour of the most calibration samples."""
    scores = [_changed(m, reader, cal, space, d, strength) for d in candidates]
    return max(range(len(candidates)), key=lambda i: scores[i]), scores


def test_each_source_changes_colour(setup):
    m, reader, data, h_norm, x_noise_norm = setup
    cal, ev = data["cal"], data["eval"]
    dx, dh = factor_directions(m, "colour", "red", "blue", n=8, steps=STEPS, t_edit=T_EDIT)
    results = {"mean_difference h": _changed(m, reader, ev, "h", dh, 3.0),
               "mean_difference x": _changed(m, reader, ev, "x", dx, 1.0)}
    comps = [pca(m, cal["x_T"], c, steps=STEPS) for c in range(CHOICES)]
    k, _ = _pick(m, reader, cal, "h", comps, 0.75 * h_norm)
    results[f"pca h (component {k})"] = _changed(m, reader, ev, "h", comps[k], 0.75 * h_norm)
    basis = diffgeo.local_basis(m, cal["x_t"][:1], T_EDIT, CHOICES, tol=1e-2, seed=0, progress=False)
    us = [tangent(basis, i, space="h", model=m.name) for i in range(CHOICES)]
    vs = [tangent(basis, i, space="x", model=m.name) for i in range(CHOICES)]
    ku, _ = _pick(m, reader, cal, "h", us, 0.75 * h_norm)
    kv, _ = _pick(m, reader, cal, "x", vs, 0.25 * x_noise_norm)
    results[f"tangent u_{ku} h"] = _changed(m, reader, ev, "h", us[ku], 0.75 * h_norm)
    results[f"tangent v_{kv} x"] = _changed(m, reader, ev, "x", vs[kv], 0.25 * x_noise_norm)
    g = torch.Generator().manual_seed(3)
    randoms = [Direction(vectors=v / v.norm(), timesteps=torch.tensor([-1]), space="h", model=m.name)
               for v in torch.randn(N_RANDOM, 1, *m.h_shape, generator=g)]
    random_rate = sum(_changed(m, reader, ev, "h", d, 0.75 * h_norm) for d in randoms) / N_RANDOM
    print("colour changed (fraction of held-out samples):", results, "random h:", random_rate)
    pca_name = f"pca h (component {k})"
    assert results[pca_name] > random_rate, (results[pca_name], random_rate)
    failed = {name: v for name, v in results.items() if v < MARGIN and name != pca_name}
    assert not failed, f"colour changed on fewer than {MARGIN:.0%} of {N_EVAL} held-out samples: {results}"
