"""The three dependency lists agree; CI runs exactly `make test`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _names(reqs: list[str]) -> dict[str, str]:
    out = {}
    for r in reqs:
        r = r.strip()
        if not r or r.startswith(("#", "-e", "-")):
            continue
        m = re.match(r"([A-Za-z0-9_.\-]+)(.*)", r)
        out[m.group(1).lower().replace("_", "-")] = m.group(2).strip()
    return out


def test_environment_and_binder_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _names(project["dependencies"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _names(pip_block) == core
    binder = _names((ROOT / "binder" / "requirements.txt").read_text().splitlines())
    binder.pop("jupytext", None)  # Binder also opens the jupytext notebooks
    assert binder == core


def test_ci_runs_make_test_and_fails_on_no_tests():
    text = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", text, re.M)
    assert '"$rc" -eq 5' in text


def test_torchvision_is_not_installed():
    import importlib.util

    assert importlib.util.find_spec("torchvision") is None, "torchvision breaks `import diffusers` here"


def test_embedded_models_are_small_safetensors_with_provenance():
    """Issue 4: weights inside the package as safetensors under 20 MB each, a provenance JSON that
    names the reproducing command, and a text-encoder reference for the text models."""
    import json

    import diffgeo

    names = diffgeo.list_models()
    assert {"shapes", "shapes-text", "digits"} <= set(names)
    for name in names:
        folder = ROOT / "diffgeo" / "embedded" / name
        weights = list(folder.rglob("*.safetensors"))
        assert weights and all(w.stat().st_size < 20 * 2**20 for w in weights), name
        assert not [p for p in folder.rglob("*") if p.suffix in (".bin", ".pt", ".ckpt", ".pkl")], name
        prov = json.loads((folder / "provenance.json").read_text())
        assert prov["training_command"].startswith(f"python -m diffgeo.train {name} --steps {prov['steps']}")
        assert (folder / "text_encoder.json").is_file() == (name != "shapes"), name
