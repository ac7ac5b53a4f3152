"""Devices, dtypes and the precision policy: the default-device switch, inputs on another dtype or
layout (converted or refused clearly), half-precision models refused for geometry with the fix, and
full_precision restoring the caller's TF32 settings exactly.

Without a GPU the cross-device cases cannot run here; the same code paths are exercised with inputs
in another dtype, non-contiguous layouts, and the device switch set to the CPU.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

import diffgeo
from diffgeo.core.device import as_device, default_device, free_memory
from diffgeo.core.precision import full_precision, precision_flags
from diffgeo.geometry.basis import exact_basis, local_basis
from diffgeo.geometry.batched import local_bases
from diffgeo.geometry.pullback import h_map, jvp
from diffgeo.geometry.subspaces import transport
from diffgeo.models.model import default_device as model_default_device


# -- the device switch -------------------------------------------------------------------------
def test_default_device_follows_the_environment_switch(monkeypatch):
    monkeypatch.setenv("DIFFGEO_DEVICE", "cpu")
    assert default_device() == torch.device("cpu") == model_default_device()
    monkeypatch.delenv("DIFFGEO_DEVICE")
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad, match in (("gpu0", "not a torch device"), ("meta", "holds no data")):
        monkeypatch.setenv("DIFFGEO_DEVICE", bad)
        with pytest.raises(ValueError, match=match):
            default_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_says_so(monkeypatch):
    monkeypatch.setenv("DIFFGEO_DEVICE", "cuda")
    with pytest.raises(ValueError, match=r"\$DIFFGEO_DEVICE='cuda' but this torch build sees no CUDA device"):
        default_device()
    with pytest.raises(TypeError, match="device must be a str"):
        as_device(3)


def test_the_suite_runs_where_the_switch_says(shapes_model, device):
    # conftest maps DIFFGEO_TEST_DEVICE onto DIFFGEO_DEVICE, which diffgeo.load reads
    wanted = os.environ.get("DIFFGEO_TEST_DEVICE", "").strip()
    if wanted:
        assert device == as_device(wanted)
    assert shapes_model.device.type == device.type


def test_free_memory_is_positive_and_below_the_machine_total():
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < free_memory("cpu") <= total


# -- the precision policy ----------------------------------------------------------------------
def test_full_precision_turns_tf32_off_and_restores_the_callers_flags_exactly():
    before = precision_flags()
    try:
        torch.set_float32_matmul_precision("high")        # a caller who asked for TF32 matmuls
        torch.backends.cudnn.conv.fp32_precision = "tf32"
        caller = precision_flags()
        assert caller["cuda.matmul"] == "tf32"
        with full_precision():
            inside = precision_flags()
            with full_precision():                         # nests
                assert precision_flags() == inside
            assert precision_flags() == inside
        assert inside["matmul_precision"] == "highest"
        assert all(inside[k] == "ieee" for k in ("cuda.matmul", "cudnn.conv"))
        assert precision_flags() == caller
        with pytest.raises(KeyError):                      # restored when the body raises too
            with full_precision():
                raise KeyError("boom")
        assert precision_flags() == caller
        assert torch.backends.cuda.matmul.allow_tf32 is True   # the legacy view still reads cleanly
    finally:
        torch.set_float32_matmul_precision(before["matmul_precision"])
        for key, value in before.items():
            if key != "matmul_precision":
                obj = torch.backends
                for part in key.split("."):
                    obj = getattr(obj, part)
                obj.fp32_precision = value
    assert precision_flags() == before


def test_products_run_with_tf32_off(shapes_model):
    seen = []
    real, h_shape = shapes_model.h_fn, shapes_model.h_shape   # the shape probe is not a product

    def spy(x, t, cond=None):
        seen.append(precision_flags()["cuda.matmul"])
        return real(x, t, cond)

    shapes_model.h_fn = spy
    try:
        f = h_map(shapes_model, torch.zeros(1, *shapes_model.x_shape), 500)
        f.jvp(torch.zeros(1, *shapes_model.x_shape))
        f.vjp(torch.zeros(1, *h_shape))
    finally:
        del shapes_model.h_fn
    assert seen and set(seen) == {"ieee"}


# -- inputs in another dtype or layout -----------------------------------------------------------
def test_inputs_in_another_dtype_are_refused_with_the_conversion_to_make(shapes_model):
    x64 = torch.zeros(1, *shapes_model.x_shape, dtype=torch.float64)
    for call in (lambda: local_basis(shapes_model, x64, 500, 2, progress=False),
                 lambda: exact_basis(shapes_model, x64, 500, 2),
                 lambda: local_bases(shapes_model, x64, 500, 2, progress=False),
                 lambda: jvp(shapes_model, x64, 500, torch.zeros(1, *shapes_model.x_shape))):
        with pytest.raises(TypeError, match=r"torch\.float64.*runs in torch\.float32: pass .*\.to\(torch\.float32\)"):
            call()
    with pytest.raises(TypeError, match="dtype torch.int64"):
        local_basis(shapes_model, torch.zeros(1, *shapes_model.x_shape, dtype=torch.long), 500, 2, progress=False)


def test_non_contiguous_points_and_float64_vectors_are_converted(shapes_model):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, *shapes_model.x_shape, generator=gen)
    x_nc = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)      # same values, channels-last strides
    assert not x_nc.is_contiguous()
    v = torch.randn(3, *shapes_model.x_shape, generator=gen)
    v64_nc = v.double().transpose(2, 3).contiguous().transpose(2, 3)
    ref = jvp(shapes_model, x, 500, v)
    got = jvp(shapes_model, x_nc, 500, v64_nc)
    assert got.dtype == shapes_model.dtype and got.device == shapes_model.device
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


def test_half_precision_models_are_refused_for_geometry_with_the_fix(shapes_model):
    half = copy.deepcopy(shapes_model).to(dtype=torch.bfloat16)
    x = torch.zeros(1, *half.x_shape, dtype=torch.bfloat16)
    for call in (lambda: local_basis(half, x, 500, 2, progress=False), lambda: exact_basis(half, x, 500, 2),
                 lambda: local_bases(half, x, 500, 2, progress=False),
                 lambda: jvp(half, x, 500, torch.zeros(1, *half.x_shape))):
        with pytest.raises(TypeError, match=r"runs in torch\.bfloat16.*dtype=torch\.float32"):
            call()


def test_transport_mixes_dtypes_and_returns_in_the_targets(shapes_model):
    a_mat = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    ba = exact_basis(lambda x: a_mat @ x, torch.zeros(3, dtype=torch.float64), None, 2)
    bb = exact_basis(lambda x: a_mat.float() @ x, torch.ones(3), None, 2)
    out = transport(ba, bb, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float16))
    assert out.dtype == torch.float32 and out.device == bb.v.device
    assert torch.allclose(out, torch.tensor([0.0, 1.0, 0.0]))


def test_the_package_face_exports_local_bases():
    assert diffgeo.local_bases is local_bases


def test_the_inversion_solve_runs_with_tf32_off(shapes_model):
    seen, before = [], precision_flags()
    real = shapes_model.eps_fn

    def spy(x, t, cond=None):
        seen.append(precision_flags()["cuda.matmul"])
        return real(x, t, cond)

    shapes_model.eps_fn = spy
    try:
        with torch.no_grad():
            diffgeo.invert(shapes_model, torch.zeros(1, *shapes_model.x_shape), steps=2, progress=False)
    finally:
        del shapes_model.eps_fn
    assert "ieee" in seen   # the fixed-point solve's U-Net calls ran in full float32
    assert precision_flags() == before    # and the caller's settings are back
