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
