"""Result files never lose data: names, folders, permissions, damaged and foreign files (issue 10).

Each test marked "wrong at the start" failed on the code before issue 10 (io.py stripped every
suffix, gave atomic files mode 0600 and loaded damaged files silently).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile

import pytest
import torch
from safetensors.torch import save_file

from diffgeo.core.io import atomic_path, load_tensors_json, result_path, save_tensors_json
from diffgeo.sampling.trajectory import Trajectory


def _trajectory(seed: int) -> Trajectory:
    g = torch.Generator().manual_seed(seed)
    return Trajectory(torch.tensor([500, 0, -1]), torch.randn(3, 2, 3, 4, 4, generator=g),
                      torch.randn(2, 2, 3, 4, 4, generator=g), {"model": "toy", "seed": seed})


def _header(path) -> tuple[int, dict, bytes]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return n, json.loads(raw[8:8 + n]), raw[8 + n:]


def _write_header(path, n: int, header: dict, data: bytes) -> None:
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n, "the edited header must fit the original's length"
    path.write_bytes(n.to_bytes(8, "little") + text + b" " * (n - len(text)) + data)


# -- names -------------------------------------------------------------------------------------------
def test_user_suffixes_are_kept_so_runs_do_not_overwrite_each_other(tmp_path):  # wrong at the start
    a, b = _trajectory(1), _trajectory(2)
    pa, pb = a.save(tmp_path / "exp.run1"), b.save(tmp_path / "exp.run2")
    assert pa != pb and pa.name == "exp.run1.safetensors" and pb.name == "exp.run2.safetensors"
    assert torch.equal(Trajectory.load(pa).xs, a.xs) and torch.equal(Trajectory.load(pb).xs, b.xs)
    # loading by the name given to save finds the same file
    assert torch.equal(Trajectory.load(tmp_path / "exp.run1").xs, a.xs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.run1.safetensors", "exp.run2.safetensors"]


def test_result_path_rule():
    assert result_path("a/b.safetensors").name == "b.safetensors"
    assert result_path("b.json").name == "b.safetensors"
    assert result_path("b").name == "b.safetensors"
    assert result_path("v1.2.3").name == "v1.2.3.safetensors"
    with pytest.raises(ValueError, match="path must be a non-empty path"):
        result_path("")
    with pytest.raises(TypeError, match="path must be a path"):
        result_path(3)


def test_a_folder_as_target_is_refused_and_nothing_is_written_beside_it(tmp_path):  # wrong at the start
    folder = tmp_path / "results"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="results: it is a folder"):
        _trajectory(0).save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"] and not any(folder.iterdir())


# -- permissions -------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_honour_the_umask(tmp_path, umask):  # wrong at the start (always 0600)
    old = os.umask(umask)
    try:
        path = save_tensors_json(tmp_path / "r", {"a": torch.zeros(2)}, {"kind": "X"})
        with atomic_path(tmp_path / "fig.txt") as tmp:
            tmp.write_text("figure")
        plain = tmp_path / "plain.txt"
        plain.write_text("reference")  # what an ordinary open() gives under this umask
    finally:
        os.umask(old)
    want = stat.S_IMODE(plain.stat().st_mode)
    assert want == 0o666 & ~umask
    assert stat.S_IMODE(path.stat().st_mode) == want
    assert stat.S_IMODE((tmp_path / "fig.txt").stat().st_mode) == want


def test_overwriting_keeps_the_existing_files_mode(tmp_path):
    path = save_tensors_json(tmp_path / "r", {"a": torch.zeros(2)}, {})
    os.chmod(path, 0o640)
    save_tensors_json(tmp_path / "r", {"a": torch.ones(2)}, {})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_tensors_json(path)[0]["a"].tolist() == [1.0, 1.0]


# -- damaged and foreign files ------------------------------------------------------------------------
def test_overwritten_data_bytes_are_refused_with_path_and_reason(tmp_path):  # wrong at the start
    path = _trajectory(3).save(tmp_path / "t")
    n, header, data = _header(path)
    start = header["xs"]["data_offsets"][0]
    nan = torch.tensor([float("nan")]).numpy().tobytes()
    data = data[:start] + nan + data[start + len(nan):]  # first entry of xs becomes NaN, size unchanged
    _write_header(path, n, header, data)
    with pytest.raises(ValueError, match="data bytes do not match") as err:
        Trajectory.load(path)
    assert str(path) in str(err.value)


def test_inconsistent_shapes_are_refused(tmp_path):  # wrong at the start
    path = _trajectory(4).save(tmp_path / "t")
    n, header, data = _header(path)
    header["xs"]["shape"] = [6, 3, 4, 4]  # same number of entries, another shape
    _write_header(path, n, header, data)
    with pytest.raises(ValueError, match=r"tensor 'xs' has dtype float32 and shape \[6, 3, 4, 4\] but was "
                                         r"saved with dtype float32 and shape \[3, 2, 3, 4, 4\]") as err:
        Trajectory.load(path)
    assert str(path) in str(err.value)


def test_every_result_class_round_trips_and_refuses_damage(tmp_path):
    from diffgeo import Curvedness, LocalBasis, curvedness, exact_basis

    a = torch.tensor([[3.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0]])
    basis = exact_basis(lambda x: a @ x, torch.zeros(3), None, 2)
    curve = curvedness(lambda x: torch.tanh(a @ x), torch.zeros(3), torch.ones(3), k=2, n_points=3, method="exact",
                       progress=False)
    traj = _trajectory(5)
    for obj, cls, fields in [(basis, LocalBasis, ("v", "u", "s", "residuals", "x")),
                             (curve, Curvedness, ("steps", "off_tangent_a", "off_tangent_b", "h_segments")),
                             (traj, Trajectory, ("timesteps", "xs", "x0_preds"))]:
        path = obj.save(tmp_path / f"{cls.__name__}.v1")
        back = cls.load(path)
        for f in fields:
            assert torch.equal(getattr(back, f), getattr(obj, f)), (cls, f)
        assert back.meta == obj.meta
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0xFF  # flip the last data byte
        path.write_bytes(bytes(raw))
        with pytest.raises(ValueError, match="is damaged"):
            cls.load(path)


def test_files_diffgeo_did_not_write_are_refused_clearly(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("not a tensor file")
    with pytest.raises(ValueError, match="is not a diffgeo result file: it cannot be read as safetensors") as err:
        Trajectory.load(text)
    assert str(text) in str(err.value)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"a": torch.zeros(1)}, str(foreign))
    with pytest.raises(ValueError, match="was not written by diffgeo"):
        Trajectory.load(foreign)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        (tmp_path / "d.safetensors").mkdir()
        Trajectory.load(tmp_path / "d.safetensors")
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        Trajectory.load(tmp_path / "missing")


def test_files_from_before_the_content_record_still_load(tmp_path):
    path = tmp_path / "old.safetensors"
    save_file({"a": torch.arange(3.0)}, str(path), metadata={"diffgeo": json.dumps({"kind": "X", "n": 1})})
    tensors, meta = load_tensors_json(path, kind="X")
    assert tensors["a"].tolist() == [0.0, 1.0, 2.0] and meta == {"n": 1}


# -- targets that cannot be written --------------------------------------------------------------------
def test_a_parent_that_is_a_file_names_the_target(tmp_path):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "sub" / "r"
    with pytest.raises(OSError) as err:
        save_tensors_json(target, {"a": torch.zeros(1)}, {})
    assert str(target) + ".safetensors" in str(err.value) and ".tmp" not in str(err.value)


def test_a_read_only_parent_names_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    # Root ignores file modes, so the refusal of the OS is simulated where the temporary file is made.
    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", os.path.join(dir, ".r.safetensors.abc.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as err:
        save_tensors_json(tmp_path / "r", {"a": torch.zeros(1)}, {})
    message = str(err.value)
    assert str(tmp_path / "r.safetensors") in message and "not writable" in message and ".tmp" not in message


def test_missing_parents_are_created(tmp_path):
    path = save_tensors_json(tmp_path / "a" / "b" / "r", {"a": torch.zeros(1)}, {})
    assert path == tmp_path / "a" / "b" / "r.safetensors" and path.is_file()


def test_a_failed_save_leaves_no_file(tmp_path):
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_tensors_json(tmp_path / "r", {"a": torch.zeros(1)}, {"bad": object()})
    with pytest.raises(ValueError, match="meta device"):
        save_tensors_json(tmp_path / "r", {"a": torch.zeros(1, device="meta")}, {})
    assert list(tmp_path.iterdir()) == []
