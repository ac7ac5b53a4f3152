"""The edit-quality table's scoring against scenes with known factors, its files, and bad input."""

import pytest
import torch

from diffgeo.data.shapes import make_scenes, render
from diffgeo.editing.table import EditQualityRow, EditQualityTable, Samples, read, score, task
from diffgeo.editing.table.tasks import _continuous


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
