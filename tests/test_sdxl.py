"""Stable Diffusion XL pipelines: two text encoders and ``added_cond_kwargs`` through the one conditioning path.

A tiny random SDXL pipeline (text_time U-Net, CLIPTextModel + CLIPTextModelWithProjection, a local
tokenizer, a tiny VAE) is saved with save_pretrained and loaded with ``diffgeo.load``. Ground truth is
diffusers' own ``StableDiffusionXLPipeline`` on the same folder: its ``encode_prompt`` for the
embeddings, its latents (``output_type="latent"``) for sampling, and a forward hook on
``unet.mid_block`` during its U-Net call for h.

Tolerances: float32 throughout; the prompt embeddings are the same operations in the same order
(1e-6); the sampled latents (magnitude about 1, 5 DDIM steps) may differ by the float32 rounding of
the two DDIM update formulas, as in tests/test_text_models.py (bound 1e-4, two orders above float32
rounding of a few steps, far below the 1e-2 a missing or wrong added embedding moves them).
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch

import diffgeo
from diffgeo.models.hooks import add_to_output
from diffgeo.models.text_encoder import DualPromptEncoder
from test_text_models import TOK_LEN, _randomise, _scheduler, _write_clip_tokenizer

STEPS = 5
PROJ = 16  # the second encoder's projection_dim: width of the pooled text embedding
TIME_DIM = 8  # addition_time_embed_dim


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    root = tmp_path_factory.mktemp("tiny_sdxl")
    tok = _write_clip_tokenizer(root / "vocab")
    tok2 = _write_clip_tokenizer(root / "vocab2")

    def text_cfg(**kw):
        return CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                              num_attention_heads=4, max_position_embeddings=TOK_LEN, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **kw)

    torch.manual_seed(0)
    enc1 = CLIPTextModel(text_cfg()).eval()
    enc2 = CLIPTextModelWithProjection(text_cfg(projection_dim=PROJ)).eval()
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
                                attention_head_dim=4, norm_num_groups=8, addition_embed_type="text_time",
                                addition_time_embed_dim=TIME_DIM,
                                projection_class_embeddings_input_dim=6 * TIME_DIM + PROJ)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), latent_channels=4,
                        norm_num_groups=8, sample_size=16, layers_per_block=1)
    for i, m in enumerate((enc1, enc2, unet, vae)):
        _randomise(m, 10 + i)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=enc1, text_encoder_2=enc2, tokenizer=tok,
                                     tokenizer_2=tok2, unet=unet, scheduler=_scheduler(set_alpha_to_one=True))
    folder = root / "pipe"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def sdxl_model(sdxl_folder, device):
    return diffgeo.load(sdxl_folder, device=device)


@pytest.fixture(scope="module")
def sdxl_pipe(sdxl_folder, device):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(sdxl_folder, use_safetensors=True).to(device)


def test_loads_with_both_encoders_and_matches_encode_prompt(sdxl_model, sdxl_pipe, device):
    assert isinstance(sdxl_model.text, DualPromptEncoder)
    assert sdxl_model.x_shape == (4, 8, 8) and sdxl_model.image_shape == (3, 16, 16)
    prompts = ["a red circle", "a blue square"]
    with torch.no_grad():
        ref, ref_neg, pooled, pooled_neg = sdxl_pipe.encode_prompt(prompts, device=device,
                                                                   do_classifier_free_guidance=True,
                                                                   negative_prompt=["", "blue"])
    c = sdxl_model.conditioning(prompts, negative_prompt=["", "blue"], branch="cfg", guidance_scale=2.0)
    assert c.cond.shape == (2, TOK_LEN, 64)
    torch.testing.assert_close(c.cond, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(c.uncond, ref_neg, rtol=0, atol=1e-6)
    added, added_neg = c.cond_kwargs["added_cond_kwargs"], c.uncond_kwargs["added_cond_kwargs"]
    torch.testing.assert_close(added["text_embeds"], pooled, rtol=0, atol=1e-6)
    torch.testing.assert_close(added_neg["text_embeds"], pooled_neg, rtol=0, atol=1e-6)
    ref_ids = sdxl_pipe._get_add_time_ids((16, 16), (0, 0), (16, 16), dtype=torch.float32,
                                          text_encoder_projection_dim=PROJ).to(device)
    torch.testing.assert_close(added["time_ids"], ref_ids.expand(2, -1), rtol=0, atol=0)
    assert (c.cond[0] - c.cond[1]).abs().max() > 1e-3 and (pooled[0] - pooled[1]).abs().max() > 1e-3


@pytest.mark.parametrize("scale, negative", [(5.0, None), (5.0, ["", "blue"]), (1.0, None)])
def test_sample_equals_the_sdxl_pipeline(sdxl_model, sdxl_pipe, device, scale, negative):
    prompts = ["a red circle", "a blue square"]
    x_T = torch.randn(2, *sdxl_model.x_shape, generator=torch.Generator().manual_seed(3)).to(device)
    with torch.no_grad():
        ref = sdxl_pipe(prompt=prompts, negative_prompt=negative, latents=x_T.clone(), num_inference_steps=STEPS,
                        guidance_scale=scale, output_type="latent").images
        traj = diffgeo.sample(sdxl_model, noise=x_T, prompt=prompts, negative_prompt=negative, guidance_scale=scale,
                              steps=STEPS, progress=False)
    assert traj.timesteps[:-1].tolist() == sdxl_pipe.scheduler.timesteps.tolist()
    err = (traj.result - ref).abs().max().item()
    assert err <= 1e-4, f"max |diffgeo - diffusers| = {err:.2e}"
    # The added embedding matters: with zero pooled text embeddings the latents differ.
    c = sdxl_model.conditioning(prompts, negative_prompt=negative, branch="cfg" if scale != 1 else "cond",
                                guidance_scale=scale if scale != 1 else None)

    def blank(kw):
        if not kw:
            return {}
        return {"added_cond_kwargs": {**kw["added_cond_kwargs"], "text_embeds": torch.zeros(2, PROJ, device=device)}}

    with torch.no_grad():
        other = diffgeo.sample(sdxl_model, noise=x_T, cond=replace(c, cond_kwargs=blank(c.cond_kwargs),
                                                                   uncond_kwargs=blank(c.uncond_kwargs)),
                               steps=STEPS, progress=False)
    assert (other.result - traj.result).abs().max() > 1e-3


def test_h_is_the_mid_block_output_and_local_basis_runs(sdxl_model, sdxl_pipe, device):
    x = torch.randn(2, *sdxl_model.x_shape, generator=torch.Generator().manual_seed(1)).to(device)
    t = torch.tensor([700, 300], device=device)
    prompts = ["a red circle", "a blue square"]
    emb, _, pooled, _ = sdxl_pipe.encode_prompt(prompts, device=device, do_classifier_free_guidance=False)
    ids = sdxl_pipe._get_add_time_ids((16, 16), (0, 0), (16, 16), dtype=torch.float32,
                                      text_encoder_projection_dim=PROJ).expand(2, -1).to(device)
    seen = []
    handle = sdxl_pipe.unet.mid_block.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            sdxl_pipe.unet(x, t, encoder_hidden_states=emb, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids})
    finally:
        handle.remove()
    with torch.no_grad():
        h = sdxl_model.h(x, t, prompt=prompts)
    torch.testing.assert_close(h, seen[0], rtol=0, atol=1e-5)
    assert sdxl_model.h_shape == tuple(seen[0].shape[1:])
    # an h-space edit (the hook Asyrp uses) reaches the samples and is removed afterwards
    x_T = x[:1]
    with torch.no_grad():
        plain = diffgeo.sample(sdxl_model, noise=x_T, prompt="a red circle", steps=STEPS, progress=False).result
        with add_to_output(sdxl_model.unet, torch.ones(sdxl_model.h_shape, device=device), sdxl_model.h_module):
            edited = diffgeo.sample(sdxl_model, noise=x_T, prompt="a red circle", steps=STEPS, progress=False).result
        again = diffgeo.sample(sdxl_model, noise=x_T, prompt="a red circle", steps=STEPS, progress=False).result
    assert (edited - plain).abs().max() > 1e-3 and torch.equal(again, plain)
    b = diffgeo.local_basis(sdxl_model, x[:1], 500, 2, prompt="a red circle", seed=0, max_iter=3, progress=False)
    assert b.v.shape == (2, *sdxl_model.x_shape) and bool(torch.isfinite(b.s).all()) and float(b.s[0]) > 0


@pytest.mark.parametrize("also_index", [False, True])
def test_missing_second_encoder_is_named(sdxl_folder, tmp_path, also_index):
    import json

    folder = tmp_path / "copy"
    shutil.copytree(sdxl_folder, folder)
    shutil.rmtree(folder / "text_encoder_2")
    if also_index:  # the folder and its model_index.json entry both gone
        index = json.loads((folder / "model_index.json").read_text())
        del index["text_encoder_2"]
        (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="text_encoder_2") as err:
        diffgeo.load(folder, device="cpu")
    assert str(folder) in str(err.value)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_load_samples_finite_latents(sdxl_folder, sdxl_model, device, dtype):
    model = diffgeo.load(sdxl_folder, device=device, dtype=dtype)
    assert model.dtype == dtype and model.text.second.encoder.dtype == dtype
    # diffusers' pipelines decode float16 latents with the VAE upcast to float32 (force_upcast): so does diffgeo
    assert model.vae.dtype == (torch.float32 if dtype == torch.float16 else dtype)
    x_T = torch.randn(1, *model.x_shape, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        half = diffgeo.sample(model, noise=x_T.to(dtype), prompt="a red circle", guidance_scale=3.0,
                              steps=STEPS, progress=False).result
        full = diffgeo.sample(sdxl_model, noise=x_T, prompt="a red circle", guidance_scale=3.0, steps=STEPS,
                              progress=False).result
        image = model.decode(half)
    assert half.dtype == dtype and bool(torch.isfinite(half).all()) and bool(torch.isfinite(image).all())
    # float16 keeps 11 and bfloat16 8 significant bits (relative rounding <= 2^-9 per operation); over a
    # few layers and 5 steps a 10% relative difference is far above that, far below a wrong load (~100%).
    rel = ((half.float() - full).norm() / full.norm()).item()
    assert rel < 0.1, rel


def test_prompt_too_long_for_either_tokenizer_is_refused(sdxl_model, device):
    with pytest.raises(ValueError, match=f"takes at most {TOK_LEN}"):
        sdxl_model.h(torch.zeros(1, *sdxl_model.x_shape, device=device), 10, prompt="red " * TOK_LEN)


def test_added_kwargs_with_a_wrong_batch_are_named(sdxl_model, device):
    from diffgeo.models.conditioning import Cond

    c = sdxl_model.conditioning(["a red circle"] * 3)
    bad = replace(c, cond=c.cond[:1])  # embeddings broadcast from 1, but the pooled embedding has batch 3
    with pytest.raises(ValueError, match=r"cond_kwargs\['added_cond_kwargs'\]\['text_embeds'\] has batch 3 but x_t "
                                         "has batch 2"):
        sdxl_model.h(torch.zeros(2, *sdxl_model.x_shape, device=device), 10, cond=bad)
    assert isinstance(bad, Cond)


def test_refiner_layout_without_the_first_encoder_loads_for_explicit_conditioning(sdxl_folder, sdxl_model, tmp_path,
                                                                                  device):
    """model_index.json listing text_encoder/tokenizer as null (an SDXL refiner's layout): no prompts, a clear
    message, and explicit Cond still runs."""
    import json

    folder = tmp_path / "refiner"
    shutil.copytree(sdxl_folder, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder"] = index["tokenizer"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(folder / "text_encoder")
    shutil.rmtree(folder / "tokenizer")
    model = diffgeo.load(folder, device=device)
    assert model.text is None
    x = torch.zeros(1, *model.x_shape, device=device)
    with pytest.raises(ValueError, match="no text encoder"):
        model.h(x, 10, prompt="a red circle")
    c = sdxl_model.conditioning("a red circle")
    with torch.no_grad():
        torch.testing.assert_close(model.h(x, 10, cond=c), sdxl_model.h(x, 10, cond=c), rtol=0, atol=0)
