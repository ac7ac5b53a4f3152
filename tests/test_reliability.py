"""Issue 30, outside the sampling and edit loops: each "wrong" case of the issue fails at 65e3c67 and
passes here; bad input is refused at the boundary, before any work; caches clean up after a kill.

Ground truths: shapes written by hand into old-format files; analytic orthogonality (a direction
built orthogonal to a basis in float64); two weights swapped inside one tensor; processes that are
known to be dead. The model is never needed to decide a check, so most tests stub the expensive
call (inversion, the U-Net) with one that fails the test if it is reached.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import diffgeo
import diffgeo.editing.transfer as transfer_module
import diffgeo.editing.xspace as xspace
import diffgeo.training.loop as training_loop
from diffgeo.analyses.report import run_report
from diffgeo.core.checks import SEED_MAX, check_output_folder
from diffgeo.core.io import is_stale_temporary
from diffgeo.core.sweep import CACHE_INFO, model_fingerprint, sweep
from diffgeo.editing import directions
from diffgeo.editing.directions import Direction
from diffgeo.editing.interval import edit_interval
from diffgeo.editing.transfer import transfer_edit, transport_all
from diffgeo.geometry.basis import LocalBasis
from diffgeo.geometry.subspaces import transport
from diffgeo.sampling.trajectory import Trajectory
from diffgeo.training import train


# -- Trajectory.load ---------------------------------------------------------------------------------
def _old_format_trajectory(path: Path, xs_len: int, x0_len: int) -> Path:
    """A format-1 file (metadata only, no content record), as diffgeo wrote before the record existed."""
    tensors = {"timesteps": torch.tensor([500, 250, -1]), "xs": torch.zeros(xs_len, 2, 3),
               "x0_preds": torch.zeros(x0_len, 2, 3)}
    save_file(tensors, str(path), metadata={"diffgeo": json.dumps({"kind": "Trajectory"}), "diffgeo_format": "1"})
    return path


def test_old_format_trajectory_with_disagreeing_shapes_is_refused(tmp_path):  # wrong at 65e3c67: loaded
    good = Trajectory.load(_old_format_trajectory(tmp_path / "good.safetensors", 3, 2))
    assert good.xs.shape == (3, 2, 3) and good.x0_preds.shape == (2, 2, 3)
    with pytest.raises(ValueError, match="not a consistent Trajectory"):
        Trajectory.load(_old_format_trajectory(tmp_path / "bad.safetensors", 3, 3))
    with pytest.raises(ValueError, match="not a consistent Trajectory"):
        Trajectory.load(_old_format_trajectory(tmp_path / "short.safetensors", 2, 1))


# -- directions ------------------------------------------------------------------------------------------
def test_pca_of_one_sample_is_refused(shapes_model, monkeypatch):  # wrong at 65e3c67: a one-hot "component"
    monkeypatch.setattr(directions, "sample", _never("sample"))
    with pytest.raises(ValueError, match="at least 2 samples"):
        directions.pca(shapes_model, torch.randn(1, 3, 32, 32), 0, steps=2)
    with pytest.raises(ValueError, match="component"):  # N centred samples span N - 1 components
        directions.pca(shapes_model, torch.randn(3, 3, 32, 32), 2, steps=2)
    with pytest.raises(TypeError):
        directions.pca(shapes_model, torch.randn(3, 3, 32, 32), True, steps=2)


def _never(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} ran: the bad input should have been refused before it")
    return fail


@pytest.mark.parametrize("bad, error, match", [
    (dict(images_a=torch.full((2, 3, 32, 32), 200.0)), ValueError, r"\[-1, 1\]"),   # [0, 255] images
    (dict(timesteps=[500.7]), TypeError, "integer"),
    (dict(timesteps="500"), TypeError, "string"),
    (dict(timesteps=[500, 500]), ValueError, "repeated"),
    (dict(timesteps=[]), ValueError, "empty"),
    (dict(timesteps=[1000]), ValueError, "<= 999"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed="0"), TypeError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
])
def test_mean_difference_refuses_bad_input_before_any_forward_pass(shapes_model, monkeypatch, bad, error, match):
    # wrong at 65e3c67: [0, 255] accepted, 500.7 truncated to 500, "500" split into 5, 0, 0, seeds unchecked
    monkeypatch.setattr(directions, "_h_of", _never("the U-Net"))
    args = dict(images_a=torch.zeros(2, 3, 32, 32), images_b=torch.zeros(2, 3, 32, 32), timesteps=[500], seed=0)
    args.update(bad)
    with pytest.raises(error, match=match):
        directions.mean_difference(shapes_model, args.pop("images_a"), args.pop("images_b"), **args)


def test_edit_interval_refuses_bad_stride_and_seed(shapes_model, monkeypatch):
    monkeypatch.setattr(shapes_model, "eps_fn", _never("the U-Net"))
    images = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match="stride"):
        edit_interval(shapes_model, images, stride=0)  # 65e3c67: torch.arange's raw error
    with pytest.raises(ValueError, match="only t=0"):
        edit_interval(shapes_model, images, stride=2000)  # 65e3c67: t_edit = t_boost = 0, silently
    for seed, error in ((-1, ValueError), ("1", TypeError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="seed"):
            edit_interval(shapes_model, images, seed=seed)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        edit_interval(shapes_model, images + 255.0)


# -- transfer ----------------------------------------------------------------------------------------------
def _basis(v: torch.Tensor, model: str | None, t: int = 500) -> LocalBasis:
    """A LocalBasis with orthonormal rows v (k, n), as local_basis makes them (u = v: h = x here)."""
    k = v.shape[0]
    meta = {"t": t, **({} if model is None else {"model": model})}
    return LocalBasis(v=v, u=v.clone(), s=torch.arange(k, 0, -1.0), residuals=torch.zeros(k), x=torch.zeros(v.shape[1]),
                      iterations=0, n_products=0, meta=meta)


def _rotation(n: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_transfer_checks_every_target_basis_model():  # wrong at 65e3c67: only the source's model was checked
    q = _rotation(6, 0).float()
    model = SimpleNamespace(name="shapes", num_train_timesteps=1000)
    source, ok, foreign = _basis(q[:2], "shapes"), _basis(q[1:3], "shapes"), _basis(q[2:4], "shapes-text")
    with pytest.raises(ValueError, match=r"targets\[1\] is a basis of model 'shapes-text'"):
        transfer_edit(model, source, [ok, foreign], 0, strength=1.0, reader=False)


def test_a_direction_orthogonal_to_the_source_is_refused_in_float32():
    # wrong at 65e3c67: its float32 coordinates (~1e-8 of its norm) passed the 1e-12 guard and rounding
    # noise was transported as a unit vector
    q = _rotation(64, 1)
    source, target = _basis(q[:3].float(), None), _basis(q[1:4].float(), None)
    d = (q[5] + 0.5 * q[9]).float()  # in float64 exactly orthogonal to span(v_A) = span(q_0, q_1, q_2)
    assert 0 < float((source.v_flat.double() @ d.double()).norm()) < 1e-6 * float(d.norm())  # noise, not zero
    for via in ("h", "x"):
        with pytest.raises(ValueError, match="orthogonal to A's tangent space"):
            transport(source, target, d, via=via)
    with pytest.raises(ValueError, match="orthogonal to A's tangent space"):
        transfer_edit(SimpleNamespace(name="toy", num_train_timesteps=1000), source, [target], d, strength=1.0,
                      reader=False)
    # a direction with a real part in the span (1e-2 of its norm) is transported: onto q_1
    inside = (q[1] * 1e-2 + q[5]).float()
    dirs, cos, _ = transport_all(source, [target], inside, via="x")
    assert abs(float(dirs[0].double() @ q[1])) == pytest.approx(1.0, abs=1e-5) and float(cos[0]) == pytest.approx(1.0,
                                                                                                                 abs=1e-5)


# -- edit_image checks before the inversion ----------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(method="gradient"), ValueError, "method"),
    (dict(t_boost=800), ValueError, "boost"),
    (dict(boost=800), ValueError, "boost"),
    (dict(direction=torch.zeros(3, 16, 16)), ValueError, "direction has shape"),
    (dict(direction=Direction(torch.zeros(1, 3, 32, 32), torch.tensor([-1]), "x", "digits")), ValueError, "digits"),
    (dict(strenght=1.0), TypeError, "unexpected keyword 'strenght'"),
    (dict(seed=-3), ValueError, "seed"),
    (dict(use_clipped_model_output="no"), TypeError, "True or False"),
])
def test_edit_image_checks_its_arguments_before_the_inversion(shapes_model, monkeypatch, kwargs, error, match):
    # wrong at 65e3c67: each was found by edit_x, after the full inversion
    monkeypatch.setattr(xspace, "invert", _never("the inversion"))
    kw = dict(direction=torch.zeros(3, 32, 32), strength=1.0, steps=10, progress=False)
    kw.update(kwargs)
    with pytest.raises(error, match=match):
        xspace.edit_image(shapes_model, torch.zeros(1, 3, 32, 32), 500, kw.pop("direction"), **kw)


# -- report: a bad model name fails before the output folder is made or an old report removed ---------------
def test_run_report_with_a_bad_model_keeps_the_old_report_and_makes_no_folder(tmp_path):
    # wrong at 65e3c67: report.html and claims.json were deleted, and the folder made, before loading
    old = tmp_path / "old"
    old.mkdir()
    (old / "report.html").write_text("earlier")
    (old / "claims.json").write_text("[]")
    for out in (old, tmp_path / "new"):
        with pytest.raises(ValueError, match="unknown model 'shapse'"):
            run_report(["shapse"], preset="tiny", out=out, progress=False)
    assert (old / "report.html").read_text() == "earlier" and (old / "claims.json").exists()
    assert not (tmp_path / "new").exists()


# -- training ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, error", [
    (dict(steps=0), ValueError),            # 65e3c67: 0 meant "the recipe's" (about 3.5 h)
    (dict(steps=True), TypeError),
    (dict(weight_cap=float("nan")), ValueError),  # 65e3c67: trained and wrote NaN weights
    (dict(ckpt_every=0), ValueError),       # 65e3c67: ZeroDivisionError after a training step
    (dict(threads=-1), ValueError),         # 65e3c67: torch's raw error
    (dict(seed=-1), ValueError),
    (dict(init="/nonexistent/diffgeo-init"), FileNotFoundError),  # 65e3c67: an empty run folder was left
])
def test_train_refuses_bad_arguments_before_creating_the_run_folder(tmp_path, monkeypatch, bad, error):
    monkeypatch.setattr(training_loop, "_make_unet", _never("building the U-Net"))   # no training starts
    run = tmp_path / "run"
    with pytest.raises(error):
        train("shapes", run_dir=run, **{"steps": 1, "threads": 1, "progress": False, **bad})
    assert not run.exists()


# -- the sweep cache ---------------------------------------------------------------------------------------
CALLS: list[int] = []


def counted(x: int) -> dict:
    CALLS.append(x)
    return {"y": torch.tensor(float(x) ** 2)}


@pytest.mark.parametrize("info", ["{not json", "[1, 2]", json.dumps({"diffgeo": "0.0.0-other", "format": 1,
                                                                       "context": {}})])
def test_an_untrusted_cache_info_means_no_entry_is_used(tmp_path, info):
    # wrong at 65e3c67: the note said the entries were not used while all were read
    first = sweep(counted, {"x": [1, 2, 3]}, cache=tmp_path, progress=False)
    assert first.n_computed == 3
    (tmp_path / CACHE_INFO).write_text(info)
    CALLS.clear()
    again = sweep(counted, {"x": [1, 2, 3]}, cache=tmp_path, progress=False)
    assert (again.n_computed, again.n_cached, sorted(CALLS)) == (3, 0, [1, 2, 3])
    assert again.notes and "none of its entries" in again.notes[0]
    assert [float(r["y"]) for r in again.results] == [1.0, 4.0, 9.0]
    third = sweep(counted, {"x": [1, 2, 3]}, cache=tmp_path, progress=False)  # cache.json rewritten: trusted again
    assert (third.n_cached, third.notes) == (3, [])


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_are_removed_by_the_next_sweep_and_live_ones_kept(tmp_path):
    sweep(counted, {"x": [1]}, cache=tmp_path, progress=False)
    entry = next(tmp_path.glob("??/*.safetensors"))
    host = diffgeo.core.io._HOST
    dead = entry.parent / f".{entry.name}.{_dead_pid()}-{host}.abc123.tmp"
    mine = entry.parent / f".{entry.name}.{os.getpid()}-{host}.def456.tmp"
    old_unknown = entry.parent / f".{entry.name}.ghi789.tmp"   # the name before writers were recorded
    new_unknown = entry.parent / f".{entry.name}.jkl012.tmp"
    for p in (dead, mine, old_unknown, new_unknown):
        p.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(old_unknown, (two_hours_ago, two_hours_ago))
    sweep(counted, {"x": [1]}, cache=tmp_path, progress=False)
    assert not dead.exists() and not old_unknown.exists()
    assert mine.exists() and new_unknown.exists()   # a live writer, or one that may still be writing


def test_a_writer_killed_mid_write_leaves_a_temporary_the_next_sweep_removes(tmp_path):
    # wrong at 65e3c67: nothing ever removed it (224 MB after 8 kills)
    sweep(counted, {"x": [1]}, cache=tmp_path, progress=False)
    target = next(tmp_path.glob("??/*.safetensors")).with_name("victim.safetensors")
    code = ("import sys, time\nfrom diffgeo.core.io import atomic_path\n"
            f"with atomic_path({str(target)!r}) as tmp:\n"
            "    tmp.write_bytes(b'x' * 1000)\n    print(tmp, flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.exists() and not is_stale_temporary(tmp, max_age=0.0)   # its writer is alive
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert tmp.exists() and is_stale_temporary(tmp, max_age=3600.0)   # its writer is gone
    sweep(counted, {"x": [1]}, cache=tmp_path, progress=False)
    assert not tmp.exists() and not target.exists()


def test_model_fingerprint_hashes_every_byte_of_every_tensor():
    # wrong at 65e3c67: per-tensor sums, blind to two weights swapped inside one tensor
    unet = torch.nn.Linear(4, 3)
    unet.config = {"sample_size": 4}
    model = SimpleNamespace(name="toy", h_module="mid", prediction_type="epsilon", unet=unet)
    before = model_fingerprint(model)
    with torch.no_grad():
        w = unet.weight
        w[0, 0], w[1, 2] = w[1, 2].clone(), w[0, 0].clone()
    swapped = model_fingerprint(model)
    assert swapped != before
    with torch.no_grad():
        w[0, 0], w[1, 2] = w[1, 2].clone(), w[0, 0].clone()
    assert model_fingerprint(model) == before   # the same bytes again: the same fingerprint


def test_a_read_only_output_folder_is_refused_even_for_root():
    # permission bits do not stop root; /proc takes no new files for anyone
    with pytest.raises(ValueError, match="not writable"):
        check_output_folder("/proc/diffgeo-out", "--out")


# -- property tests: the argument checks of directions, edit_interval and transfer_edit -------------------
# Each draws valid and invalid values for every checked argument, predicts from the documented rules
# alone whether the call is valid, and checks that a valid call returns and an invalid one raises
# TypeError or ValueError (nothing else, and nothing silent). The costly calls are stubbed: the checks
# never need them. `pytest --hypothesis-show-statistics` prints the valid/refused split (events).

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
JUNK = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4))


def _mostly(valid, invalid):
    """Valid three times in four, so that combinations of several arguments are often all valid."""
    return st.integers(0, 3).flatmap(lambda i: invalid if i == 0 else valid)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _outcome(call, valid: bool):
    try:
        out = call()
    except (TypeError, ValueError) as err:
        event(f"refused: {type(err).__name__}")
        assert not valid, f"a valid call was refused: {err}"
        return None
    event("valid")
    assert valid, "an invalid call was accepted"
    return out


@PROPERTY
@given(timesteps=_mostly(st.lists(st.integers(0, 999), min_size=1, max_size=3, unique=True),
                         st.one_of(st.none(), st.text(max_size=4), st.lists(st.one_of(st.integers(-3, 1003), JUNK),
                                                                            max_size=3))),
       seed=_mostly(st.integers(0, 2**40), st.one_of(st.integers(-3, 2**64 + 3), JUNK)),
       scale=st.sampled_from([1.0, 1.0, 1.0, 255.0]))
def test_property_mean_difference_arguments(shapes_model, monkeypatch, timesteps, seed, scale):
    monkeypatch.setattr(directions, "_h_of", lambda model, x, t, prompt, batch_size=64:
                        torch.zeros(len(x), *model.h_shape))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * scale
    ts_ok = timesteps is None or (len(timesteps) > 0 and all(_is_int(t) and 0 <= t <= 999 for t in timesteps)
                                  and len(set(timesteps)) == len(timesteps))
    ts_ok = ts_ok and not isinstance(timesteps, str)
    valid = ts_ok and _is_int(seed) and 0 <= seed <= SEED_MAX - 1000 and scale == 1.0
    d = _outcome(lambda: directions.mean_difference(shapes_model, images, -images, timesteps=timesteps, steps=2,
                                                    seed=seed), valid)
    if d is not None:
        want = sorted(timesteps) if timesteps is not None else sorted(diffgeo.ddim_timesteps(shapes_model, 2).tolist())
        assert d.timesteps.tolist() == want


@PROPERTY
@given(stride=_mostly(st.integers(250, 999), st.one_of(st.integers(-2, 0), st.integers(1000, 1300), JUNK)),
       seed=_mostly(st.integers(0, 2**64 - 1), st.one_of(st.integers(-3, -1), st.just(2**64), JUNK)),
       thresholds=_mostly(st.one_of(st.none(), st.tuples(st.floats(-1, 2), st.floats(-1, 2))),
                          st.lists(st.one_of(st.floats(-1, 2), JUNK), min_size=1, max_size=3)))
def test_property_edit_interval_arguments(shapes_model, monkeypatch, stride, seed, thresholds):
    monkeypatch.setattr(shapes_model, "eps_fn", lambda x, t, c: torch.zeros_like(x))
    valid = (_is_int(stride) and 1 <= stride <= 999 and _is_int(seed) and 0 <= seed <= SEED_MAX
             and (thresholds is None or (len(thresholds) == 2 and all(_is_real(v) for v in thresholds))))
    iv = _outcome(lambda: edit_interval(shapes_model, torch.zeros(1, 3, 32, 32), stride=stride, seed=seed,
                                        thresholds=thresholds), valid)
    if iv is not None:
        assert iv.timesteps.tolist() == list(range(0, 1000, stride))


@PROPERTY
@given(strength=_mostly(st.one_of(st.floats(-50, 50), st.integers(-5, 5)), JUNK),
       steps=_mostly(st.integers(1, 1000), st.one_of(st.integers(-1, 0), st.integers(1001, 1010), JUNK)),
       vias=_mostly(st.sampled_from([["h"], ["x"], ["h", "x"], ("x", "h")]),
                    st.one_of(st.lists(st.sampled_from(["h", "x", "z"]), max_size=3), st.sampled_from(["h", "hx"]))),
       direction=_mostly(st.one_of(st.integers(0, 2), st.just("inside")),
                         st.one_of(st.integers(-2, -1), st.integers(3, 5), st.booleans(),
                                   st.sampled_from(["orthogonal", "shape"]))),
       target_model=st.sampled_from([None, "toy", "toy", "other"]))
def test_property_transfer_edit_arguments(monkeypatch, strength, steps, vias, direction, target_model):
    monkeypatch.setattr(transfer_module, "edit_x", lambda model, x, t, d, strength, **kw:
                        SimpleNamespace(result=x + strength * d))
    q = _rotation(8, 2)
    # B's span holds (q0 + q3) / sqrt(2), q1, q2: every vector of A's span keeps >= 1/sqrt(2) of its norm there
    target_v = torch.stack([(q[0] + q[3]) / 2 ** 0.5, q[1], q[2]]).float()
    source, target = _basis(q[:3].float(), "toy"), _basis(target_v, target_model)
    vectors = {"inside": (q[0] + q[6]).float(), "orthogonal": (q[6] - q[7]).float(), "shape": torch.ones(7)}
    d = vectors.get(direction, direction) if isinstance(direction, str) else direction
    model = SimpleNamespace(name="toy", num_train_timesteps=1000, dtype=torch.float32, is_latent=False)
    valid = (_is_real(strength) and _is_int(steps) and 1 <= steps <= 1000
             and not isinstance(vias, str) and len(vias) > 0 and set(vias) <= {"h", "x"} and len(set(vias)) == len(vias)
             and (direction == "inside" or (_is_int(direction) and 0 <= direction < 3))
             and target_model in (None, "toy"))
    r = _outcome(lambda: transfer_edit(model, source, [target], d, strength=strength, steps=steps, vias=vias,
                                       reader=False), valid)
    if r is not None:  # the transported unit directions lie in the target's span
        dirs = r.directions.reshape(len(vias), -1).double()
        assert torch.allclose(dirs.norm(dim=1), torch.ones(len(vias), dtype=torch.float64), atol=1e-5)
        resid = dirs - dirs @ target.v_flat.double().T @ target.v_flat.double()
        assert float(resid.abs().max()) < 1e-5
