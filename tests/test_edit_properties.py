"""The edit property table: its statistics against closed forms, and one tiny real run on shapes."""

import json
import math
from dataclasses import asdict

import pytest
import torch

from diffgeo.editing.directions import Direction
from diffgeo.editing.properties import EditProperties, edit_statistics, edit_properties, timestep_consistency

S = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=torch.float64)


def test_linear_change_with_known_spread():
    # change_i(s) = a s + e_i with e_i = +-sigma (n even): mean a s exactly, population std sigma exactly.
    a, sigma, n = 0.2, 0.05, 8
    e = sigma * torch.tensor([1.0, -1.0] * (n // 2), dtype=torch.float64)
    change = a * S[:, None] + e[None]
    other = {"shape": torch.zeros(5, n, dtype=torch.bool)}
    valid = torch.ones(5, n, dtype=torch.bool)
    st = edit_statistics(S, change, other, valid)
    assert st["mean_change"] == pytest.approx((a * S).tolist(), abs=1e-12)
    assert st["spread"] == pytest.approx([sigma] * 5, abs=1e-12)
    assert st["slope"] == pytest.approx(a, abs=1e-12)
    assert st["r2"] == pytest.approx(1.0, abs=1e-12)
    assert st["sign_flip"] is True
    assert st["specificity"]["shape"] == [0.0] * 5 and st["validity"] == [1.0] * 5


def test_random_noise_spread_and_r2():
    # Gaussian e_i, sigma 0.1, n = 256: the sample std is within ~1.96/sqrt(2n) = 9% of sigma (95%);
    # the mean's error sigma/sqrt(n) = 0.006 against a slope of 0.3 keeps R^2 > 0.99.
    g = torch.Generator().manual_seed(3)
    sigma, n = 0.1, 256
    change = 0.3 * S[:, None] + sigma * torch.randn(5, n, generator=g, dtype=torch.float64)
    st = edit_statistics(S, change, {}, torch.ones(5, n, dtype=torch.bool))
    assert all(abs(sp / sigma - 1) < 0.15 for sp in st["spread"])
    assert st["r2"] > 0.99 and st["sign_flip"]


def test_curved_response_r2_closed_form_and_no_flip():
    # mean = s + c s^2 on {-2..2}: s and s^2 are uncorrelated, var(s) = 2, var(s^2) = 2.8, so
    # R^2 = 2 / (2 + 2.8 c^2); with c = 1: 5/12. A response even in s (s^2) does not flip sign.
    st = edit_statistics(S, (S + S ** 2)[:, None], {}, torch.ones(5, 1, dtype=torch.bool))
    assert st["r2"] == pytest.approx(5 / 12, abs=1e-12)
    assert st["slope"] == pytest.approx(1.0, abs=1e-12)
    assert edit_statistics(S, (S ** 2)[:, None], {}, torch.ones(5, 1, dtype=torch.bool))["sign_flip"] is False
    flat = edit_statistics(S, torch.zeros(5, 3), {}, torch.ones(5, 3, dtype=torch.bool))
    assert math.isnan(flat["r2"]) and flat["sign_flip"] is False


def test_timestep_consistency():
    same = Direction(torch.ones(3, 4), torch.tensor([1, 2, 3]), "h", "toy")
    ortho = Direction(torch.eye(3), torch.tensor([1, 2, 3]), "h", "toy")
    assert timestep_consistency(same) == pytest.approx(1.0)
    assert timestep_consistency(ortho) == pytest.approx(0.0)
    assert timestep_consistency(Direction(torch.ones(1, 4), torch.tensor([-1]), "h", "toy")) is None


@pytest.fixture(scope="module")
def shapes_model():
    import diffgeo

    return diffgeo.load("shapes")


def test_real_shapes_table(shapes_model, tmp_path):
    # One tiny real call (h-space: Asyrp; the x path runs the same reduction after edit_x).
    space = "h"
    from diffgeo.editing.factors import factor_directions

    dx, dh = factor_directions(shapes_model, "colour", "red", "blue", n=4, steps=5)
    d = dx if space == "x" else dh
    t = edit_properties(shapes_model, d, space=space, factor="colour", target="blue", n=4, steps=5, progress=False,
                 second=d, second_factor="colour", second_target="blue")
    assert len(t.mean_change) == len(t.spread) == len(t.validity) == 5
    assert all(math.isfinite(v) for v in t.mean_change + t.spread + t.validity)
    # Ground truth: strength 0 reproduces the unedited sample bit for bit, so nothing changes.
    assert t.meta["strength0_max_abs_diff"] == 0.0
    i0 = t.strengths.index(0.0)
    assert t.mean_change[i0] == 0.0 and t.spread[i0] == 0.0 and t.specificity["shape"][i0] == 0.0
    assert 0.0 <= t.robustness["validity_noisy"] <= 1.0 and set(t.composition) >= {"a_alone", "a_in_sum"}
    assert (t.timestep_consistency is None) == (space == "x")
    # The per-sample reads are kept and are the ones the table's means reduce.
    ps = t.per_sample
    assert torch.tensor(ps["change"]).shape == (5, 4) and len(ps["base_target"]) == 4
    assert torch.tensor(ps["change"]).mean(1).tolist() == pytest.approx(t.mean_change)
    assert torch.tensor(ps["valid"]).mean(1).tolist() == pytest.approx(t.validity)
    assert set(ps["composition"]) == {"a_alone", "a_in_sum", "b_alone", "b_in_sum"}
    assert sum(ps["composition"]["a_alone"]) / 4 == pytest.approx(t.composition["a_alone"])
    js, cs = t.save(tmp_path / "props")
    # NaN-aware round trip (R^2 is NaN when the response is flat): compare the JSON texts.
    assert json.dumps(asdict(EditProperties.load(js))) == json.dumps(asdict(t))
    assert cs.read_text().count("\n") == 6
    with pytest.raises(ValueError, match="factor"):
        edit_properties(shapes_model, d, space=space, factor="texture", n=2, steps=5, progress=False)


def test_x_direction_is_the_scaled_clean_difference(shapes_model):
    # Independent: render the two groups with the documented recipe and scale by sqrt(abar_t).
    from diffgeo.data import shapes
    from diffgeo.editing.factors import factor_directions

    dx, _ = factor_directions(shapes_model, "shape", "circle", "square", n=3, steps=2, t_edit=500, seed=4)
    f = shapes.sample_factors(3, seed=4)
    a = shapes.render(f.replace(shape=torch.zeros(3, dtype=torch.long)))
    b = shapes.render(f.replace(shape=torch.ones(3, dtype=torch.long)))
    ref = float(shapes_model.alphas_cumprod[500]) ** 0.5 * (b - a).mean(0)
    assert torch.allclose(dx.vectors[0], ref, atol=1e-6) and dx.space == "x"
    with pytest.raises(ValueError, match="not a class of 'size'"):
        factor_directions(shapes_model, "size", "small", "huge", n=2, steps=2)


def test_size_bins_read_from_real_scenes():
    # Ground truth: the rendered half-extent, binned at the reader's edges. The probe reads the
    # bin right 97.7% of the time on 600 held-out scenes; n=64: 95% Wilson half-width ~0.05, so
    # a bound of 0.85 fails only if the reader is clearly worse than measured.
    from diffgeo.data.shapes import make_scenes
    from diffgeo.readers import get_reader
    from diffgeo.readers.shapes import SIZE_EDGES, SIZES

    scenes = make_scenes(64, seed=31_337)
    read = get_reader("shapes").read(scenes.images)
    truth = torch.bucketize(scenes.factors.size.float(), torch.tensor(SIZE_EDGES))
    assert get_reader("shapes").classes["size"] == SIZES
    assert float((read["size"] == truth).float().mean()) > 0.85
