"""Controls that cannot fail, and guidance that keeps the prompted colour.

1. Every control of every dashboard, set to each of its extreme values (slider ends, every
   option of a menu), leaves the dashboard without an error: driven through the dashboards'
   widgets in Python (the state objects compute; no browser). Linked ranges (t_boost below t_edit,
   "to" unlike "from") are followed as the dashboard offers them.
2. Guidance over the text dashboard's whole slider range keeps the colour the prompt names, read
   off the shape itself by the shapes reader on fresh seeds; the raw-eps sampler, which turns the
   colour into its complement (issue 29), fails the same bound (so the test can fail).
"""

from __future__ import annotations

import pytest
import torch

import diffgeo

pytest.importorskip("ipywidgets")


def _extremes(control):
    """The values a control can take at its ends: both ends of a slider, every option of a menu."""
    if hasattr(control, "options"):
        return [o[1] if isinstance(o, tuple) else o for o in control.options]
    return [control.min, control.max]


def _sweep_extremes(dash):
    tried = 0
    for name, control in dash.controls.items():
        if not hasattr(control, "options") and not hasattr(control, "min"):
            continue  # free text boxes: covered by the text test below
        for value in _extremes(control):
            if value not in _extremes(control):  # a linked range moved under us
                continue
            control.value = value
            assert dash.last_ok, f"{name}={value!r}: {dash.status.value}"
            tried += 1
        # back to the first option so later controls start from a valid place
        control.value = _extremes(control)[0]
        assert dash.last_ok, dash.status.value
    return tried


def test_traversal_controls_cannot_fail_on_shapes_and_digits(shapes_model):
    from diffgeo.widgets import traversal_dashboard

    for model in (shapes_model, diffgeo.load("digits")):
        dash = traversal_dashboard(model, n=1, steps=4, k=1, tol=1e-2, preview=False)
        assert dash.last_ok, dash.status.value
        assert _sweep_extremes(dash) >= 6
        # the extreme strengths give finite images, not NaN, for every kind of direction
        for direction in dash.controls["direction"].options if model is shapes_model else []:  # every kind once
            dash.controls["direction"].value = direction
            for s in (dash.controls["strength"].min, dash.controls["strength"].max):
                dash.controls["strength"].value = s
                assert dash.last_ok, (direction, s, dash.status.value)
                shown = [x for x in (dash.view.x_images, dash.view.h_images) if x is not None]
                assert shown and all(torch.isfinite(x).all() for x in shown), (direction, s)


def test_text_dashboard_controls_cannot_fail_and_presets_fit_the_model():
    from diffgeo.widgets import text_dashboard
    from diffgeo.widgets.text import presets_for

    assert not any("handwritten" in p for ps in presets_for("shapes-text").values() for p in ps)
    assert all("handwritten" in ps[0] for ps in presets_for("digits").values())
    dash = text_dashboard(diffgeo.load("shapes-text"), steps=3, k=1, tol=5e-2, over_t=False)
    assert dash.last_ok, dash.status.value
    assert _sweep_extremes(dash) >= 6
    dash.controls["over_t"].value = True  # the curve over t, once
    assert dash.last_ok and dash.view.cond_vs_uncond, dash.status.value
    dash.controls["prompt2"].value = ""  # an empty box is the unconditional prompt, not an error
    assert dash.last_ok, dash.status.value


def test_text_state_takes_a_list_of_prompts_not_a_string():
    from diffgeo.widgets import TextState

    state = TextState(diffgeo.load("shapes-text"), steps=3, k=1)
    with pytest.raises(TypeError, match="list of strings"):
        state.view(prompts="a red circle", t=state.timesteps[0], guidance_scale=1.5)
    assert state.memo.misses == 0  # refused before any work


def test_curvedness_never_offers_a_segment_from_a_sample_to_itself(shapes_model):
    from diffgeo.widgets import curvedness_dashboard

    dash = curvedness_dashboard(shapes_model, n=3, steps=3, k=1, n_points=2, tol=1e-2)
    for a in (0, 1, 2):
        dash.controls["a"].value = a
        assert dash.last_ok, dash.status.value
        assert a not in [o[1] for o in dash.controls["b"].options]


def test_guidance_over_the_slider_range_keeps_the_prompted_colour():
    """Fresh seeds (never used in the measurement of GUIDANCE_MAX), the slider's largest guidance.

    Sample count: 3 colours x 16 = 48 samples per setting. The measurement read 96 of 96 (95%
    interval 0.96-1) with the dashboards' sampler; at a true rate of 0.96, 41 or more of 48 (the
    bound, 0.85) fail to be read with probability < 0.5%. With the raw eps the rate was <= 0.25 at
    guidance 4; 24 samples put a rate of 0.5 or more (the bound the raw sampler must miss) more
    than 2.8 standard errors (0.09) above it.
    """
    from diffgeo.data.shapes import COLOURS
    from diffgeo.readers import get_reader
    from diffgeo.widgets._reference import GUIDANCE_MAX, sampler_settings

    model, reader = diffgeo.load("shapes-text"), get_reader("shapes")

    def rate(per_colour, **settings):
        hits = 0
        for i, colour in enumerate(("red", "blue", "green")):
            with torch.no_grad():
                x = diffgeo.sample(model, per_colour, seed=7_000 + i, prompt=f"a {colour} circle",
                                   guidance_scale=GUIDANCE_MAX, steps=10, progress=False, **settings).result
            hits += int((reader.read(x)["colour"] == COLOURS.index(colour)).sum())
        return hits / (3 * per_colour)

    # the dashboards' sampler is the model's own default (diffgeo.sample with no setting: the zoo's clipped_eps)
    assert sampler_settings(model) == {"use_clipped_model_output": model.clipped_eps}
    assert rate(16) >= 0.85
    assert rate(8, use_clipped_model_output=False) < 0.5  # the artefact the setting removes
