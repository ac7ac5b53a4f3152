"""Every command-line verb (and every subverb of ``edit``): bad arguments give exactly one ``error:``
line on standard error and exit status 2, before any model is loaded, any folder is made or any
file is removed (issue 30).

The CLI runs in-process (``diffgeo.cli.main``); every loader and every costly step the verbs call
(``load``, ``train``, ``run_report``, ``train_probe``, ``sample``, ...) is replaced by one that fails
the test, so an error that came after loading or working cannot pass. The working folder is an
empty ``tmp_path``: default outputs (``figures/``, ``runs/NAME``) would appear there.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

import diffgeo
import diffgeo.models.loading
from diffgeo.cli import VERBS, main

#: What the verbs call that loads a model or does work: none may run for bad arguments.
WORK = ("load", "train", "export", "average", "run_report", "train_probe", "evaluate_probe", "train_direction",
        "run_tour", "sample", "local_basis", "transfer_edit", "edit_interval", "invert", "edit_properties",
        "factor_directions", "evaluate_digits", "sample_images", "save_prompt_grid", "sweep", "text_alignment")
EDIT_SUBVERBS = ["interval", "roundtrip", "properties"] + (
    ["image"] if importlib.util.find_spec("diffgeo.cli.edit_image") is not None else [])
RO = "/proc/diffgeo-test-out"   # no one, root included, can create anything there

# (argv, a fragment of the error line). FILE: a file in tmp_path; OLD: a folder holding an earlier
# report; BROKEN: a model folder without weights. Each is created before the listing is taken.
CASES = [
    (["tour", "--n", "0"], "--n"),
    (["tour", "--out", "FILE"], "is a file"),
    (["tour", "--model", "shapse"], "unknown model 'shapse'"),
    (["train", "shapes", "--steps", "0"], "--steps"),          # 0 is not "the recipe's 3.5 h"
    (["train", "shapes", "--weight-cap", "nan"], "--weight-cap"),
    (["train", "shapes", "--ckpt-every", "0"], "--ckpt-every"),
    (["train", "shapes", "--threads", "-1"], "--threads"),
    (["train", "shapes", "--init", "/nonexistent", "--export-to", "exp"], "--init /nonexistent does not exist"),
    (["train", "shapes", "--steps", "1"], "--overwrite-embedded"),   # the shipped weights stay
    (["train", "shapes", "--export-only", "--export-to", "exp"], "holds no checkpoint"),
    (["train", "shapes", "--run-dir", "FILE", "--no-export"], "is a file"),
    (["probe", "--steps", "0"], "--steps"),
    (["probe", "--out", RO + "/probe"], "not writable"),
    (["evaluate", "--out", "FILE"], "is a file"),
    (["evaluate", "--model", "shapse"], "unknown model"),
    (["evaluate", "--seed", "-2"], "--seed"),
    (["alignment", "shapes-text", "--scales", "nan"], "--scales"),
    (["alignment", "shapes-text", "--out", RO], "not writable"),
    (["alignment", "shapes"], "invalid choice"),
    (["report", "--model", "shapse", "--out", "OLD"], "unknown model 'shapse'"),
    (["report", "--model", "BROKEN", "--out", "new-report"], "no U-Net"),
    (["report", "--out", "FILE"], "is a file"),
    (["report", "--out", RO], "not writable"),
    (["report", "--fast", "--preset", "full"], "disagree"),
    (["edit", "interval", "--n", "0"], "--n"),
    (["edit", "roundtrip", "--model", "shapse"], "unknown model"),
    (["edit", "roundtrip", "--seed", "-1"], "--seed"),
    (["edit", "properties", "--model", "nope"], "unknown model 'nope'"),
    (["edit", "properties", "--out", "FILE"], "is a file"),
    (["edit", "properties", "--steps", "0"], "--steps"),
    (["learn-direction", "--out", RO + "/f"], "not writable"),
    (["learn-direction", "--out", "d", "--lr", "nan"], "--lr"),
    (["learn-direction", "--out", "d", "--model", "shapse"], "unknown model"),
    (["learn-direction", "--out", "d", "--factor", "colour", "--target", "mauve"], "target='mauve'"),
    (["learn-direction", "--out", "d", "--factor", "texture"], "factor='texture'"),
    (["transfer", "--strength", "nan"], "--strength"),
    (["transfer", "--t", "123"], "not on the 10-step grid"),
    (["transfer", "--out", RO + "/t"], "not writable"),
    (["transfer", "--k", "2", "--direction", "2"], "--direction"),
    (["models", "extra"], "unrecognized arguments"),
    (["no-such-verb"], "unknown verb"),
]
if importlib.util.find_spec("lpips") is None:
    CASES.append((["edit", "interval", "--distance", "lpips"], "needs the optional 'lpips' package"))
# every verb and every edit subverb refuses an option it does not have (or names its required arguments first)
CASES += [([verb, "--no-such-option"], "arguments") for verb in VERBS if verb not in ("train", "edit")]
CASES += [(["train", "shapes", "--no-such-option"], "--no-such-option")]
CASES += [(["edit", sub, "--no-such-option"], "arguments") for sub in EDIT_SUBVERBS]


def _never(name: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} ran before the bad argument was refused")
    return fail


@pytest.fixture
def no_work(monkeypatch):
    """Every loader and every costly step the verbs can reach fails the test if called."""
    monkeypatch.setattr(diffgeo, "load", _never("diffgeo.load"))
    monkeypatch.setattr(diffgeo.models.loading, "load", _never("diffgeo.models.loading.load"))
    for module in {m for m, _ in VERBS.values()} | {"edit_image"}:
        if importlib.util.find_spec(f"diffgeo.cli.{module}") is None:
            continue
        mod = importlib.import_module(f"diffgeo.cli.{module}")
        for name in WORK:
            if callable(getattr(mod, name, None)):
                monkeypatch.setattr(mod, name, _never(f"diffgeo.cli.{module}.{name}"))


def _prepare(tmp_path: Path, argv: list[str]) -> list[str]:
    out = []
    for arg in argv:
        if arg == "FILE":
            (tmp_path / "a-file").write_text("not a folder")
            arg = str(tmp_path / "a-file")
        elif arg == "OLD":
            old = tmp_path / "old-report"
            old.mkdir()
            (old / "report.html").write_text("<p>the earlier report</p>")
            (old / "claims.json").write_text("[]")
            arg = str(old)
        elif arg == "BROKEN":
            (tmp_path / "broken" / "scheduler").mkdir(parents=True)
            arg = str(tmp_path / "broken")
        out.append(arg)
    return out


def _listing(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_the_cases_cover_every_verb_and_edit_subverb():
    covered = {argv[0] for argv, _ in CASES}
    assert set(VERBS) <= covered
    assert set(EDIT_SUBVERBS) <= {argv[1] for argv, _ in CASES if argv[0] == "edit"}


@pytest.mark.parametrize("argv, fragment", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_arguments_give_one_error_line_exit_2_and_touch_nothing(argv, fragment, tmp_path, monkeypatch, capsys,
                                                                   no_work):
    monkeypatch.chdir(tmp_path)
    argv = _prepare(tmp_path, argv)
    before = _listing(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert exit_info.value.code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert fragment in lines[0]
    assert captured.out == ""
    assert _listing(tmp_path) == before   # no folder made, no file written or removed (an old report kept)


# -- the other side: valid arguments pass every check and reach the work ------------------------------------
VALID = [
    ["tour", "--n", "2", "--steps", "2", "--out", "figs"],
    ["train", "shapes", "--steps", "1", "--run-dir", "run", "--export-to", "exp"],
    ["train", "shapes", "--steps", "1", "--run-dir", "run", "--overwrite-embedded"],   # the explicit flag
    ["train", "shapes", "--steps", "1", "--run-dir", "run", "--no-export", "--weight-cap", "5",
     "--loss-weight", "min-snr", "--ema-decay", "0"],
    ["probe", "--steps", "1", "--out", "probe"],
    ["evaluate", "--n", "2", "--out", "o"],
    ["alignment", "shapes-text", "--scales", "0", "1.5", "--out", "o"],
    ["report", "--fast", "--model", "shapes", "--out", "o"],
    ["edit", "interval", "--n", "2"],
    ["edit", "roundtrip", "--model", "digits"],
    ["edit", "properties", "--out", "o"],
    ["learn-direction", "--out", "d/f", "--factor", "colour", "--target", "blue"],
    ["transfer", "--t", "500", "--steps", "10", "--out", "t"],
]


class Reached(Exception):
    """The verb got past its checks to its work."""


@pytest.mark.parametrize("argv", VALID, ids=[" ".join(a) for a in VALID])
def test_valid_arguments_pass_the_checks_and_reach_the_work(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def reached(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(diffgeo.models.loading, "load", reached)
    for module in {m for m, _ in VERBS.values()}:
        mod = importlib.import_module(f"diffgeo.cli.{module}")
        for name in WORK:
            if callable(getattr(mod, name, None)):
                monkeypatch.setattr(mod, name, reached)
    with pytest.raises(Reached):
        main(argv)
    assert capsys.readouterr().err == ""
    assert list(tmp_path.iterdir()) == []   # the checks made nothing
