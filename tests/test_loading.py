"""Model loading: embedded names, local folders (the hub path), and bad input."""

from __future__ import annotations

import json
import shutil
import socket

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

import diffgeo
from diffgeo.models.hooks import capture
from conftest import save_unet_folder, tiny_unet_config

CONFIGS = {
    "attn-rgb16": tiny_unet_config(),
    "no-attn-gray8": tiny_unet_config(sample_size=8, in_channels=1, out_channels=1, add_attention=False,
                                      down_block_types=("DownBlock2D", "DownBlock2D"),
                                      up_block_types=("UpBlock2D", "UpBlock2D")),
    "three-levels": tiny_unet_config(block_out_channels=(8, 16, 16), layers_per_block=2,
                                     down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                                     up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=4),
}


def test_network_is_blocked():
    with pytest.raises(Exception, match="network"):
        socket.create_connection(("198.51.100.1", 443), timeout=1)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_folder_roundtrip_eps_and_h_match_the_saved_unet(tmp_path, name):
    torch.manual_seed(0)
    unet = UNet2DModel(**CONFIGS[name]).eval()
    folder = save_unet_folder(tmp_path / name, unet, DDIMScheduler(num_train_timesteps=1000))
    model = diffgeo.load(folder, device="cpu")
    assert model.x_shape == (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x = torch.randn(3, *model.x_shape)
    t = torch.tensor([5, 400, 999])
    with torch.no_grad(), capture(unet) as cap:
        direct = unet(x, t).sample
    with torch.no_grad():
        assert torch.allclose(model.eps(x, t), direct, atol=1e-5)
        h = model.h(x, t)
    assert torch.allclose(h, cap.value, atol=1e-5)
    assert model.h_shape == tuple(cap.value.shape[1:])


def test_embedded_loads_through_the_folder_path(tmp_path, shapes_model):
    assert "shapes" in diffgeo.list_models()
    prov = shapes_model.provenance
    for key in ("dataset", "factors", "training_command", "steps", "final_loss"):
        assert key in prov
    copy = tmp_path / "copy"
    shutil.copytree(diffgeo.models.loading.EMBEDDED_DIR / "shapes", copy)
    other = diffgeo.load(copy)
    x = torch.randn(2, *shapes_model.x_shape)
    with torch.no_grad():
        assert torch.equal(other.eps(x, 300), shapes_model.eps(x, 300))
    assert other.provenance == prov  # a copied folder keeps its provenance.json
    (copy / "provenance.json").unlink()
    assert diffgeo.load(copy).provenance == {}  # a plain diffusers folder has none


def test_shapes_model_attributes(shapes_model):
    m = shapes_model
    assert m.x_shape == (3, 32, 32) and m.h_shape == (128, 8, 8)
    assert m.dtype == torch.float32 and m.device.type in ("cpu", "cuda")
    # alphas_cumprod is the linear-beta DDPM schedule the model was trained with
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(m.alphas_cumprod, torch.cumprod(1 - betas, 0), rtol=1e-5)
    assert isinstance(m.scheduler, DDIMScheduler)


def test_v_prediction_is_converted_to_eps(tmp_path):
    torch.manual_seed(1)
    unet = UNet2DModel(**tiny_unet_config()).eval()
    folder = save_unet_folder(tmp_path / "v", unet, DDPMScheduler(prediction_type="v_prediction"))
    model = diffgeo.load(folder)
    x, t = torch.randn(2, *model.x_shape), 700
    a = float(model.alphas_cumprod[t])
    with torch.no_grad():
        v = unet(x, torch.tensor([t, t])).sample
        eps = model.eps(x, t)
    # v = sqrt(a) eps - sqrt(1-a) x0 and x_t = sqrt(a) x0 + sqrt(1-a) eps  =>  check both identities
    x0 = (x - (1 - a) ** 0.5 * eps) / a**0.5
    assert torch.allclose(a**0.5 * eps - (1 - a) ** 0.5 * x0, v, atol=1e-5)


# -- bad input -------------------------------------------------------------------------------
def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError) as err:
        diffgeo.load("no-such-model")
    msg = str(err.value)
    assert "shapes" in msg and "folder" in msg and "hub id" in msg


def test_folder_without_unet(tmp_path):
    (tmp_path / "scheduler").mkdir()
    with pytest.raises(FileNotFoundError, match="no U-Net"):
        diffgeo.load(tmp_path)


def test_folder_without_weights(tmp_path):
    unet = UNet2DModel(**tiny_unet_config())
    folder = save_unet_folder(tmp_path / "m", unet)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights"):
        diffgeo.load(folder)


def test_pickled_weights_are_refused(tmp_path):
    unet = UNet2DModel(**tiny_unet_config())
    folder = save_unet_folder(tmp_path / "m", unet)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match="pickled") as err:
        diffgeo.load(folder)
    assert "safe_serialization=True" in str(err.value)


def test_folder_without_scheduler(tmp_path):
    folder = save_unet_folder(tmp_path / "m", UNet2DModel(**tiny_unet_config()))
    shutil.rmtree(folder / "scheduler")
    with pytest.raises(FileNotFoundError, match="scheduler"):
        diffgeo.load(folder)


def test_unsupported_unet_class(tmp_path):
    folder = save_unet_folder(tmp_path / "m", UNet2DModel(**tiny_unet_config()))
    cfg_path = folder / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["_class_name"] = "UNet1DModel"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="UNet1DModel"):
        diffgeo.load(folder)


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.randn(2, 3, 16, 16), r"expects \(B, 3, 32, 32\)"),
        (torch.randn(3, 32, 32), r"add a batch dimension"),
        (torch.randn(2, 3, 32, 32, dtype=torch.float64), "dtype"),
        (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
    ],
)
def test_bad_x(shapes_model, x, match):
    with pytest.raises((ValueError, TypeError), match=match):
        shapes_model.eps(x, 10)
    with pytest.raises((ValueError, TypeError), match=match):
        shapes_model.h(x, 10)


@pytest.mark.parametrize("t", [-1, 1000, 10**6, torch.tensor([0, 1000])])
def test_t_outside_schedule(shapes_model, t):
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        shapes_model.eps(x, t)


def test_float_t_is_refused(shapes_model):
    with pytest.raises(TypeError, match="integer"):
        shapes_model.h(torch.randn(1, 3, 32, 32), 0.5)


def test_bad_h_module(shapes_model):
    with pytest.raises(ValueError, match="mid_block"):
        diffgeo.load("shapes", h_module="middle")


# -- half precision, accelerate, hub ids without network (issues 28 and 30) ----------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, "fp16"])
def test_half_precision_load_samples_finite_output(tmp_path, device, dtype):
    torch.manual_seed(2)
    folder = save_unet_folder(tmp_path / "m", UNet2DModel(**tiny_unet_config()).eval(),
                              DDIMScheduler(num_train_timesteps=1000))
    half = diffgeo.load(folder, device=device, dtype=dtype)
    want = diffgeo.core.checks.check_dtype(dtype)
    assert half.dtype == want and all(p.dtype == want for p in half.unet.parameters())
    full = diffgeo.load(folder, device=device)
    x_T = torch.randn(2, *full.x_shape, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        a = diffgeo.sample(half, noise=x_T.to(want), steps=4, progress=False).result
        b = diffgeo.sample(full, noise=x_T, steps=4, progress=False).result
    assert a.dtype == want and bool(torch.isfinite(a).all())
    # float16 keeps 11 and bfloat16 8 significant bits (relative rounding <= 2^-9 per operation): a 10%
    # relative difference after a few layers and 4 steps is far above that, far below a wrong load (~100%).
    assert ((a.float() - b).norm() / b.norm()).item() < 0.1
    # geometry on a half-precision model runs in float32 or says clearly why not (before any product)
    try:
        basis = diffgeo.local_basis(half, x_T[:1].to(want), 500, 2, max_iter=2, progress=False)
    except TypeError as err:
        assert "float32" in str(err)
    else:
        assert basis.v.dtype == torch.float32 and bool(torch.isfinite(basis.v).all())


def test_half_precision_the_device_cannot_run_is_refused_before_loading(tmp_path, monkeypatch):
    folder = save_unet_folder(tmp_path / "m", UNet2DModel(**tiny_unet_config()))

    def no_half_conv(x, *args, **kwargs):  # what CPU builds without float16 convolutions raise
        raise RuntimeError(f'"slow_conv2d_cpu" not implemented for {str(x.dtype)!r}')

    monkeypatch.setattr(torch.nn.functional, "conv2d", no_half_conv)
    with pytest.raises(ValueError, match=r"dtype=torch.float16 does not run on cpu .*not implemented.*bfloat16"):
        diffgeo.load(folder, device="cpu", dtype=torch.float16)


def test_accelerate_is_installed_and_loading_does_not_warn_about_it(tmp_path):
    import logging

    from diffusers.utils import is_accelerate_available

    assert is_accelerate_available()  # low-memory loading (diffusers' low_cpu_mem_usage) needs it
    folder = save_unet_folder(tmp_path / "m", UNet2DModel(**tiny_unet_config()))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(n) for n in ("diffusers", "transformers", "diffgeo")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        diffgeo.load(folder, device="cpu")
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
    assert not [r for r in records if "accelerate" in r.getMessage()]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of our own, and a record of every socket connect attempted."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    attempts = []
    real = socket.socket.connect

    def record(self, address):
        attempts.append(address)
        return real(self, address)  # conftest's guard refuses anything but localhost

    monkeypatch.setattr(socket.socket, "connect", record)
    return tmp_path / "hub", attempts


def _network_on(monkeypatch):
    """HF_HUB_OFFLINE off, the hub at an address (no DNS look-up) that conftest's socket guard refuses."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://198.51.100.1")


def test_hub_id_offline_and_not_cached_fails_at_once(hub_cache):
    _, attempts = hub_cache
    with pytest.raises(FileNotFoundError) as err:
        diffgeo.load("someorg/somemodel", device="cpu")
    msg = str(err.value)
    assert "someorg/somemodel" in msg and "not in the local Hugging Face cache" in msg and "HF_HUB_OFFLINE" in msg
    assert "local folder" in msg and "config.json" not in msg
    assert attempts == []


def test_hub_id_with_unreachable_hub_fails_at_once(hub_cache, monkeypatch):
    _, attempts = hub_cache
    _network_on(monkeypatch)
    with pytest.raises(FileNotFoundError, match="cannot be reached") as err:
        diffgeo.load("someorg/somemodel", device="cpu")
    assert "not in the local Hugging Face cache" in str(err.value) and "config.json" not in str(err.value)
    assert attempts == [("198.51.100.1", 443)]  # one connection attempt (refused by conftest), no retries


def test_cli_model_argument_checks_the_hub_id_before_any_work(hub_cache):
    from diffgeo.cli._args import check_model_arg

    _, attempts = hub_cache
    with pytest.raises(ValueError, match="--model: someorg/somemodel: this model is not in the local Hugging Face "
                                         "cache"):
        check_model_arg("someorg/somemodel")
    assert attempts == []


def test_hub_offline_set_after_import_is_respected(hub_cache, monkeypatch):
    from huggingface_hub import constants

    _, attempts = hub_cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        diffgeo.load("someorg/somemodel", device="cpu")
    assert attempts == []


@pytest.mark.parametrize("offline", [True, False])
def test_cached_hub_id_loads_without_network(hub_cache, monkeypatch, offline):
    cache, _ = hub_cache
    repo = cache / "models--someorg--somemodel"
    torch.manual_seed(3)
    unet = UNet2DModel(**tiny_unet_config()).eval()
    save_unet_folder(repo / "snapshots" / ("0" * 40), unet, DDIMScheduler(num_train_timesteps=1000))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    if not offline:  # the network is "on" but the hub cannot be reached: the cached copy is used
        _network_on(monkeypatch)
    model = diffgeo.load("someorg/somemodel", device="cpu")
    x = torch.randn(2, *model.x_shape)
    with torch.no_grad():
        torch.testing.assert_close(model.eps(x, 300), unet(x, torch.tensor([300, 300])).sample, rtol=0, atol=1e-6)
