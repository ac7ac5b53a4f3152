"""x-space editing, Asyrp, the t_edit / t_boost rule and its distances, bad input."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import diffgeo
import diffgeo.editing.hspace as hspace
import diffgeo.editing.interval as interval
import diffgeo.editing.xspace as xspace
from diffgeo.core.sweep import model_fingerprint
from diffgeo.editing.directions import Direction
from diffgeo.sampling.ddim import ddim_step

STEPS = 6


@pytest.fixture(scope="module")
def x_T():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def path(shapes_model, x_T):
    with torch.no_grad():
        return diffgeo.sample(shapes_model, noise=x_T, steps=STEPS, progress=False)


def _h_dir(vec, model="shapes"):
    return Direction(vec[None], torch.tensor([-1]), "h", model)


# -- identities at strength 0 -----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["step", "guidance"])
def test_edit_x_at_strength_zero_is_denoise(shapes_model, path, method):
    k = 2
    x_t, t = path.xs[k], int(path.timesteps[k])
    v = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = xspace.edit_x(shapes_model, x_t, t, v, strength=0.0, method=method, steps=STEPS, progress=False)
        ref = diffgeo.denoise(shapes_model, x_t, t, steps=STEPS, progress=False)
    assert ours.timesteps.tolist() == ref.timesteps.tolist()
    assert (ours.result - ref.result).abs().max() <= 1e-6


def test_edit_x_step_moves_x_t_by_strength_v(shapes_model, path):
    k = 2
    x_t, t = path.xs[k], int(path.timesteps[k])
    v = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = xspace.edit_x(shapes_model, x_t, t, v, strength=0.7, steps=STEPS, progress=False)
        ref = diffgeo.denoise(shapes_model, x_t + 0.7 * v, t, steps=STEPS, progress=False)
    assert torch.allclose(ours.xs[0], x_t + 0.7 * v) and (ours.result - ref.result).abs().max() <= 1e-6


def test_asyrp_at_strength_zero_without_boost_is_sample(shapes_model, x_T, path):
    dh = _h_dir(torch.randn(128, 8, 8, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        ours = hspace.asyrp(shapes_model, x_T, dh, strength=0.0, t_edit=400, t_boost=0, steps=STEPS, progress=False)
    assert (ours.result - path.result).abs().max() <= 1e-6
    assert len(shapes_model.unet.mid_block._forward_hooks) == 0


def test_asyrp_edits_only_the_x0_term_with_original_skips(shapes_model, x_T):
    """One asymmetric step, rebuilt here independently: eps of the edited h (a forward hook written
    in the test) in P_t, the unedited eps in D_t; the skips are untouched because only the mid
    block's output changes (its inputs, the down blocks' outputs, are recorded equal)."""
    m = shapes_model
    dh = torch.randn(128, 8, 8, generator=torch.Generator().manual_seed(3))
    t, t_next = [int(s) for s in diffgeo.ddim_timesteps(m, STEPS)[:2]]
    assert m.h_shape == (128, 8, 8)  # h_shape is found lazily by a forward pass: before recording starts
    downs = {}

    def record(name):
        def hook(_m, _i, out):
            downs.setdefault(name, []).append(out[0].clone())
        return hook

    handles = [m.unet.down_blocks[i].register_forward_hook(record(i)) for i in range(len(m.unet.down_blocks))]
    try:
        with torch.no_grad():
            one = hspace.asyrp(m, x_T, _h_dir(dh), strength=1.5, t_edit=0, t_boost=0, steps=STEPS, progress=False)
    finally:
        for h in handles:
            h.remove()
    for outs in downs.values():  # plain and edited pass of the first step see the same encoder outputs
        assert torch.equal(outs[0], outs[1])
    tb = torch.full((2,), t)
    a, ap = float(m.alphas_cumprod[t]), float(m.alphas_cumprod[t_next])

    def as_eps(out):  # the U-Net's output as eps, by the schedule (v = sqrt(a) eps - sqrt(1 - a) x0)
        return out if m.prediction_type == "epsilon" else a**0.5 * out + (1 - a) ** 0.5 * x_T

    h_hook = m.unet.mid_block.register_forward_hook(lambda _m, _i, out: out + 1.5 * dh)
    try:
        with torch.no_grad():
            eps_edit = as_eps(m.unet(x_T, tb).sample)
    finally:
        h_hook.remove()
    with torch.no_grad():
        eps = as_eps(m.unet(x_T, tb).sample)
    x0 = ((x_T - (1 - a) ** 0.5 * eps_edit) / a**0.5).clamp(-1, 1)
    expected = ap**0.5 * x0 + (1 - ap) ** 0.5 * eps
    assert torch.allclose(one.xs[1], expected, atol=1e-5)


def test_theorem_1_symmetric_shift_cancels_asymmetric_does_not():
    """Asyrp's Theorem 1 on the DDIM step itself: shifting eps by d in both P_t and D_t moves x_prev
    by (sqrt(1 - a_prev) - sqrt(a_prev (1 - a_t) / a_t)) d, which vanishes as the step shrinks;
    shifting it only in P_t moves x_prev by -sqrt(a_prev (1 - a_t) / a_t) d, which does not."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(num_train_timesteps=1000)
    ab = sched.alphas_cumprod.double()
    g = torch.Generator().manual_seed(0)
    x, eps, d = (torch.randn(4, 8, generator=g, dtype=torch.float64) for _ in range(3))
    ratios = {}
    for gap in (100, 20, 5):
        t, tp = 500, 500 - gap
        a, ap = float(ab[t]), float(ab[tp])
        base, _ = ddim_step(x, eps, a, ap)
        sym = ddim_step(x, eps + d, a, ap)[0] - base
        asym = ddim_step(x, eps + d, a, ap, eps_direction=eps)[0] - base
        c_sym, c_asym = (1 - ap) ** 0.5 - (ap * (1 - a) / a) ** 0.5, -((ap * (1 - a) / a) ** 0.5)
        assert torch.allclose(sym, c_sym * d, atol=1e-12) and torch.allclose(asym, c_asym * d, atol=1e-12)
        ratios[gap] = sym.norm() / asym.norm()
    assert ratios[5] < ratios[20] < ratios[100]
    # first order in the step: 5x the gap gives about 5x the ratio; at 5 of 1000 it is a few percent
    assert 3 < ratios[100] / ratios[20] < 7 and 3 < ratios[20] / ratios[5] < 7 and ratios[5] < 0.05, ratios


def test_boosting_is_stochastic_only_below_t_boost(shapes_model, x_T):
    dh = _h_dir(torch.zeros(128, 8, 8))
    with torch.no_grad():
        a = hspace.asyrp(shapes_model, x_T, dh, strength=0.0, t_edit=500, t_boost=300, steps=STEPS, seed=1,
                          progress=False)
        b = hspace.asyrp(shapes_model, x_T, dh, strength=0.0, t_edit=500, t_boost=300, steps=STEPS, seed=2,
                          progress=False)
    ts = a.timesteps.tolist()
    first_noisy = next(i for i, t in enumerate(ts) if 0 <= t < 300) + 1
    assert torch.equal(a.xs[:first_noisy], b.xs[:first_noisy])  # deterministic above t_boost
    assert not torch.allclose(a.result, b.result)  # noise from the seed below it


# -- distances and the rule -------------------------------------------------------------------------
def _naive_ssim(a: np.ndarray, b: np.ndarray, win: int = 7, sigma: float = 1.5, L: float = 2.0) -> float:
    """SSIM of two (H, W) images, window by window, from Wang et al. (2004)."""
    ax = np.arange(win) - (win - 1) / 2
    w = np.exp(-ax**2 / (2 * sigma**2))
    w = np.outer(w, w) / np.outer(w, w).sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    vals = []
    for i in range(a.shape[0] - win + 1):
        for j in range(a.shape[1] - win + 1):
            pa, pb = a[i:i + win, j:j + win], b[i:i + win, j:j + win]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_the_formula_window_by_window():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 12, 12, generator=g, dtype=torch.float64) * 2 - 1
    b = (a + 0.3 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(-1, 1)
    ours = interval.ssim(a, b)
    ref = [np.mean([_naive_ssim(a[n, c].numpy(), b[n, c].numpy()) for c in range(3)]) for n in range(2)]
    assert np.allclose(ours.numpy(), ref, atol=1e-10)


class _FakeLpipsModule:
    """Stand-in for the lpips package: LPIPS(net=...) is mean |a - b| per image, recording calls."""

    def __init__(self):
        self.calls = []

    def LPIPS(self, net, verbose=False):  # noqa: N802 (the package's name)
        outer = self

        class Net(torch.nn.Module):
            def forward(self, a, b):
                outer.calls.append((net, tuple(a.shape)))
                return (a - b).abs().mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)

        return Net()


def test_lpips_adapter_logic_and_the_rule_with_it(shapes_model):
    fake = _FakeLpipsModule()
    dist = interval.lpips_distance("vgg", module=fake)
    one = torch.zeros(2, 1, 4, 4)
    assert dist(one, one + 0.5).tolist() == [0.5, 0.5]
    assert fake.calls[-1] == ("vgg", (2, 3, 4, 4))  # one channel repeated to three
    with pytest.raises(ValueError, match="1- or 3-channel"):
        dist(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    x0 = diffgeo.data.shapes.make_scenes(3, seed=2).images
    iv = interval.edit_interval(shapes_model, x0, distance=dist, stride=100)
    assert iv.thresholds == (interval.LPIPS_EDIT, interval.LPIPS_BOOST) and iv.distance == "distance"
    # the rule, recomputed here from the returned curves: the first t whose mean distance reaches it
    def first(d, thr):
        return int(iv.timesteps[(d >= thr).nonzero()[0]]) if (d >= thr).any() else int(iv.timesteps[-1])

    assert iv.t_edit == first(iv.d_edit, 0.33) and iv.t_boost == first(iv.d_boost, 1.2)
    # and the curve values are the distance of the stated images: at t = 0, x_t is x0 up to sqrt(1 - a_0) noise
    assert iv.d_boost[0] < 0.02


def test_default_rule_lands_in_the_papers_region_on_shapes(shapes_model):
    """Calibration check: on real scenes the 1 - SSIM rule puts t_edit and t_boost within 0.1 T of
    the paper's CelebA-HQ values (538 and 167 of 1000), in the paper's order."""
    x0 = diffgeo.data.shapes.make_scenes(8, seed=3).images  # mean curves of 8 scenes; the window is +-100
    iv = interval.edit_interval(shapes_model, x0, stride=20)
    assert abs(iv.t_edit - interval.PAPER_T_EDIT) <= 100 and abs(iv.t_boost - interval.PAPER_T_BOOST) <= 100, iv
    assert iv.t_boost < iv.t_edit


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(strength=float("nan")), "strength must be a finite number"),
    (dict(strength=float("inf")), "strength must be a finite number"),
    (dict(t_edit=200, t_boost=400), r"t_edit=200 < t_boost=400"),
    (dict(t_edit=1000), "outside the schedule"),
    (dict(direction=torch.zeros(64, 8, 8)), r"\(64, 8, 8\).*\(128, 8, 8\)"),
    (dict(direction=Direction(torch.zeros(1, 128, 8, 8), torch.tensor([-1]), "h", "digits")),
     "made for model 'digits'"),
    (dict(direction=Direction(torch.zeros(1, 3, 32, 32), torch.tensor([-1]), "x", "shapes")), "x-space direction"),
])
def test_bad_asyrp_input(shapes_model, x_T, kwargs, match):
    args = dict(direction=_h_dir(torch.zeros(128, 8, 8)), strength=1.0, t_edit=500, t_boost=0)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        hspace.asyrp(shapes_model, x_T, args.pop("direction"), steps=STEPS, progress=False, **args)
    assert len(shapes_model.unet.mid_block._forward_hooks) == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(strength=float("nan")), "strength must be a finite number"),
    (dict(t=-5), "outside the schedule"),
    (dict(direction=torch.zeros(3, 16, 16)), r"\(3, 16, 16\).*\(2, 3, 32, 32\)"),
    (dict(method="walk"), "method must be one of"),
    (dict(boost=900), r"t_edit=500 < t_boost=900"),
])
def test_bad_edit_x_input(shapes_model, path, kwargs, match):
    args = dict(t=500, direction=torch.zeros(3, 32, 32), strength=1.0)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        xspace.edit_x(shapes_model, path.xs[1], args.pop("t"), args.pop("direction"), steps=STEPS, progress=False,
                       **args)


def test_text_model_needs_an_explicit_prompt():
    m = diffgeo.load("digits")
    x = torch.randn(1, *m.x_shape)
    with pytest.raises(ValueError, match="text-conditioned: pass prompt="):
        xspace.edit_x(m, x, 500, torch.zeros(*m.x_shape), strength=1.0, steps=STEPS, progress=False)
    with pytest.raises(ValueError, match="text-conditioned: pass prompt="):
        hspace.asyrp(m, x, torch.zeros(*m.h_shape), t_edit=500, t_boost=0, steps=STEPS, progress=False)


def test_edit_image_refuses_images_outside_the_range_or_off_grid(shapes_model):
    img = diffgeo.data.shapes.make_scenes(1, seed=1).images
    with pytest.raises(ValueError, match=r"images must be in \[-1, 1\]"):
        xspace.edit_image(shapes_model, img * 2, 500, torch.zeros(3, 32, 32), strength=1.0, steps=STEPS,
                           progress=False)
    with pytest.raises(ValueError, match="not on the 6-step grid"):
        xspace.edit_image(shapes_model, img, 333, torch.zeros(3, 32, 32), strength=1.0, steps=STEPS,
                           progress=False)


def test_rule_thresholds_that_cross_start_boosting_at_t_edit(shapes_model, x_T, caplog):
    # a model on which the rule puts t_boost above t_edit (the digits curves cross) still edits with
    # the rule's defaults: boosting starts at t_edit, and the log says so
    key = (model_fingerprint(shapes_model), None, 16)
    saved = interval._INTERVALS.get(key)
    interval._INTERVALS[key] = interval.EditInterval(300, 400, torch.arange(0, 1000, 100), torch.zeros(10),
                                                    torch.zeros(10), (0.36, 0.885), "ssim")
    try:
        with torch.no_grad(), caplog.at_level("WARNING", logger="diffgeo.editing.hspace"):
            tr = hspace.asyrp(shapes_model, x_T, torch.zeros(128, 8, 8), strength=0.0, steps=STEPS, seed=0,
                              progress=False)
    finally:
        if saved is None:
            del interval._INTERVALS[key]
        else:
            interval._INTERVALS[key] = saved
    assert tr.meta["t_edit"] == 300 and tr.meta["t_boost"] == 300
    assert "boosting starts at t_edit" in caplog.text
    with pytest.raises(ValueError, match="t_edit=300 < t_boost=400"):  # given explicitly, it is an error
        hspace.asyrp(shapes_model, x_T, torch.zeros(128, 8, 8), t_edit=300, t_boost=400, steps=STEPS, progress=False)


# -- renamed keywords and the interval cache --------------------------------------------------------
def test_old_keyword_names_still_work_and_warn(shapes_model, path, x_T):
    x_t, t = path.xs[2], int(path.timesteps[2])
    v = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        new = xspace.edit_x(shapes_model, x_t, t, v, strength=0.5, steps=STEPS, t_boost=200, seed=3, progress=False)
        with pytest.warns(DeprecationWarning, match=r"boost=\) is renamed t_boost="):
            old = xspace.edit_x(shapes_model, x_t, t, v, strength=0.5, steps=STEPS, boost=200, seed=3, progress=False)
        assert torch.equal(new.result, old.result) and old.meta["t_boost"] == 200
        with pytest.raises(TypeError, match="both boost="):
            xspace.edit_x(shapes_model, x_t, t, v, strength=0.5, steps=STEPS, boost=200, t_boost=200, progress=False)
        dh = torch.ones(128, 8, 8)
        new = hspace.asyrp(shapes_model, x_T, dh, t_edit=500, t_boost=0, steps=STEPS, progress=False)
        with pytest.warns(DeprecationWarning, match=r"noise_or_x_T=\) is renamed x_T="):
            old = hspace.asyrp(shapes_model, noise_or_x_T=x_T, direction=dh, t_edit=500, t_boost=0, steps=STEPS,
                               progress=False)
        assert torch.equal(new.result, old.result)


def test_default_interval_is_cached_per_weights_not_per_name(shapes_model, monkeypatch):
    import copy

    calls = []

    def fake_interval(model, images, **kwargs):
        calls.append(model)
        return interval.EditInterval(500, 100, torch.arange(2), torch.zeros(2), torch.zeros(2), (0.1, 0.2), "fake")

    monkeypatch.setattr(interval, "edit_interval", fake_interval)
    monkeypatch.setattr(interval, "_INTERVALS", {})
    other = copy.deepcopy(shapes_model)
    with torch.no_grad():
        next(other.unet.parameters()).add_(0.01)
    assert other.name == shapes_model.name
    a = interval.default_interval(shapes_model, n=1)
    assert interval.default_interval(shapes_model, n=1) is a and len(calls) == 1  # cached
    b = interval.default_interval(other, n=1)
    assert b is not a and calls[-1] is other and len(calls) == 2  # same name, other weights: its own rule


# -- issue 30: the edit loops' wrong cases (each failed at 65e3c67) -------------------------------------------------
def test_multi_timestep_x_direction_uses_the_vector_at_t(shapes_model, path):
    """A Direction stored at t = 166 and 664 edits at t = 664 with its 664 vector (-v), not its first (v): the
    reference is denoise from x_t - 5 v, computed without edit_x."""
    t = int(path.timesteps[1])
    x_t = path.xs[1]
    v = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(9))
    v = v / v.norm()
    d = Direction(torch.stack([v, -v]), torch.tensor([166, t]), "x", "shapes")
    with torch.no_grad():
        ours = xspace.edit_x(shapes_model, x_t, t, d, strength=5.0, steps=STEPS, progress=False).result
        ref = diffgeo.denoise(shapes_model, x_t - 5.0 * v, t, steps=STEPS, progress=False).result
        wrong = diffgeo.denoise(shapes_model, x_t + 5.0 * v, t, steps=STEPS, progress=False).result
    assert torch.equal(ours, ref)
    assert (ours - wrong).abs().max() > 1e-2  # the two vectors give different images: the test can tell them apart


def test_edit_blow_ups_raise_like_sample(shapes_model, path, x_T):
    """strength=1e30 and a direction function returning NaN: NonFiniteError naming the strength, never NaN images."""
    from diffgeo.core.checks import NonFiniteError

    t = int(path.timesteps[2])
    with torch.no_grad():
        for method in ("step", "guidance"):
            with pytest.raises(NonFiniteError, match=f"x-space edit.*t={t}.*lower strength"):
                xspace.edit_x(shapes_model, path.xs[2], t, torch.ones(3, 32, 32), strength=1e30, method=method,
                              iterations=1, steps=STEPS, progress=False)
        with pytest.raises(NonFiniteError, match=r"Asyrp blew up at step 0 \(t=830.*lower strength"):
            hspace.asyrp(shapes_model, x_T, torch.ones(128, 8, 8), strength=1e30, t_edit=500, t_boost=0, steps=STEPS,
                         progress=False)
        with pytest.raises(NonFiniteError, match=r"Asyrp blew up at step 0 \(t=830"):
            hspace.asyrp(shapes_model, x_T, lambda t: torch.full((1, 128, 8, 8), float("nan")), strength=1.0,
                         t_edit=500, t_boost=0, steps=STEPS, progress=False)
    assert len(shapes_model.unet.mid_block._forward_hooks) == 0  # the hook is gone after the failure


@pytest.mark.parametrize("kwargs, match", [
    (dict(use_clipped_model_output="no"), "use_clipped_model_output must be True or False"),
    (dict(use_clipped_model_output=0), "use_clipped_model_output must be True or False"),
    (dict(seed=-3, t_boost=166), "seed must be"),
    (dict(seed="7", t_boost=166), "seed must be"),
])
def test_edit_loops_check_clipped_eps_and_seed(shapes_model, path, x_T, kwargs, match):
    t = int(path.timesteps[2])
    with pytest.raises((TypeError, ValueError), match=match):
        xspace.edit_x(shapes_model, path.xs[2], t, torch.zeros(3, 32, 32), strength=1.0, steps=STEPS, progress=False,
                      **kwargs)
    with pytest.raises((TypeError, ValueError), match=match):
        hspace.asyrp(shapes_model, x_T, torch.zeros(128, 8, 8), strength=1.0, t_edit=t, steps=STEPS, progress=False,
                     **{"t_boost": 0, **kwargs})
