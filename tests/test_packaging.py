"""The three dependency lists agree; CI runs exactly `make test`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _names(reqs: list[str]) -> dict[str, str]:
    """{normalised package name: version specifier} of requirement lines (options, comments and
    the editable install of the package itself skipped)."""
    out = {}
    for r in reqs:
        r = r.strip()
        if not r or r.startswith(("#", "-e", "-")):
            continue
        m = re.match(r"([A-Za-z0-9_.\-]+)(.*)", r)
        out[re.sub(r"[-_.]+", "-", m.group(1).lower())] = m.group(2).strip()
    return out


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _runtime() -> dict[str, str]:
    """What a user's environment needs: the core dependencies and the `notebooks` extra."""
    project = _pyproject()
    return {**_names(project["dependencies"]), **_names(project["optional-dependencies"]["notebooks"])}


def test_environment_yml_names_the_same_packages_as_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert _names(pip_block) == _runtime()


def test_binder_names_the_same_packages_with_cpu_only_torch():
    lines = (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    binder = _names(lines)
    binder.pop("jupytext")  # Binder also opens the jupytext notebooks
    runtime = _runtime()
    assert set(binder) == set(runtime)
    # torch: the `+cpu` build from PyTorch's CPU index (PyPI's Linux wheel pulls CUDA libraries);
    # it must still satisfy pyproject's floor.
    assert re.fullmatch(r"==\d+\.\d+\.\d+\+cpu", binder["torch"]), binder["torch"]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in [x.strip() for x in lines]
    floor = re.fullmatch(r">=(\d+)\.(\d+)", runtime["torch"])
    pinned = tuple(int(x) for x in binder["torch"][2:].split("+")[0].split(".")[:2])
    assert floor and pinned >= (int(floor[1]), int(floor[2]))
    # every other package pinned (==) to a version that satisfies pyproject's floor
    from packaging.specifiers import SpecifierSet

    for name, spec in binder.items():
        if name != "torch":
            assert re.fullmatch(r"==[0-9][0-9A-Za-z.]*", spec), f"binder pins {name} with {spec!r}, not =="
            assert spec[2:] in SpecifierSet(runtime[name]), f"binder's {name}{spec} misses pyproject's {runtime[name]}"
    constraints = _names((ROOT / ".ci" / "constraints.txt").read_text().splitlines())
    for name, spec in constraints.items():  # the same versions as CI's constraints
        assert binder.get(name, "").split("+")[0] == spec, (name, binder.get(name), spec)


def test_dev_extra_carries_the_notebook_stack_and_test_tools():
    dev = _names(_pyproject()["optional-dependencies"]["dev"])
    extras = dev.get("diffgeo", "").strip("[]").split(",")
    assert "notebooks" in [e.strip() for e in extras], "dev must install the notebooks extra"
    assert {"playwright", "nbclient", "jupytext", "ipykernel"} <= set(dev)
    for name in ("jupyterlab", "voila", "plotly", "ipympl"):
        assert name in _runtime()


def test_binder_postbuild_makes_the_notebooks_the_badge_opens():
    post = ROOT / "binder" / "postBuild"
    assert post.stat().st_mode & 0o111, "postBuild must be executable"
    assert "jupytext --to ipynb notebooks/*.py" in post.read_text()
    assert (ROOT / "notebooks" / "01_tour.py").is_file()


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
        # the reproducing command (a chain for a warm-started fine-tune) trains this model to its steps; a
        # weight average names its averaging command, and each input's command trains it to its steps
        command = prov["training_command"]
        if "averaged" in prov:
            assert f"python -m diffgeo train {name} --average " in command, name
            assert prov["steps"] == max(i["steps"] for i in prov["averaged"]), name
            for inp in prov["averaged"]:
                assert f"python -m diffgeo train {name} " in inp["training_command"], name
                assert f"--steps {inp['steps']}" in inp["training_command"], name
        else:
            assert f"python -m diffgeo train {name} " in command and f"--steps {prov['steps']}" in command, name
        assert (folder / "text_encoder.json").is_file() == (name != "shapes"), name
