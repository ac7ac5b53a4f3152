"""Every notebook executes in fast mode (DIFFGEO_FAST=1), one kernel each, within its timeout,
draws something, and carries no outputs in the repository."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))
THEMES = ["01_tour", "02_tangent_spaces_over_time", "03_text_conditions", "04_curvedness",
          "05_attribute_traversals", "06_your_own_model"]
TIMEOUT_S = 300  # per cell of each notebook (a hang guard, not a speed test): fast mode takes 40-140 s per notebook on the loaded 2-core machine


def test_the_themed_notebooks_are_there():
    assert [p.stem for p in NOTEBOOKS] == THEMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path, monkeypatch):
    import jupytext
    from nbclient import NotebookClient

    monkeypatch.setenv("DIFFGEO_FAST", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("DIFFGEO_CACHE", str(tmp_path / "cache"))  # cold: nothing from an earlier run
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline
    nb = jupytext.read(path)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs are never committed"
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), "a parameter cell gives the fast mode"
    start = time.perf_counter()
    NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s")
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert [o for o in outputs if "image/png" in o.get("data", {})], "a notebook that draws nothing"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "dashboard callback failed" not in text, text
    if path.stem in THEMES[1:]:  # the widget notebooks show live dashboards
        assert [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]


def test_jupyterlab_opens_the_py_notebooks_as_notebooks():
    """Binder installs a settings override that makes jupytext's notebook view the default viewer
    of Python files; the viewer's name is the one the installed jupytext registers."""
    import json

    root = Path(__file__).resolve().parents[1]
    override = json.loads((root / "binder" / "overrides.json").read_text())
    viewer = override["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["python"]
    from jupytext_config.labconfig import LabConfig

    assert viewer == "Jupytext Notebook"
    config = LabConfig(settings_file=root / "does-not-exist.json")
    config.set_default_viewer("python")
    assert config.get_viewers()["python"] == viewer  # what jupytext-config itself would write
    assert "share/jupyter/lab/settings/overrides.json" in (root / "binder" / "postBuild").read_text()


def test_both_binder_badges_use_the_one_repository_the_readme_states():
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    stated = re.search(r"Binder repository: `([^`]+)`", readme)
    assert stated, "the README states the Binder repository once"
    links = re.findall(r"https://mybinder\.org/v2/gh/([^/]+/[^/]+)/HEAD\?(labpath|urlpath)=", readme)
    assert {kind for _, kind in links} == {"labpath", "urlpath"}, "a Lab badge and a Voila badge"
    assert {repo for repo, _ in links} == {stated[1]}
    voila = re.search(r"urlpath=voila%2Frender%2F([^)\s]+)", readme)[1].replace("%2F", "/")
    assert (Path(__file__).resolve().parents[1] / voila.replace(".ipynb", ".py")).is_file()
