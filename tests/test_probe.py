"""The attribute probe and the validity criterion, on held-out and corrupted scenes; sample quality."""

from __future__ import annotations

import pytest
import torch

from diffgeo.data.shapes import make_scenes, render
from diffgeo.readers.probe import VALID_RMSE, evaluate_probe, load_probe, validity

HELD_OUT_SEED = 4242  # training draws seeds >= 10_000_000


#: Held-out scenes per test. Measured on 1000 held-out scenes (seed 4242): shape and colour
#: accuracy 1000/1000, validity 1000/1000 (largest RMSE 0.042 against VALID_RMSE 0.1). At n=200 a
#: perfect score has a 95% Wilson lower bound of 0.981, so the 0.97 bounds below hold with margin.
N_HELD_OUT = 200


@pytest.fixture(scope="module")
def held_out():
    return make_scenes(N_HELD_OUT, seed=HELD_OUT_SEED)


def test_probe_reads_factors_of_held_out_scenes(held_out):
    pred = load_probe().predict(held_out.images)
    true = held_out.factors
    # n=200, measured 1.000 (1000/1000); 95% Wilson CI at 200/200 is [0.981, 1]: bound 0.97
    assert (pred.shape == true.shape).float().mean() >= 0.97
    assert (pred.colour == true.colour).float().mean() >= 0.97
    # measured MAE 0.03 (size), 0.03 (x), 0.04 (y) px and 0.002 (background) on 1000 scenes: the
    # bounds are 5-10x that, far outside the sampling spread of a 200-scene mean
    for name, max_mae in (("size", 0.2), ("x", 0.2), ("y", 0.2), ("background", 0.02)):
        mae = (getattr(pred, name) - getattr(true, name)).abs().mean()
        assert mae <= max_mae, (name, mae)


def test_validity_accepts_held_out_real_scenes(held_out):
    # n=200, measured 1.000 (1000/1000); 95% Wilson CI at 200/200 is [0.981, 1]: bound 0.97
    assert validity(held_out.images).rate >= 0.97


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
    # Measured rejection at n=300: two objects 300/300, blends 298/300, noise 300/300. n=150: the
    # 95% Wilson CI of the worst case (149/150) is [0.963, 0.999], above the 0.95 bound.
    n = 150
    if corruption == "two_objects":
        images = _two_objects(n, seed=50)
    elif corruption == "blend":
        images = 0.5 * make_scenes(n, seed=60).images + 0.5 * make_scenes(n, seed=61).images
    else:
        x = make_scenes(n, seed=70).images
        images = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    result = validity(images)
    assert 1 - result.rate >= 0.95, f"only {1 - result.rate:.1%} of {corruption} images rejected"


class PlantedErrors:
    """A stand-in probe that reads the true factors of the scenes it is given, except for errors
    planted at known places: the shape on every 4th scene, the colour on every 8th (offset 2),
    x by +0.5 px on i % 4 == 1 and size by +1 px on i % 8 == 3."""

    def __init__(self, scenes):
        self.scenes = scenes

    def predict(self, images):
        assert torch.equal(images, self.scenes.images), "shown other scenes than the held-out ones"
        f, i = self.scenes.factors, torch.arange(len(images))
        return f.replace(shape=torch.where(i % 4 == 0, (f.shape + 1) % 3, f.shape),
                         colour=torch.where(i % 8 == 2, (f.colour + 1) % 6, f.colour),
                         x=torch.where(i % 4 == 1, f.x + 0.5, f.x), size=torch.where(i % 8 == 3, f.size + 1, f.size))


def test_evaluate_probe_reports_planted_errors():
    n = 64
    scenes = make_scenes(n, seed=HELD_OUT_SEED)  # evaluate_probe draws the same scenes from the seed
    metrics = evaluate_probe(PlantedErrors(scenes), n=n, seed=HELD_OUT_SEED)
    assert metrics["shape_accuracy"] == pytest.approx(3 / 4)
    assert metrics["colour_accuracy"] == pytest.approx(7 / 8)
    assert metrics["x_mae"] == pytest.approx(0.5 / 4, rel=1e-6)
    assert metrics["size_mae"] == pytest.approx(1 / 8, rel=1e-6)
    assert metrics["y_mae"] == 0 and metrics["background_mae"] == 0
    # validity by its definition: the RMSE between each image and the rendering of what was read
    pred = PlantedErrors(scenes).predict(scenes.images)
    rmse = (scenes.images - render(pred)).pow(2).mean(dim=(1, 2, 3)).sqrt()
    untouched = torch.arange(n) % 8 == 7  # no error planted: re-rendering is exact
    assert (rmse[untouched] == 0).all() and (rmse > VALID_RMSE).any()
    assert metrics["valid_rate"] == pytest.approx(float((rmse <= VALID_RMSE).float().mean()))


def _pushed_out(n: int, seed: int):
    """n scenes (n even): the first half each with one of size, x or y pushed 0.8-2.5 units past an end of
    its training range, the second half inside the ranges by at least 0.5 units; and which are outside."""
    from diffgeo.data.shapes import RANGES, sample_factors

    g = torch.Generator().manual_seed(seed)
    f = sample_factors(n, generator=g)
    inner = {k: lo + 0.5 + (hi - lo - 1.0) * torch.rand(n, generator=g)
             for k, (lo, hi) in RANGES.items() if k in ("size", "x", "y")}
    f = f.replace(**inner)
    half = n // 2
    which = torch.randint(3, (half,), generator=g)
    side = torch.randint(2, (half,), generator=g).bool()
    past = 0.8 + 1.7 * torch.rand(half, generator=g)
    changes = {}
    for j, name in enumerate(("size", "x", "y")):
        lo, hi = RANGES[name]
        v = getattr(f, name).clone()
        v[:half] = torch.where(which == j, torch.where(side, hi + past, lo - past), v[:half])
        changes[name] = v
    return f.replace(**changes), torch.arange(n) < half


def test_fit_scene_recovers_scenes_past_the_training_ranges():
    # Ground truth: rendered scenes, half with a factor 0.8-2.5 px past its range (the probe reads none of
    # those as valid). Starting from the probe's reading, the fit must find every factor and flag exactly
    # the scenes that are outside. Measured on these 40: worst errors size 0.27, x 0.14, y 0.20 px,
    # background 0.005, RMSE 0.048 (a scene left on a neighbouring sub-pixel plateau). The renderer's 4x4
    # supersampling moves an edge in 0.25 px steps, hence 0.4 px; an RMSE under 0.06 is far from VALID_RMSE (0.1), which is what tells a clean scene from a malformed one.
    from diffgeo.readers.probe import fit_scene

    f, outside = _pushed_out(40, seed=91)  # two chunks of fit_scene (32 + 8)
    images = render(f)
    fit = fit_scene(images, load_probe().predict(images))
    assert torch.equal(fit.out_of_range, outside)
    assert torch.equal(fit.factors.shape, f.shape)
    for name, tol in (("size", 0.4), ("x", 0.4), ("y", 0.4), ("background", 0.03)):
        err = (getattr(fit.factors, name) - getattr(f, name)).abs().max()
        assert err <= tol, (name, err)
    assert fit.rmse.max() <= 0.06
    with pytest.raises(ValueError, match="give one per image"):
        fit_scene(images[:3], f[:2])


@pytest.mark.parametrize("corruption", ["two_objects", "blend"])
def test_fit_scene_does_not_pass_malformed_scenes_as_clean(corruption):
    # A scene that is not one shape on a flat background has no good fit, free ranges or not: the
    # fit's RMSE stays above VALID_RMSE. Measured on these 30: two objects 30/30 (smallest RMSE 0.19),
    # blends 30/30 (0.117). The bound 0.85 is under the 95% Wilson lower bound of 30/30 (0.886).
    from diffgeo.readers.probe import fit_scene

    n = 30
    images = (_two_objects(n, seed=80) if corruption == "two_objects"
              else 0.5 * make_scenes(n, seed=81).images + 0.5 * make_scenes(n, seed=82).images)
    fit = fit_scene(images, load_probe().predict(images))
    assert (fit.rmse > VALID_RMSE).float().mean() >= 0.85


def test_quality_report_counts_clean_scenes_past_the_ranges_apart_from_malformed_ones(tmp_path):
    # Ground truth: 12 rendered scenes, the first 6 with a factor 0.8-2.5 units past its range, the other 6
    # inside; and 6 two-object scenes. Valid: exactly the 6 inside; out of range: exactly the 6 pushed (the
    # two-object scenes are invalid and not clean).
    from diffgeo.evaluation.plots import plot_invalid
    from diffgeo.evaluation.quality import quality_of

    f, outside = _pushed_out(12, seed=93)
    images = torch.cat([render(f), _two_objects(6, seed=94)])
    report = quality_of(images)
    assert report.n == 18
    assert report.valid_rate == pytest.approx(6 / 18) and report.out_of_range_rate == pytest.approx(6 / 18)
    assert report.invalid == [0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17] and report.out_of_range == [0, 1, 2, 3, 4, 5]
    assert sorted(report.continuous_values["x"]) == pytest.approx(sorted(f.x[~outside].tolist()), abs=0.4)
    # the figure of the invalid ones: written for these; when every sample is valid, none, and an older one
    # at that path is removed
    figure = plot_invalid(images, report, tmp_path / "invalid.png")
    assert figure.stat().st_size > 0
    inside = render(f[6:])
    assert plot_invalid(inside, quality_of(inside), figure) is None and not figure.exists()
