"""The report on a tiny preset and a tiny random U-Net: self-contained HTML, claims.json, skipped text
analyses on an unconditional model, bad input, failed writes and a cache written for other weights."""

from __future__ import annotations

import base64
import errno
import json
import re

import pytest
import torch

from conftest import save_unet_folder, tiny_unet_config
from diffgeo.analyses import Preset
from diffgeo.analyses.report import ReportWriteError, run_report
from diffgeo.cli.report import main

TEST_PRESET = Preset("test", n_samples=3, steps=3, n_t=3, k=2, tol=1e-2, n_prompts=3, n_pairs=2, n_points=3,
                     n_guidance=2)


def _tiny_folder(path, seed):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return save_unet_folder(path, UNet2DModel(**tiny_unet_config(sample_size=8)))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    folder = _tiny_folder(root / "tiny-model", seed=0)
    report = run_report([str(folder)], preset=TEST_PRESET, out=root / "out",
                        analyses=["coarse_to_fine", "discrepancy", "text"], progress=False)
    return root, folder, report


def test_html_is_self_contained_and_matches_claims_json(first_run):
    root, _, report = first_run
    out = root / "out"
    page = (out / "report.html").read_text()
    srcs = re.findall(r"src='([^']*)'", page)
    pngs = sorted(out.glob("*.png"))
    assert len(srcs) == len(pngs) == len(report.figures) >= 3
    for src in srcs:   # every figure embedded, none referenced by path or URL
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src='http" not in page and "href=" not in page and "<script" not in page
    data = json.loads((out / "claims.json").read_text())
    ids = [c["id"] for c in data["claims"]]
    assert ids == ["1", "4", "4b", "4c", "5a", "5b", "5c"]
    for c in data["claims"]:
        assert f"<td>{c['id']}</td>" in page and c["verdict"] in page
    assert not list(out.glob(".report-*"))          # the temporary folder is gone


def test_text_on_unconditional_model_is_skipped_with_reason(first_run):
    _, _, report = first_run
    text = [c for c in report.claims if c.analysis == "text"]
    assert [c.id for c in text] == ["5a", "5b", "5c"]
    for c in text:
        assert c.verdict == "skipped" and "unconditional" in c.note and c.value != c.value   # NaN: no number
    measured = [c for c in report.claims if c.analysis != "text"]
    # 3 samples, under the rules' minimum of 5 units: measured against a null, but no verdict
    assert measured and all(c.n == 3 and c.verdict == "too few units" for c in measured)
    assert all(c.source and c.null and c.unit and c.rule_version and c.excess == c.excess for c in measured)


def test_cache_from_other_weights_is_detected(first_run, tmp_path):
    root, folder, report = first_run
    cache = root / "out" / "cache"
    before = len(list(cache.rglob("*.safetensors")))
    again = run_report([str(folder)], preset=TEST_PRESET, out=root / "out", analyses=["coarse_to_fine"], progress=False)
    assert not [n for n in again.notes if "written by" in n]                  # same weights: cache used
    assert len(list(cache.rglob("*.safetensors"))) == before
    assert again.claims[0].value == report.claims[0].value
    _tiny_folder(folder, seed=1)                                              # other weights, same path
    other = run_report([str(folder)], preset=TEST_PRESET, out=root / "out", analyses=["coarse_to_fine"], progress=False)
    assert [n for n in other.notes if "written by" in n and "context" in n]
    assert len(list(cache.rglob("*.safetensors"))) == before + TEST_PRESET.n_samples   # recomputed, not reused
    assert other.claims[0].value != report.claims[0].value


def test_failed_write_leaves_no_report(first_run, tmp_path, monkeypatch):
    root, folder, _ = first_run
    out = tmp_path / "out"
    run_report([str(folder)], preset=TEST_PRESET, out=out, analyses=["coarse_to_fine"], cache=root / "out" / "cache",
               progress=False)
    assert (out / "report.html").exists()
    import diffgeo.analyses.report as rep

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rep, "_figure", full_disk)
    with pytest.raises(ReportWriteError, match="No space left"):
        run_report([str(folder)], preset=TEST_PRESET, out=out, analyses=["coarse_to_fine"],
                   cache=root / "out" / "cache", progress=False)
    assert not (out / "report.html").exists() and not (out / "claims.json").exists()
    assert not list(out.glob(".report-*"))


def test_bad_out_and_unknown_analysis(tmp_path, capsys):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    with pytest.raises(ReportWriteError, match="is a file"):
        run_report(["shapes"], out=not_a_folder, progress=False)
    with pytest.raises(ReportWriteError, match="cannot write"):
        run_report(["shapes"], out=not_a_folder / "sub", progress=False)
    with pytest.raises(ValueError, match="known: coarse_to_fine, shared_tangents"):
        run_report(["shapes"], analyses=["nope"], out=tmp_path / "o", progress=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["--analyses", "coarse_to_fine,nope", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2 and "known: coarse_to_fine" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()     # nothing written for bad input
