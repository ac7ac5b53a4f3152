"""Test session set-up: no network, HF offline, a shared embedded model, small random U-Nets."""

from __future__ import annotations

import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


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
