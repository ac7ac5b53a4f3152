"""Property tests over the argument space of the public functions (issue 10).

Every call either succeeds with finite output or raises one of the documented exception types
(:mod:`diffgeo.core.checks`: TypeError, ValueError and its NonFiniteError, OSError subclasses for
files) with the name of a bad argument in the message; and it leaves the model (hooks,
attention processors, parameters, modes) and the file system as they were.

Each strategy draws every argument from a list of good and bad values and knows which are bad,
so the property is exact: all good -> success with finite output; some bad -> an error naming
one of the bad arguments. A tiny diffusers U-Net (8x8, attention in the mid block) keeps the
whole file within a minute. Hypothesis runs derandomized (the same examples every run) and
without its example database (nothing written to the tree).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from hypothesis import HealthCheck, given, settings, strategies as st

import diffgeo
import diffgeo.models.hooks as hooks
from diffgeo.core.io import load_tensors_json, result_path, save_tensors_json
from conftest import save_unet_folder, tiny_unet_config

DOCUMENTED = (TypeError, ValueError)
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from diffusers import DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**tiny_unet_config(sample_size=8))
    folder = save_unet_folder(tmp_path_factory.mktemp("tiny_model"), unet,
                              DDIMScheduler(num_train_timesteps=1000, clip_sample=True))
    return diffgeo.load(folder, device="cpu")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder the calls run in (cwd), to check that failed calls write nothing."""
    path = tmp_path_factory.mktemp("cwd")
    old = os.getcwd()
    os.chdir(path)
    yield path
    os.chdir(old)


def _model_state(model) -> dict:
    unet = model.unet
    return {"hooks": [(n, len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in unet.named_modules()],
            "processors": {n: type(m.processor) for n, m in unet.named_modules() if hasattr(m, "processor")},
            "processor_ids": {n: id(m.processor) for n, m in unet.named_modules() if hasattr(m, "processor")},
            "params": {k: v.detach().clone() for k, v in unet.state_dict().items()},
            "grad": [p.requires_grad for p in unet.parameters()], "training": unet.training,
            "dtype": model.dtype, "device": model.device}


def _same_state(a: dict, b: dict) -> bool:
    return (a["hooks"] == b["hooks"] and a["processors"] == b["processors"] and a["processor_ids"] == b["processor_ids"]
            and a["grad"] == b["grad"] and a["training"] == b["training"] and a["dtype"] == b["dtype"]
            and a["device"] == b["device"] and a["params"].keys() == b["params"].keys()
            and all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"]))


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def _names(message: str, name: str) -> bool:
    """``name`` appears in ``message`` as a word of its own (so 't' is not found inside "can't" or "it")."""
    return re.search(rf"(?<![\w'.]){re.escape(name)}(?![\w'])", message) is not None


def _check(call, bad: dict, *, model=None, folder: Path | None = None, expect_files: set[str] = frozenset()):
    """Run call(); assert the property. ``bad``: {argument name: bad value} (empty if all good)."""
    before = _model_state(model) if model is not None else None
    files = _tree(folder) if folder is not None else None
    try:
        out = call()
    except DOCUMENTED as err:
        assert bad, f"all arguments were good but the call raised {type(err).__name__}: {err}"
        message = str(err)
        assert any(_names(message, name) for name in bad), \
            f"{type(err).__name__} names none of {sorted(bad)}: {message}"
        if folder is not None:
            assert _tree(folder) == files, "a failed call changed the file system"
    else:
        assert not bad, f"bad arguments {bad} were taken silently"
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                assert bool(torch.isfinite(t).all()), "a successful call returned non-finite values"
            elif isinstance(t, float):
                assert math.isfinite(t)
        if folder is not None:
            assert _tree(folder) == files | set(expect_files), "the call wrote unexpected files"
    if model is not None:
        assert _same_state(before, _model_state(model)), "the call changed the model"
    return None


def arg(good: list, bad: list):
    """(value, is_bad) drawn from good and bad values."""
    return st.one_of(st.sampled_from(good).map(lambda v: (v, False)), st.sampled_from(bad).map(lambda v: (v, True)))


# -- sampling -----------------------------------------------------------------------------------------
SAMPLE_ARGS = dict(
    n=arg([1, 2, np.int64(1), np.uint8(2)], [0, -1, True, 1.5, "2", np.float32(1.0)]),
    steps=arg([1, 2, 3, np.int32(2)], [0, -3, True, 2.0, "3", 10**6, None]),
    eta=arg([0, 0.0, 0.5, 1, np.float64(0.3)], [float("nan"), float("inf"), -0.1, "0", True, 1e30, None]),
    seed=arg([None, 0, 7, np.int64(3), 2**64 - 1], [-1, 2**64, "1", 1.5, False]),
    guidance_scale=arg([None, 1, 1.0], [float("nan"), float("inf"), 2.0, "1", True]),
    prompt=arg([None], ["a red circle", [""]]),
    use_clipped_model_output=arg([False, True, np.bool_(True)], ["no", 0, None, 1]),
)


@settings(max_examples=120, **SETTINGS)
@given(st.fixed_dictionaries(SAMPLE_ARGS), st.booleans())
def test_sample_either_succeeds_finitely_or_names_a_bad_argument(tiny, workdir, drawn, with_generator):
    kwargs = {k: v for k, (v, _) in drawn.items()}
    bad = {k: v for k, (v, is_bad) in drawn.items() if is_bad}
    if kwargs["eta"] == 1e30 and kwargs["steps"] == 1:
        bad.pop("eta")  # one step ends at alpha-bar 1, where sigma = 0: eta does nothing there
    if with_generator:
        kwargs["generator"] = torch.Generator().manual_seed(1)
        if kwargs["seed"] is not None:
            bad.update(seed=kwargs["seed"], generator=None)
    with torch.no_grad():
        _check(lambda: diffgeo.sample(tiny, progress=False, **kwargs).xs, bad, model=tiny, folder=workdir)


X_VALUES = {
    "good": lambda: torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
    "one": lambda: torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
}
X_BAD = {
    "nan": lambda: torch.full((1, 3, 8, 8), float("nan")),
    "empty": lambda: torch.zeros(0, 3, 8, 8),
    "shape": lambda: torch.zeros(1, 3, 9, 8),
    "unbatched": lambda: torch.zeros(3, 8, 8),
    "float64": lambda: torch.zeros(1, 3, 8, 8, dtype=torch.float64),
    "int": lambda: torch.zeros(1, 3, 8, 8, dtype=torch.long),
    "complex": lambda: torch.zeros(1, 3, 8, 8, dtype=torch.complex64),
    "meta": lambda: torch.zeros(1, 3, 8, 8, device="meta"),
    "list": lambda: [[0.0]],
    "numpy": lambda: np.zeros((1, 3, 8, 8), dtype=np.float32),
}
T_GOOD = [0, 500, 999, np.int64(10), torch.tensor(20)]
T_BAD = [-1, 1000, 500.0, "500", None, True, torch.tensor([], dtype=torch.long), torch.tensor([1.5]),
         torch.tensor([[1]])]


@settings(max_examples=120, **SETTINGS)
@given(st.one_of(st.sampled_from(sorted(X_VALUES)).map(lambda k: (k, False)),
                 st.sampled_from(sorted(X_BAD)).map(lambda k: (k, True))),
       arg(T_GOOD, T_BAD), st.sampled_from(["eps", "h"]), st.booleans())
def test_eps_and_h_either_succeed_finitely_or_name_x_t_or_t(tiny, workdir, x_key, t, which, per_sample):
    (key, x_bad), (t_value, t_bad) = x_key, t
    x = (X_BAD if x_bad else X_VALUES)[key]()
    if per_sample and not t_bad and isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[0] > 0:
        t_value = torch.full((x.shape[0],), int(t_value), dtype=torch.long)  # one timestep per sample
    bad = {}
    if x_bad:
        bad["x_t"] = key
    if t_bad:
        bad["t"] = t_value
    fn = getattr(tiny, which)
    with torch.no_grad():
        _check(lambda: fn(x, t_value), bad, model=tiny, folder=workdir)


@settings(max_examples=25, **SETTINGS)
@given(st.fixed_dictionaries(dict(
    k=arg([1, 2, np.int64(2)], [0, -1, True, 2.5, "2", 10**6]),
    tol=arg([1e-2, 0.1], [0, -1e-3, float("nan"), float("inf"), "1e-3", True]),
    max_iter=arg([5, np.int32(8)], [0, -2, 2.0, None, True]),
    seed=arg([None, 0, np.uint32(5)], [-5, "0", 0.5]),
    t=arg([500, np.int64(300)], [None, "500", 1000, 500.5]),
    chunk_size=arg([1, 64, np.int64(4)], [0, True, "2", 1.5]),
)))
def test_local_basis_either_succeeds_finitely_or_names_a_bad_argument(tiny, workdir, drawn):
    kwargs = {k: v for k, (v, _) in drawn.items()}
    bad = {k: v for k, (v, is_bad) in drawn.items() if is_bad}
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))

    def call():
        b = diffgeo.local_basis(tiny, x, kwargs["t"], kwargs["k"], tol=kwargs["tol"], max_iter=kwargs["max_iter"],
                                seed=kwargs["seed"], chunk_size=kwargs["chunk_size"], progress=False)
        return b.v, b.u, b.s

    _check(call, bad, model=tiny, folder=workdir)


# -- hooks ----------------------------------------------------------------------------------------------
DELTAS = {
    "zero": (lambda: torch.zeros(1, 32, 4, 4), False),
    "scalar": (lambda: torch.tensor(0.5), False),
    "channel": (lambda: torch.ones(1, 32, 1, 1), False),
    "fn": (lambda: (lambda h: 0.1 * h), False),
    "shape": (lambda: torch.zeros(3, 7), True),
    "dtype": (lambda: torch.zeros(1, 32, 4, 4, dtype=torch.float64), True),
    "nan": (lambda: torch.full((1, 32, 4, 4), float("nan")), True),
    "complex": (lambda: torch.zeros(1, 32, 4, 4, dtype=torch.complex64), True),
    "string": (lambda: "0.5", True),
    "fn_bad": (lambda: (lambda h: "x"), True),
}


@settings(max_examples=60, **SETTINGS)
@given(st.sampled_from(sorted(DELTAS)), st.sampled_from(["add", "replace"]),
       arg(["mid_block", "down_blocks.1"], ["", "no_such_block", 3, None]), st.booleans())
def test_hooks_either_edit_finitely_or_name_the_bad_argument_and_leave_no_hook(tiny, workdir, key, kind, name,
                                                                               give_model):
    make, delta_bad = DELTAS[key]
    delta = make()
    (module_name, name_bad) = name
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    what = "delta" if kind == "add" else "value"
    bad = {}
    if delta_bad or (kind == "replace" and key in ("scalar", "channel")):  # replace needs the full shape
        bad[what] = key
        if kind == "replace" and key in ("shape", "scalar", "channel"):
            bad["replacement"] = key
    if name_bad:
        bad["name"] = module_name
    if give_model:
        bad["unet"] = "Model"
    target = tiny if give_model else tiny.unet
    manager = hooks.add_to_output if kind == "add" else hooks.replace_output

    def call():
        with torch.no_grad(), manager(target, delta, name=module_name):
            return tiny.eps(x, 500)

    _check(call, bad, model=tiny, folder=workdir)


# -- geometry -------------------------------------------------------------------------------------------
def _basis(draw, n: int):
    k = draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return torch.randn(k, n, generator=g, dtype=draw(st.sampled_from([torch.float32, torch.float64])))


@st.composite
def subspace(draw, n: int):
    """(value, bad?) for one argument of principal_angles."""
    v = _basis(draw, n)
    fault = draw(st.sampled_from(["none", "none", "none", "nan", "inf", "complex", "empty", "flat", "list",
                                  "other_n", "dependent"]))
    if fault == "nan":
        v[0, 0] = float("nan")
    elif fault == "inf":
        v[-1, -1] = float("inf")
    elif fault == "complex":
        v = v.to(torch.complex64)
    elif fault == "empty":
        v = v[:0]
    elif fault == "flat":
        v = v[0]
    elif fault == "list":
        v = v.tolist()
    elif fault == "other_n":
        v = torch.randn(v.shape[0], n + 1)
    elif fault == "dependent":
        v = torch.cat([v[:1], 2 * v[:1]])
    return v, fault


@settings(max_examples=150, **SETTINGS)
@given(subspace(4), subspace(4), st.sampled_from(["principal_angles", "grassmann_distance", "projection_distance",
                                                  "distance_matrix"]))
def test_subspace_distances_are_finite_or_name_the_bad_basis(workdir, a, b, fn_name):
    (va, fa), (vb, fb) = a, b
    if fn_name == "distance_matrix":
        names = {"a": "bases[0]", "b": "bases[1]"}
        call = lambda: diffgeo.distance_matrix([va, vb])  # noqa: E731
    else:
        names = {"a": "a", "b": "b"}
        call = lambda: getattr(diffgeo, fn_name)(va, vb)  # noqa: E731
    if fa == fb == "other_n":
        fa = fb = "none"  # both in the same (larger) space: a valid pair
    bad = {names[arg_name]: fault for arg_name, fault in (("a", fa), ("b", fb)) if fault != "none"}
    if "other_n" in (fa, fb):
        bad["different spaces"] = "other_n"  # a dimension mismatch is named by the two dimensions
    _check(call, bad, folder=workdir)


# -- result files ----------------------------------------------------------------------------------------
NAME = st.text(alphabet="abc.-_1", min_size=1, max_size=8).filter(lambda s: s not in (".", "..") and s.strip("."))


@settings(max_examples=60, **SETTINGS)
@given(NAME, st.sampled_from(["", ".safetensors", ".json", ".run1", ".pt"]),
       st.sampled_from(["file", "folder", "under_file", "nested"]))
def test_saving_writes_exactly_one_file_that_loads_back_or_changes_nothing(tmp_path_factory, stem, suffix, where):
    root = tmp_path_factory.mktemp("save")
    (root / "a_file").write_text("x")
    (root / "existing_folder").mkdir()
    target = {"file": root / f"{stem}{suffix}", "folder": root / "existing_folder",
              "under_file": root / "a_file" / f"{stem}{suffix}", "nested": root / "new" / f"{stem}{suffix}"}[where]
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2])}
    before = _tree(root)
    try:
        path = save_tensors_json(target, tensors, {"kind": "P", "stem": stem})
    except OSError as err:
        assert where in ("folder", "under_file"), f"{target}: {err}"
        assert (str(target) in str(err) or str(result_path(target)) in str(err)) and ".tmp" not in str(err)
        assert _tree(root) == before
        return
    assert where in ("file", "nested")
    assert path == result_path(target) and path.name.endswith(".safetensors")
    if suffix not in ("", ".safetensors", ".json"):
        assert path.name == f"{stem}{suffix}.safetensors"  # the user's suffix is kept
    added = _tree(root) - before
    assert {str(path.relative_to(root))} <= added and all(str(path.relative_to(root)).startswith(a) for a in added)
    back, meta = load_tensors_json(target, kind="P")
    assert meta == {"stem": stem} and all(torch.equal(back[k], tensors[k]) for k in tensors)

