"""The edit-quality table's scoring against scenes with known factors, its files, and bad input."""

import json
from pathlib import Path

import pytest
import torch

import diffgeo
from diffgeo.data.shapes import RANGES, make_scenes, render
from diffgeo.editing.loco import x0_predictor
from diffgeo.editing.table import EditQualityRow, EditQualityTable, Samples, pick_samples, read, score, task
from diffgeo.editing.table.ceiling import perfect_edits
from diffgeo.editing.table.tasks import _continuous, classes
from diffgeo.editing.target import scene_target, target_edit, target_steps, target_value


def _samples(images, fit=False):
    return Samples(torch.zeros(len(images), 3, 32, 32), images, read("shapes", images),
                   _continuous("shapes", images, fit))


def test_score_reads_known_edits_of_rendered_scenes():
    # ground truth: re-render the same scenes with exactly one factor changed
    s = make_scenes(24, seed=41)
    f = s.factors
    keep = (f.colour != 4) & (f.size > 5.3) & (f.size < 8.7)
    f = f[keep.nonzero().flatten()[:12]]
    base = _samples(render(f))
    blue = render(f.replace(colour=f.colour * 0 + 4))
    sc = score(task("shapes", "colour:blue"), base, blue)
    assert sc["success"].all() and sc["preserved"].all() and sc["valid"].all()
    # a colour edit that also moves the shape by 4 px is a success that is not preserved
    moved = render(f.replace(colour=f.colour * 0 + 4, y=f.y + torch.where(f.y > 16, -4.0, 4.0)))
    sc = score(task("shapes", "colour:blue"), base, moved)
    assert sc["success"].all() and not sc["preserved"].any()
    # the unedited scenes do not read the target and are preserved
    sc = score(task("shapes", "colour:blue"), base, base.images)
    assert not sc["success"].any() and sc["preserved"].all()


def test_score_size_edit_keeps_position_within_tolerance_probe_and_fit_scene():
    s = make_scenes(64, seed=42)
    f = s.factors[(s.factors.size < 6.0).nonzero().flatten()[:4]]
    assert len(f) == 4
    for fit in (False, True):   # fit_scene is 0.2 s per image: 4 images
        base = _samples(render(f), fit)
        large = render(f.replace(size=f.size * 0 + 8.5))
        sc = score(task("shapes", "size:large"), base, large, fit=fit)
        assert sc["success"].all() and sc["preserved"].all()
        shifted = render(f.replace(size=f.size * 0 + 8.5, x=f.x + torch.where(f.x > 16, -3.0, 3.0)))
        assert not score(task("shapes", "size:large"), base, shifted, fit=fit)["preserved"].any()


@pytest.mark.parametrize("name, match", [("texture:rough", "known factors are colour, shape"),
                                         ("colour:pink", "known ones are red, yellow"),
                                         ("x:up", "known ones are left, centre, right")])
def test_unknown_factor_or_target_lists_the_known_ones(name, match):
    with pytest.raises(ValueError, match=match):
        task("shapes", name)


def test_digit_pairs_parse():
    t = task("digits", "digit:3->8")
    assert (t.source, t.target, t.name) == ("3", "8", "digit:3->8")


def test_table_round_trips_json_and_csv(tmp_path):
    r = EditQualityRow(model="shapes", task="colour:blue", method="loco", space="x", samples="generated",
                       candidate="loco1+", strength=3.0, t_edit=500, steps=10, n=8, success=0.5,
                       success_ci=(0.2, 0.8), preservation=1.0, preservation_ci=(0.7, 1.0), validity=1.0,
                       validity_ci=(0.7, 1.0), clean=0.5, clean_ci=(0.2, 0.8), ssim=0.9, ssim_ci=(0.85, 0.95),
                       transfer=0.5, meta={"calibration": []})
    js, cs = EditQualityTable([r], {"n": 8}).save(tmp_path / "eq")
    back = EditQualityTable.load(js)
    assert back.rows[0] == r and back.config == {"n": 8}
    header = cs.read_text().splitlines()[0].split(",")
    assert "success_lo" in header and "meta" not in header
    assert back.best("colour:blue") == r and back.best("shape:square") is None


# --- target-guided per-sample edits (diffgeo.editing.target) and the table's ceiling -----------------

def test_target_value_is_the_centre_of_the_target_bin():

    lo, hi = RANGES["x"]
    assert target_value("x", "right") == pytest.approx(hi - (hi - lo) / 6)      # centre of the last third
    lo, hi = RANGES["background"]
    assert target_value("background", "dark") == pytest.approx(lo + (hi - lo) / 6)
    assert target_value("shape", "square") == 1
    with pytest.raises(ValueError, match="known ones are red"):
        target_value("colour", "pink")


@pytest.mark.parametrize("name", ["colour:blue", "size:large", "x:right"])
def test_scene_target_added_to_a_rendered_scene_is_a_clean_edit(name):
    # ground truth: rendered scenes; the target change re-renders the fitted scene with one factor set,
    # so image + delta must read as the target with every other factor kept (12 scenes: a target change
    # that broke a factor in 1 of 4 scenes would pass with probability (3/4)^12 < 0.04)

    s = make_scenes(96, seed=43)
    t = task("shapes", name)
    r = read("shapes", s.images)
    keep = r["valid"] & (r[t.factor] != read_index(t))
    imgs = s.images[keep.nonzero().flatten()[:12]]
    assert len(imgs) == 12
    sc = score(t, _samples(imgs), (imgs + scene_target(imgs, t.factor, t.target)).clamp(-1, 1))
    assert sc["success"].all() and sc["valid"].all()
    assert sc["preserved"].sum() >= 11   # one scene of probe error at a rim allowed


def read_index(t):
    return classes("shapes")[t.factor].index(t.target)


def test_gauss_newton_target_step_reduces_the_x0_residual():
    # independent check by finite differences of x0_hat: the step must move x0_hat towards x0_hat + delta

    m = diffgeo.load("shapes")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    delta = torch.zeros(2, 3, 32, 32)
    delta[:, 2, 10:20, 10:20] = 0.5
    v = target_steps(m, x, 600, delta, mode="gauss_newton")
    f = x0_predictor(m, 600)
    eps = 1e-2
    with torch.no_grad():
        for i in range(2):
            moved = (f(x[i] + eps * v[i]) - f(x[i])) / eps
            assert (moved - delta[i]).norm() < delta[i].norm()


def test_x0_target_step_moves_the_clean_part_of_x_t_exactly():

    m = diffgeo.load("shapes")
    g = torch.Generator().manual_seed(9)
    x0, noise, delta = (torch.randn(1, 3, 32, 32, generator=g) for _ in range(3))
    a = float(m.alphas_cumprod[300])
    x_t = a ** 0.5 * x0 + (1 - a) ** 0.5 * noise
    moved = x_t + target_steps(m, x_t, 300, delta)
    assert torch.allclose(moved, a ** 0.5 * (x0 + delta) + (1 - a) ** 0.5 * noise, atol=1e-5)
    with pytest.raises(ValueError, match="one target change per sample"):
        target_steps(m, x_t, 300, delta[0])


def test_perfect_edits_are_read_clean_by_the_table():
    # the readers' ceiling: exact re-renders with one factor changed score clean (16 scenes per task)

    for name in ("colour:blue", "x:right"):
        r = perfect_edits(task("shapes", name), n=16, seed=5)
        assert r["n"] == 16 and r["clean"] == 1.0


def _clean_target_rows():
    """The (at most two) target_x rows of the saved table that met the issue's targets on 64 held-out samples."""

    p = Path(__file__).resolve().parent.parent / "figures" / "edit_quality.json"
    rows = json.loads(p.read_text())["rows"] if p.is_file() else []
    rows = [r for r in rows if r["method"] == "target_x" and r["samples"] == "generated" and r["n"] >= 64
            and r["success"] >= 0.9 and r["preservation"] >= 0.9 and r["validity"] >= 0.95]
    return sorted(rows, key=lambda r: -r["clean"])[:2]


@pytest.mark.parametrize("row", _clean_target_rows(), ids=lambda r: r["task"])
def test_target_edit_is_clean_on_fresh_samples(row):
    # 32 fresh samples (seed 777; the table used 11, 22, 33) at the row's t_edit and strength (chosen on
    # calibration samples). Bound: >= 26 of 32 for success, preservation and validity each; a method
    # whose true rate is 0.95 falls below it with probability 0.0009 (binomial tail), one at 0.70
    # passes it with probability 0.09, so the check separates the target (0.90) from a miss.

    m = diffgeo.load("shapes")
    t = task("shapes", row["task"])
    ev = pick_samples(m, t, 32, seed=777, steps=int(row["steps"]))
    before, after = target_edit(m, ev.x_T, t.factor, t.target, t_edit=int(row["t_edit"]),
                                strength=float(row["strength"]), steps=int(row["steps"]))
    assert torch.allclose(before, ev.images, atol=1e-5)
    sc = score(t, ev, after)
    for key in ("success", "preserved", "valid"):
        assert int(sc[key].sum()) >= 26, f"{row['task']}: {key} {int(sc[key].sum())} of 32 fresh samples"


def test_report_claims_the_best_single_direction_not_the_per_sample_reference(tmp_path):
    """Claims 8a-e judge directions a user can apply to any sample: the renderer-based target_x reference
    (clean 0.95 here) goes to the notes, the claim takes the best single direction (clean 0.20: not
    reproduced), and a table whose single direction meets every bound reads reproduced."""
    from types import SimpleNamespace as NS

    from diffgeo.analyses.edit_quality import ANALYSIS
    from diffgeo.editing.table import EditQualityTable
    from diffgeo.editing.table.run import EditQualityRow

    def row(method, clean, success, preservation, task="colour:blue"):
        return EditQualityRow("shapes", task, method, "x", "generated", "c", 1.0, 100, 10, 64, success=success,
                              preservation=preservation, validity=1.0, clean=clean, clean_ci=(clean - 0.1, clean + 0.05))

    EditQualityTable([row("target_x", 0.95, 1.0, 0.95), row("mean_difference_x", 0.20, 0.3, 0.9),
                      row("loco", 0.92, 0.95, 0.93, task="size:large")]).save(tmp_path / "edit_quality")
    res = ANALYSIS.run(NS(out=tmp_path, primary="shapes"))
    by_note = {c.note.split(" on ")[0]: c for c in res.claims}
    assert [c.verdict for c in res.claims] == ["not reproduced", "reproduced"]
    assert by_note["colour:blue"].value == pytest.approx(0.20) and "mean_difference_x" in by_note["colour:blue"].note
    assert any("target_x" in n and "colour:blue" in n for n in res.notes)
