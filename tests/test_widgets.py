"""The dashboards, driven from Python: set a widget's value, check the figure changed and equals
what the library computes and draws directly with the same parameters; caches recompute only
what changed; a failing callback leaves a message and a live dashboard."""

from __future__ import annotations

import pytest
import torch

import diffgeo
from diffgeo.viz.draw import draw_images

pytest.importorskip("ipywidgets")

N, STEPS, K = 2, 4, 2  # grid 750, 500, 250, 0; two images, two basis vectors: ~10 s here
S = 0.2  # a strength in the dashboard's relative units: x_t moves by 0.2 ||x_t|| (h_t by 0.2 mean ||h_t||)


@pytest.fixture(scope="module")
def traversal(shapes_model):
    from diffgeo.widgets import traversal_dashboard

    return traversal_dashboard(shapes_model, n=N, steps=STEPS, k=K, direction="local basis v1")


@pytest.fixture(scope="module")
def reference(shapes_model):
    """x_t at t=500 of the dashboard's samples and their local bases, computed directly."""
    with torch.no_grad():
        traj = diffgeo.sample(shapes_model, N, steps=STEPS, seed=0, progress=False)
    x_t = traj.xs[traj.timesteps.tolist().index(500)]
    bases = [diffgeo.local_basis(shapes_model, x_t[i:i + 1], 500, K, seed=0, progress=False) for i in range(N)]
    return x_t, torch.stack([b.v[0] for b in bases]), bases


def _norms(x):  # ||x_t|| of each image, written out: sqrt of the sum of squares over its pixels
    return x.pow(2).sum(dim=(1, 2, 3)).sqrt().view(-1, 1, 1, 1)


def test_strength_slider_redraws_what_the_library_gives(traversal, reference, shapes_model):
    from diffgeo.widgets._core import figure_png
    from diffgeo.widgets._readout import readout

    dash = traversal
    assert dash.last_ok and dash.controls["t_edit"].value == 500
    png_at_0 = dash.figures["x"].value
    misses = dash.state.memo.misses
    dash.controls["strength"].value = S
    assert dash.last_ok, dash.status.value
    assert dash.figures["x"].value != png_at_0 and dash.figures["h"].value
    # only the edits were computed (the preview, the x-space result, the Asyrp result): no
    # trajectory, no basis
    assert dash.state.memo.misses - misses == 3
    x_t, v, _ = reference
    with torch.no_grad():
        expected = diffgeo.denoise(shapes_model, x_t + S * _norms(x_t) * v, 500, steps=STEPS, progress=False).result
    torch.testing.assert_close(dash.view.x_images, expected, atol=1e-5, rtol=0)
    captions, marks = readout(shapes_model, expected)

    def draw(fig):
        draw_images(fig.subplots(), expected, nrow=N, captions=captions, marks=marks,
                    title=f"x-space: v1 {S:+.2f}, t=500")

    from diffgeo.widgets.traversal import figure_size

    assert dash.figures["x"].value == figure_png(draw, size=figure_size(N))


def test_asyrp_side_equals_the_library_call(traversal, reference, shapes_model):
    """The h side: Asyrp from the same x_T along u1 of the first image's basis at t_edit, scaled at
    each step to S times the samples' mean ||h_t|| (h read off the sampling path directly)."""
    import diffgeo.editing as editing

    dash = traversal
    dash.controls["strength"].value = S
    _, _, bases = reference
    with torch.no_grad():
        traj = diffgeo.sample(shapes_model, N, steps=STEPS, seed=0, progress=False)
        ts = traj.timesteps.tolist()
        norms = {t: float(shapes_model.h(traj.xs[i], t).flatten(1).norm(dim=1).mean())
                 for i, t in enumerate(ts) if t >= 0}  # the path's last label (-1) is the clean end
        u = bases[0].u[0].reshape(shapes_model.h_shape)
        u = u / u.norm()

        def dh(t):  # the callable form of an h direction: one vector per timestep
            return (u * norms[int(t)])[None]

        expected = editing.asyrp(shapes_model, traj.xs[0], dh, strength=S, t_edit=500, t_boost=0, steps=STEPS,
                                 seed=0, progress=False).result
    torch.testing.assert_close(dash.view.h_images, expected, atol=1e-5, rtol=0)


def test_preview_is_the_predicted_x0_after_the_edit(traversal, reference, shapes_model):
    """The coarse preview: x0 = (x - sqrt(1 - abar) eps) / sqrt(abar), clipped as the scheduler
    clips (written out here from the DDIM definition, not taken from the sampler)."""
    x_t, v, _ = reference
    x = x_t + 0.1 * _norms(x_t) * v
    with torch.no_grad():
        eps = shapes_model.eps(x, 500)
    a = float(shapes_model.alphas_cumprod[500])
    x0 = ((x - (1 - a) ** 0.5 * eps) / a ** 0.5).clamp(-1, 1)
    preview = traversal.state.view(strength=0.1, t_edit=500, direction="local basis v1", preview=True)
    torch.testing.assert_close(preview.x_images, x0, atol=1e-5, rtol=0)


def test_moving_back_is_served_from_the_cache(traversal):
    dash = traversal
    dash.controls["strength"].value = 0.1
    misses = dash.state.memo.misses
    dash.controls["strength"].value = S
    assert dash.state.memo.misses == misses and dash.last_ok


def test_a_failing_callback_shows_a_message_and_the_dashboard_stays_live(traversal, monkeypatch):
    dash = traversal

    def broken(*args, **kwargs):
        raise RuntimeError("a broken edit")

    monkeypatch.setattr(dash.state, "x_edit", broken)
    dash.controls["strength"].value = 0.45
    assert not dash.last_ok
    assert "a broken edit" in dash.status.value and "still live" in dash.status.value
    monkeypatch.undo()
    dash.controls["strength"].value = S
    assert dash.last_ok and dash.status.value == ""


def test_t_boost_offers_only_values_below_t_edit(traversal):
    dash = traversal
    c = dash.controls
    assert 750 not in c["t_boost"].options and list(c["t_boost"].options) == [0, 250]  # t_edit = 500
    c["t_boost"].value = 250
    assert dash.last_ok and dash.view.t_boost == 250
    c["t_edit"].value = 250  # t_boost 250 no longer fits: it falls back to 0 (off), no error
    assert dash.last_ok and list(c["t_boost"].options) == [0] and c["t_boost"].value == 0
    c["t_edit"].value = 500
    assert dash.last_ok and list(c["t_boost"].options) == [0, 250]


def test_dashboard_callbacks_run_on_one_torch_thread_and_restore(traversal):
    from diffgeo.widgets import DASHBOARD_THREADS, torch_threads

    seen = []
    before = torch.get_num_threads()
    with torch_threads(DASHBOARD_THREADS):
        seen.append(torch.get_num_threads())
    assert seen == [DASHBOARD_THREADS] and torch.get_num_threads() == before


def test_tangent_state_matches_direct_computation(shapes_model, reference):
    """Sample picker and timestep: the basis, its spectra and the distance between two samples
    equal the library's functions called directly on the same x_t."""
    from diffgeo.widgets import TangentState

    _, _, (other, direct) = reference
    state = TangentState(shapes_model, n=N, steps=STEPS, k=K)
    view = state.view(t=500, sample=1, compare=False)   # computed by the state itself
    torch.testing.assert_close(view.v, direct.v, atol=1e-6, rtol=0)
    freqs, power = diffgeo.radial_power_spectrum(direct)
    torch.testing.assert_close(view.power, power)
    state.memo.get(("basis", 500, 0), lambda: other)  # sample 0's basis: the reference's, to save time
    both = state.view(t=500, sample=1, compare=True)
    assert both.to_samples[0] == pytest.approx(diffgeo.grassmann_distance(direct, other), abs=1e-6)
    assert set(both.over_t) == {750, 500, 250, 0} and both.over_t[500] == 0.0


def test_states_refuse_bad_parameters_clearly(shapes_model):
    from diffgeo.widgets import CurvednessState, TextState, TraversalState

    with pytest.raises(ValueError, match="n must be"):
        TraversalState(shapes_model, n=0)
    with pytest.raises(ValueError, match="takes no prompts"):
        TextState(shapes_model)
    with pytest.raises(ValueError, match="at least 2"):
        CurvednessState(shapes_model, n=1)
    state = TraversalState(shapes_model, n=1, steps=STEPS, k=1)
    with pytest.raises(ValueError, match="t_edit must be"):
        state.view(strength=1.0, t_edit=123, direction="local basis v1")
    with pytest.raises(ValueError, match="direction must be"):
        state.view(strength=1.0, t_edit=500, direction="nowhere")


def test_traversal_defaults_to_a_shipped_named_direction_and_reproduces_its_edit(shapes_model):
    """The default direction is the first shipped named direction; at the default strength the
    dashboard shows exactly what diffgeo.editing.named.named_edit gives with the shipped strength."""
    from diffgeo.editing.named import list_named, load_named, named_edit, named_info
    from diffgeo.widgets import traversal_dashboard

    names = list_named("shapes")
    dash = traversal_dashboard(shapes_model, n=1, steps=STEPS, k=1)
    assert dash.controls["direction"].value == "named: " + names[0] and dash.last_ok, dash.status.value
    row = named_info("shapes", names[0])
    t_edit = dash.controls["t_edit"].value
    with torch.no_grad():
        x_T = diffgeo.sample(shapes_model, 1, steps=STEPS, seed=0, progress=False).xs[0]
        _, expected = named_edit(shapes_model, x_T, load_named("shapes", names[0]), info={**row, "t_edit": t_edit},
                                 steps=STEPS)
    shown = dash.view.x_images if row["space"] == "x" else dash.view.h_images
    torch.testing.assert_close(shown, expected, atol=1e-5, rtol=0)
    assert row["method"] in dash.view.h_note + dash.view.x_note


def test_states_adopt_the_plain_calls_results_and_refuse_foreign_ones(shapes_model, reference):
    """A notebook's plain calls (diffgeo.sample, local_basis, curvedness) can seed a dashboard's
    state so the first view computes nothing twice: adopted values are the ones the state would
    compute itself (checked against a fresh state), and a trajectory, basis or curvedness of other
    parameters is refused with a ValueError that leaves the state untouched."""
    from diffgeo.widgets import CurvednessState, TangentState

    _, _, (b0, b1) = reference                      # local bases at t=500 of samples 0 and 1, seed 0, tol 1e-3
    with torch.no_grad():
        traj = diffgeo.sample(shapes_model, N, steps=STEPS, seed=0, progress=False)
        other = diffgeo.sample(shapes_model, N, steps=STEPS, seed=1, progress=False)
    state = TangentState(shapes_model, n=N, steps=STEPS, k=K)
    with pytest.raises(ValueError, match="seed"):
        state.adopt_trajectory(other)
    with pytest.raises(ValueError, match="samples"):
        state.adopt_trajectory(diffgeo.sample(shapes_model, 1, steps=STEPS, seed=0, progress=False))
    assert len(state.memo) == 0
    state.adopt_trajectory(traj)
    with pytest.raises(ValueError, match="another x_t"):
        state.adopt_basis(b1, t=500, sample=0)        # sample 1's basis offered as sample 0's
    with pytest.raises(ValueError, match="tol"):
        state.adopt_basis(diffgeo.local_basis(shapes_model, state.x_t(500, 0), 500, K, seed=0, tol=1e-2,
                                              progress=False), t=500, sample=0)
    state.adopt_basis(b0, t=500, sample=0)
    misses = state.memo.misses
    view = state.view(t=500, sample=0, compare=False)
    assert state.memo.misses == misses, "the adopted basis was computed again"
    fresh = TangentState(shapes_model, n=N, steps=STEPS, k=K).view(t=500, sample=0, compare=False)
    torch.testing.assert_close(view.v, fresh.v, atol=1e-6, rtol=0)

    curved = CurvednessState(shapes_model, n=N, steps=STEPS, k=K, n_points=3, tol=1e-2)
    curved.adopt_trajectory(traj)
    xa, xb = curved.x_t(500, 0), curved.x_t(500, 1)
    c = diffgeo.curvedness(shapes_model, xa, xb, 500, k=K, n_points=3, tol=1e-2, progress=False)
    with pytest.raises(ValueError, match="chord_x"):
        curved.adopt_curvedness(c, a=0, b=1, t=750)   # the right parameters but another segment
    with pytest.raises(ValueError, match="n_points"):
        curved.adopt_curvedness(diffgeo.curvedness(shapes_model, xa, xb, 500, k=K, n_points=2, tol=1e-2,
                                                   progress=False), a=0, b=1, t=500)
    curved.adopt_curvedness(c, a=0, b=1, t=500)
    assert curved.view(a=0, b=1, t=500).curvedness is c


def test_the_samples_originals_are_ddim_from_their_x_T(shapes_model):
    """The traversal state takes the unedited samples from its sampling call instead of denoising
    x_T again: they equal a fresh diffgeo.denoise from the same x_T, bit for bit."""
    from diffgeo.widgets import TraversalState

    state = TraversalState(shapes_model, n=N, steps=STEPS, k=K)
    x_T = state.anchors("samples")[state.timesteps[0]]
    with torch.no_grad():
        again = diffgeo.denoise(shapes_model, x_T, state.timesteps[0], steps=STEPS, progress=False).result
    assert torch.equal(state.originals("samples"), again)


def test_text_state_adopts_the_plain_calls_path_and_bases():
    """The text notebook's plain calls (one x_T under two prompts, bases on each prompt's branch)
    seed its dashboard: the adopted path and basis are the ones given, and equal (to float32 batch
    effects) to the ones the state computes itself; a path from another x_T is refused."""
    from diffgeo.models.conditioning import default_guidance
    from diffgeo.widgets import TextState, sampler_settings

    model = diffgeo.load("shapes-text")
    w, steps = default_guidance(model), 3
    state = TextState(model, steps=steps, k=1, tol=1e-2)
    t = state.timesteps[0]
    noise = torch.randn(1, *model.x_shape, generator=torch.Generator().manual_seed(3)).expand(2, -1, -1, -1)
    with torch.no_grad():
        traj = diffgeo.sample(model, noise=noise, prompt=["a red circle", "a blue square"], guidance_scale=w,
                              steps=steps, progress=False, **sampler_settings(model))
        foreign = diffgeo.sample(model, 2, prompt="a red circle", guidance_scale=w, steps=steps, seed=5,
                                 progress=False, **sampler_settings(model))
    x_t = traj.xs[traj.timesteps.tolist().index(t)][:1]
    basis = diffgeo.local_basis(model, x_t, t, 1, prompt="a blue square", seed=0, tol=1e-2, progress=False)
    with pytest.raises(ValueError, match="x_T"):
        state.adopt(foreign, index=0)
    assert len(state.memo) == 0
    state.adopt(traj, index=0, bases=[basis])
    misses = state.memo.misses
    adopted = state.basis("a red circle", w, t, "a blue square")
    assert state.memo.misses == misses, "the adopted basis was computed again"
    assert adopted is basis
    assert torch.equal(state.trajectory("a red circle", w).xs, traj.xs[:, :1])
    # The state's own path runs one prompt (a CFG batch of 2), the notebook's two (a batch of 4):
    # other conv kernels, other float32 summation orders, so equal to ~1e-6 on some CPUs (2.3e-6
    # measured on CI), not bit for bit. The path under the other prompt differs by ~2.
    fresh = TextState(model, steps=steps, k=1, tol=1e-2)
    torch.testing.assert_close(fresh.trajectory("a red circle", w).xs, state.trajectory("a red circle", w).xs,
                               atol=1e-4, rtol=0)
    # x_t moved by 1e-5 moves this basis by ~1e-6 (measured), so 1e-5 bounds the batch effect above.
    torch.testing.assert_close(fresh.basis("a red circle", w, t, "a blue square").v, adopted.v, atol=1e-5, rtol=0)


def test_traversal_state_adopts_the_plain_samples(shapes_model):
    """The samples of a plain diffgeo.sample call with the dashboard's n, steps and seed become its
    images (x_t at every grid timestep and the unedited originals, equal to its own sampling);
    a call with another seed is refused."""
    from diffgeo.widgets import TraversalState

    with torch.no_grad():
        traj = diffgeo.sample(shapes_model, N, steps=STEPS, seed=0, progress=False)
        other = diffgeo.sample(shapes_model, N, steps=STEPS, seed=2, progress=False)
    state = TraversalState(shapes_model, n=N, steps=STEPS, k=K)
    with pytest.raises(ValueError, match="seed"):
        state.adopt_samples(other)
    assert len(state.memo) == 0
    state.adopt_samples(traj)
    fresh = TraversalState(shapes_model, n=N, steps=STEPS, k=K)
    assert torch.equal(state.originals("samples"), fresh.originals("samples"))
    mine, theirs = state.anchors("samples"), fresh.anchors("samples")
    assert sorted(mine) == sorted(theirs) and all(torch.equal(mine[t], theirs[t]) for t in mine)
