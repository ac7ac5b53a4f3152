"""Named directions (diffgeo.editing.named): the shipped ones edit fresh samples as their table rows
say, bad names are refused with the known ones, and ``diffgeo edit image`` refuses bad arguments."""

import math
import subprocess
import sys

import pytest
import torch

import diffgeo
from diffgeo.editing.directions import Direction
from diffgeo.editing.named import list_named, load_named, named_edit, named_info, ship_named
from diffgeo.editing.table import pick_samples, score, task

FRESH_SEED = 777  # the table used seeds 11 (calibration), 22 (generated) and 33 (real)


def _checked():
    """(model, name, steps factor) of the two shipped shapes directions and the one digits direction with
    the most clean edits in their table rows, at their rows' steps, and of the best h-space shapes one at
    twice its row's steps (named_edit rescales Asyrp's per-step strength) (each check costs a 32-sample
    draw and edit; the rest carry the same code path)."""
    out = []
    for model, top in (("shapes", 2), ("digits", 1)):
        rows = [named_info(model, n) for n in list_named(model)]
        rows = sorted([r for r in rows if not r.get("provisional") and r.get("n", 0) >= 32],
                      key=lambda r: -float(r.get("clean", 0.0)))
        out += [(model, r["name"], 1) for r in rows[:top]]
        if model == "shapes":
            out += [(model, r["name"], 2) for r in rows if r["space"] == "h"][:1]
    return out


@pytest.mark.parametrize("model_name, name, factor", _checked(), ids=lambda v: str(v))
def test_shipped_direction_reaches_its_recorded_rates_on_fresh_samples(model_name, name, factor):
    # n = 32 fresh samples against the rate recorded on 64 held-out ones: the bound is the recorded rate
    # minus 3.29 standard deviations of the difference of two binomial rates (32 and 64 samples), so a
    # direction that does what its row says fails this check with probability below 0.001 per rate.
    # Digits have no preservation column (their reader reads the digit only). factor 2: twice the row's
    # steps, where an unscaled Asyrp strength overshoots (size:large: validity 0.28 against 0.88).
    row = named_info(model_name, name)
    m = diffgeo.load(model_name)
    t = task(model_name, name)
    prompt = "" if m.is_conditional else None
    steps = int(row["steps"]) * factor
    ev = pick_samples(m, t, 32, seed=FRESH_SEED, steps=steps, prompt=prompt)
    _, out = named_edit(m, ev.x_T, name, steps=steps)
    sc = score(t, ev, out)
    for key, col in (("success", "success"), ("preserved", "preservation"), ("valid", "validity")):
        p = float(row[col]) if row.get(col) is not None else float("nan")
        if math.isnan(p):
            assert model_name == "digits" and col == "preservation", f"{name}: no recorded {col}"
            continue
        bound = p - 3.29 * math.sqrt(p * (1 - p) * (1 / 32 + 1 / row["n"]))
        got = float(sc[key].float().mean())
        assert got >= bound, (f"{name} at {steps} steps: {col} {got:.2f} on 32 fresh samples, recorded {p:.2f} "
                              f"(bound {bound:.2f})")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known ones are .*colour:blue"):
        load_named("shapes", "colour:pink")


def test_a_direction_of_another_model_is_refused(tmp_path):
    d = Direction(torch.ones(1, 1, 16, 16), torch.tensor([-1]), "x", "digits")
    ship_named(d, {"name": "digit:1->7", "method": "toy", "space": "x", "strength": 1.0, "t_edit": 500, "steps": 10},
               folder=tmp_path)
    ship_named(Direction(torch.ones(1, 3, 32, 32), torch.tensor([-1]), "x", "shapes"),
               {"name": "colour:blue", "method": "toy", "space": "x", "strength": 1.0, "t_edit": 500, "steps": 10},
               folder=tmp_path)
    with pytest.raises(ValueError, match="made for digits, not 'shapes'"):
        load_named("shapes", "digit:1->7", folder=tmp_path)
    with pytest.raises(ValueError, match="made for shapes, not 'nope'"):
        named_info("nope", "colour:blue", folder=tmp_path)
    with pytest.raises(ValueError, match="no named directions are shipped for model 'nope'"):
        named_info("nope", "x:left", folder=tmp_path)


def test_shipped_files_match_their_rows():
    for model in ("shapes", "digits"):
        for name in list_named(model):
            d, row = load_named(model, name), named_info(model, name)
            assert d.model == model and d.space == row["space"] and row["name"] == name
            assert type(d).__name__ == row.get("kind", "Direction")
            assert math.isfinite(float(row["strength"]))


def test_a_shipped_learned_f_t_loads_without_its_optimizer_and_edits_as_asyrp_with_it(tmp_path):
    """A learned f_t (Asyrp's per-sample edit) ships as a named direction: the loaded network computes
    what the trained one does, without the Adam state, and named_edit runs it as its row says (Asyrp
    with the f_t at the row's strength and t_edit, t_boost 0; asyrp with an f_t is checked against a
    plain torch forward hook in test_learned_direction)."""
    from diffgeo.editing.hspace import asyrp
    from diffgeo.editing.learned import LearnedDirection, train_direction
    from diffgeo.editing.objectives import probe_objective

    m = diffgeo.load("shapes")
    ld = train_direction(m, probe_objective(m, "size", "large"), steps=2, batch_size=2, n_images=2, t_edit=500,
                         progress=False)
    assert ld.optim, "training keeps the Adam state (what a resume needs)"
    js = ship_named(ld, {"name": "size:large", "method": "learned_ft", "space": "h", "strength": 40.0, "t_edit": 500,
                         "steps": 4}, folder=tmp_path)
    assert '"kind": "LearnedDirection"' in js.read_text()
    back = load_named("shapes", "size:large", folder=tmp_path)
    assert isinstance(back, LearnedDirection) and back.optim == {} and back.space == "h"
    h, t = torch.randn(3, *m.h_shape, generator=torch.Generator().manual_seed(1)), torch.tensor([500, 700, 900])
    with torch.no_grad():
        assert torch.equal(back(h, t), ld(h, t)) and back(h, t).abs().max() > 0
    x_T = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))  # t_edit 500 is on the 4-step grid
    before, after = named_edit(m, x_T, "size:large", folder=tmp_path)
    with torch.no_grad():
        expected = asyrp(m, x_T, ld, strength=40.0, t_edit=500, t_boost=0, steps=4, progress=False).result
        plain = diffgeo.sample(m, noise=x_T, steps=4, progress=False).result
    assert torch.allclose(after, expected, atol=1e-6) and torch.allclose(before, plain, atol=1e-6)
    assert (after - before).abs().max() > 1e-4, "the f_t at strength 40 changed nothing"


def test_named_edit_at_strength_zero_is_the_unedited_sample():
    m = diffgeo.load("shapes")
    x_T = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    before, after = named_edit(m, x_T, "colour:blue", strength=0.0, steps=4)
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("args, match", [
    (["missing.png", "--direction", "colour:blue", "--out", "o"], "no such file"),
    (["IMG", "--direction", "colour:pink", "--out", "o"], "known: background:dark"),
    (["IMG", "--direction", "x.safetensors", "--out", "o"], "no such file"),
])
def test_edit_image_cli_refuses_bad_arguments_with_one_line(tmp_path, args, match):
    from diffgeo.cli.edit_image import write_image
    from diffgeo.data.shapes import make_scenes

    img = write_image(make_scenes(1, seed=1).images, tmp_path / "a.png")
    args = [str(img) if a == "IMG" else a for a in args]
    r = subprocess.run([sys.executable, "-m", "diffgeo", "edit", "image", *args], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], r.stderr
    assert not (tmp_path / "o").exists()
