"""Text-conditioned latent pipelines (Stable Diffusion layout), built tiny and random, offline.

The reference for sampling, prompt encoding and decoding is diffusers' own
``StableDiffusionPipeline`` run on the same saved folder; the reference for h is a plain forward
hook on ``unet.mid_block`` during a full U-Net forward with the pipeline's prompt embeddings.

Tolerance of the pipeline equivalence: max |ours - diffusers| <= 1e-4 on latents of magnitude
about 1 (float32, 10 DDIM steps; measured 1.1e-5 with eps-, 4.5e-6 with v-prediction). The reference here runs with
``set_alpha_to_one=True``; SD 1.5's own config (final alpha ``alphas_cumprod[0]``, ``steps_offset`` 1) is
checked against the pipeline in tests/test_scheduler_fidelity.py.
"""

from __future__ import annotations

import json
import shutil
import string

import pytest
import torch

import diffgeo
from diffgeo.models.conditioning import Cond

TOK_LEN = 16  # the tiny tokenizer's model_max_length (CLIP's is 77)
STEPS = 10


def _write_clip_tokenizer(folder, extra_tokens: int = 0):
    """A tiny CLIP BPE vocabulary: letters and digits, a few merges, the two special tokens."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges = ["r e", "re d</w>", "c i", "ci r", "l e</w>", "s q", "b l", "bl u", "blu e</w>"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    for i in range(extra_tokens):
        vocab[f"x{i}</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": TOK_LEN}))
    return CLIPTokenizer.from_pretrained(str(folder))


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Perturb every parameter so no block is a zero-initialised identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def _tiny_unet(**overrides):
    from diffusers import UNet2DConditionModel

    cfg = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
               down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
               norm_num_groups=8)
    cfg.update(overrides)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg)
    _randomise(unet, 1)
    return unet


def _scheduler(**overrides):
    from diffusers import DDIMScheduler

    cfg = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
               clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    cfg.update(overrides)
    return DDIMScheduler(**cfg)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny random Stable Diffusion pipeline saved with save_pretrained (safetensors)."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("tiny_sd")
    tokenizer = _write_clip_tokenizer(root / "vocab")
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), latent_channels=4,
                        norm_num_groups=8, sample_size=16, layers_per_block=1)
    _randomise(vae, 2)
    text_cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, max_position_embeddings=TOK_LEN,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    text_encoder = CLIPTextModel(text_cfg).eval()
    _randomise(text_encoder, 3)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=_tiny_unet(),
                                   scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    folder = root / "pipe"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def sd_model(sd_folder, device):
    return diffgeo.load(sd_folder, device=device)


@pytest.fixture(scope="module")
def sd_pipe(sd_folder, device):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None, requires_safety_checker=False,
                                                   use_safetensors=True).to(device)


def _copy(folder, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(folder, dest)
    return dest


# -- loading and shapes -----------------------------------------------------------------------------
def test_load_pipeline_folder(sd_model):
    assert sd_model.is_conditional and sd_model.is_latent
    assert sd_model.x_shape == (4, 8, 8) and sd_model.image_shape == (3, 16, 16)
    assert sd_model.h_shape == (32, 4, 4)
    assert sd_model.text.max_length == TOK_LEN


def test_encode_prompt_matches_pipeline(sd_model, sd_pipe, device):
    prompts = ["a red circle", "a blue square"]
    ours = sd_model.encode_prompt(prompts)
    ref, ref_neg = sd_pipe.encode_prompt(prompts, device, 1, True, ["", "blue"])
    assert ours.shape == (2, TOK_LEN, 32)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(sd_model.encode_prompt(["", "blue"]), ref_neg, rtol=0, atol=1e-6)
    assert (ours[0] - ours[1]).abs().max() > 1e-3  # the prompt reaches the embedding


# -- the pipeline equivalence ---------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_guided_ddim_reproduces_stable_diffusion_pipeline(sd_model, sd_pipe, device, prediction_type):
    from diffusers import DDIMScheduler

    sched_cfg = dict(sd_pipe.scheduler.config, prediction_type=prediction_type, set_alpha_to_one=True)
    sd_pipe.scheduler = DDIMScheduler.from_config(sched_cfg)
    model = diffgeo.Model(sd_model.unet, DDIMScheduler.from_config(sched_cfg), name="tiny-sd", vae=sd_model.vae,
                          text=sd_model.text)
    assert model.prediction_type == prediction_type
    prompts, negatives, scale = ["a red circle", "a blue square"], ["", "blue"], 5.0
    x_T = torch.randn(2, *model.x_shape, generator=torch.Generator().manual_seed(3)).to(device)
    ref_states = []

    def keep(pipe, i, t, kwargs):
        ref_states.append(kwargs["latents"].clone())
        return kwargs

    with torch.no_grad():
        image = sd_pipe(prompt=prompts, negative_prompt=negatives, latents=x_T.clone(), num_inference_steps=STEPS,
                        guidance_scale=scale, eta=0.0, output_type="pt", callback_on_step_end=keep).images
        traj = diffgeo.sample(model, noise=x_T, prompt=prompts, negative_prompt=negatives, guidance_scale=scale,
                              steps=STEPS, progress=False)
        ours_image = model.decode(traj.result)
    ref = torch.stack(ref_states)
    assert traj.timesteps[:-1].tolist() == sd_pipe.scheduler.timesteps.tolist()
    err = (traj.xs[1:] - ref).abs().max().item()
    assert err <= 1e-4, f"max |diffgeo - diffusers| over the trajectory = {err:.2e}"
    torch.testing.assert_close((ours_image + 1) / 2, image, rtol=0, atol=1e-4)
    assert traj.meta["guidance_scale"] == scale and traj.meta["prompt"] == prompts
    # Guidance matters: without it (cond branch only) the result is different.
    with torch.no_grad():
        plain = diffgeo.sample(model, noise=x_T, prompt=prompts, steps=STEPS, progress=False).result
    assert (plain - traj.result).abs().max() > 1e-3


def test_empty_prompt_generation_is_the_unconditional_branch(sd_model):
    x = torch.randn(1, *sd_model.x_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = sd_model.eps(x, 500, prompt="")
        b = sd_model.eps(x, 500, prompt="a red circle", branch="uncond")
        c = sd_model.eps(x, 500, prompt="a red circle", branch="cond")
        g = sd_model.eps(x, 500, prompt="a red circle", branch="cfg", guidance_scale=3.0)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(g, b + 3.0 * (c - b), rtol=0, atol=1e-5)
    assert (a - c).abs().max() > 1e-4


# -- h --------------------------------------------------------------------------------------------------
def test_h_is_the_mid_block_output_of_a_full_forward(sd_model, sd_pipe, device):
    x = torch.randn(2, *sd_model.x_shape, generator=torch.Generator().manual_seed(1)).to(device)
    t = torch.tensor([700, 300], device=device)
    prompts = ["a red circle", "a blue square"]
    emb, neg = sd_pipe.encode_prompt(prompts, device, 1, True, None)
    seen = []
    handle = sd_pipe.unet.mid_block.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            sd_pipe.unet(x, t, encoder_hidden_states=emb)
            sd_pipe.unet(x, t, encoder_hidden_states=neg)
    finally:
        handle.remove()
    with torch.no_grad():
        h_c = sd_model.h(x, t, prompt=prompts, branch="cond")
        h_u = sd_model.h(x, t, prompt=prompts, branch="uncond")
        h_g = sd_model.h(x, t, prompt=prompts, branch="cfg", guidance_scale=2.0)
        h_fn = sd_model.h_fn(x, t, sd_model.conditioning(prompts, branch="cond"))  # the pullback's entry point
    torch.testing.assert_close(h_c, seen[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(h_u, seen[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(h_g, seen[1] + 2.0 * (seen[0] - seen[1]), rtol=0, atol=1e-5)
    torch.testing.assert_close(h_fn, h_c, rtol=0, atol=0)
    with torch.no_grad():
        h_dict = sd_model.h_fn(x, t, {"encoder_hidden_states": emb})
    torch.testing.assert_close(h_dict, h_c, rtol=0, atol=1e-6)


def test_any_named_module_as_h(sd_folder, sd_pipe, device):
    model = diffgeo.load(sd_folder, device=device, h_module="down_blocks.0")
    x = torch.randn(1, *model.x_shape, generator=torch.Generator().manual_seed(2)).to(device)
    emb = sd_pipe.encode_prompt("a red circle", device, 1, False)[0]
    seen = []
    handle = sd_pipe.unet.down_blocks[0].register_forward_hook(lambda m, i, o: seen.append(o[0]))
    try:
        with torch.no_grad():
            sd_pipe.unet(x, torch.tensor([400], device=device), encoder_hidden_states=emb)
    finally:
        handle.remove()
    with torch.no_grad():
        h = model.h(x, 400, prompt="a red circle")
    torch.testing.assert_close(h, seen[0], rtol=0, atol=1e-5)


def test_decode_encode_image_and_invert(sd_model, sd_pipe, device):
    img = (torch.rand(1, *sd_model.image_shape, generator=torch.Generator().manual_seed(4)) * 2 - 1).to(device)
    with torch.no_grad():
        z = sd_model.encode_image(img)
        ref = sd_pipe.vae.encode(img).latent_dist.mean * sd_pipe.vae.config.scaling_factor
        traj = diffgeo.invert(sd_model, z, prompt="a red circle", steps=4, progress=False)
    assert z.shape == (1, *sd_model.x_shape)
    torch.testing.assert_close(z, ref, rtol=0, atol=1e-6)
    assert traj.meta["prompt"] == ["a red circle"] and traj.meta["branch"] == "cond"
    assert int(traj.timesteps[-1]) == int(diffgeo.ddim_timesteps(sd_model, 4)[0])


# -- bad input -------------------------------------------------------------------------------------------
def test_over_long_prompt_is_refused_with_the_limit(sd_model):
    long = " ".join(["red"] * 20)
    x = torch.zeros(1, *sd_model.x_shape)
    with pytest.raises(ValueError, match=rf"at most {TOK_LEN} including the start/end tokens"):
        sd_model.eps(x, 10, prompt=long)
    with pytest.raises(ValueError, match="refuses rather than truncates"):
        diffgeo.sample(sd_model, noise=x, prompt="a red circle", negative_prompt=long, guidance_scale=2.0, steps=2,
                       progress=False)
    sd_model.encode_prompt(" ".join(["red"] * (TOK_LEN - 2)))  # exactly at the limit is fine


def test_empty_and_mismatched_prompt_lists(sd_model):
    x = torch.zeros(2, *sd_model.x_shape)
    with pytest.raises(ValueError, match="empty list"):
        sd_model.eps(x, 10, prompt=[])
    with pytest.raises(ValueError, match="3 entries for a batch of 2"):
        diffgeo.sample(sd_model, noise=x, prompt=["a", "b", "c"], steps=2, progress=False)
    with pytest.raises(TypeError, match="string or a list of strings"):
        sd_model.h(x, 10, prompt=[1, 2])


def test_branch_keywords_are_explicit(sd_model):
    x = torch.zeros(1, *sd_model.x_shape)
    with pytest.raises(ValueError, match="only applies to branch='cfg'"):
        sd_model.eps(x, 10, prompt="a", guidance_scale=3.0)
    with pytest.raises(ValueError, match="needs guidance_scale"):
        sd_model.h(x, 10, prompt="a", branch="cfg")
    with pytest.raises(ValueError, match="branch must be one of"):
        sd_model.h(x, 10, prompt="a", branch="guided")


def test_prompt_or_guidance_on_an_unconditional_model(tmp_path):
    from conftest import save_unet_folder, tiny_unet_config
    from diffusers import UNet2DModel

    model = diffgeo.load(save_unet_folder(tmp_path, UNet2DModel(**tiny_unet_config())), device="cpu")
    x = torch.zeros(1, *model.x_shape)
    with pytest.raises(ValueError, match="unconditional .*takes no prompt"):
        model.eps(x, 10, prompt="a red circle")
    with pytest.raises(ValueError, match="unconditional .*takes no prompt"):
        diffgeo.sample(model, 1, prompt="a red circle", steps=2, progress=False)
    with pytest.raises(ValueError, match="unconditional: guidance_scale=3.0 needs"):
        diffgeo.sample(model, 1, guidance_scale=3.0, steps=2, progress=False)
    with pytest.raises(ValueError, match="takes no prompt"):
        model.encode_prompt(["a"])
    assert model.decode(x) is x  # pixel models decode to themselves


def test_guidance_without_an_unconditional_branch(sd_model):
    x = torch.zeros(1, *sd_model.x_shape)
    emb = sd_model.encode_prompt(["a red circle"])
    with pytest.raises(ValueError, match="needs the unconditional embeddings"):
        diffgeo.sample(sd_model, noise=x, cond=Cond(cond=emb), guidance_scale=4.0, steps=2, progress=False)
    no_dropout = diffgeo.Model(sd_model.unet, sd_model.scheduler, name="nodrop", text=sd_model.text,
                               provenance={"caption_dropout": 0})
    with pytest.raises(ValueError, match="without caption dropout"):
        diffgeo.sample(no_dropout, noise=x, prompt="a red circle", guidance_scale=4.0, steps=2, progress=False)
    with pytest.raises(ValueError, match="without caption dropout"):
        no_dropout.h(x, 10, prompt="a", branch="uncond")


@pytest.mark.parametrize("component", ["vae", "tokenizer", "text_encoder", "scheduler"])
def test_missing_component_is_named(sd_folder, tmp_path, component):
    folder = _copy(sd_folder, tmp_path)
    shutil.rmtree(folder / component)
    with pytest.raises(FileNotFoundError, match=f"missing the pipeline component '{component}'"):
        diffgeo.load(folder, device="cpu")


def test_pickled_text_encoder_is_refused(sd_folder, tmp_path):
    folder = _copy(sd_folder, tmp_path)
    weights = next((folder / "text_encoder").glob("*.safetensors"))
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ValueError, match="safetensors only"):
        diffgeo.load(folder, device="cpu")


def test_tokenizer_encoder_mismatch(sd_folder, tmp_path):
    folder = _copy(sd_folder, tmp_path)
    shutil.rmtree(folder / "tokenizer")
    tok = _write_clip_tokenizer(tmp_path / "bigger", extra_tokens=40)
    tok.save_pretrained(folder / "tokenizer")
    with pytest.raises(ValueError, match="tokenizer/encoder mismatch.*tokenizer has 123 tokens but .* has 83"):
        diffgeo.load(folder, device="cpu")


def test_text_encoder_width_must_match_cross_attention(sd_folder, tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = _copy(sd_folder, tmp_path)
    cfg = CLIPTextConfig.from_pretrained(folder / "text_encoder")
    cfg.hidden_size, cfg.intermediate_size = 24, 30
    shutil.rmtree(folder / "text_encoder")
    CLIPTextModel(cfg).save_pretrained(folder / "text_encoder", safe_serialization=True)
    with pytest.raises(ValueError, match="24-d token embeddings but the U-Net's cross-attention takes \\[32\\]"):
        diffgeo.load(folder, device="cpu")


def test_unet_needing_added_conditioning(sd_model):
    """An SDXL-like U-Net with one text encoder (no pooled projection): prompts are refused; h works once the
    extra conditioning is supplied (a full SDXL pipeline with both encoders: tests/test_sdxl.py)."""
    unet = _tiny_unet(addition_embed_type="text_time", addition_time_embed_dim=4,
                      projection_class_embeddings_input_dim=32 + 6 * 4)
    model = diffgeo.Model(unet, _scheduler(), name="sdxl-like", text=sd_model.text)
    x = torch.zeros(1, *model.x_shape)
    with pytest.raises(ValueError, match="added_cond_kwargs .*text_time"):
        model.h(x, 10, prompt="a red circle")
    emb = sd_model.encode_prompt(["a red circle"])
    with pytest.raises(ValueError, match="needs added_cond_kwargs"):
        model.h(x, 10, cond=Cond(cond=emb))
    added = {"text_embeds": torch.randn(1, 32), "time_ids": torch.tensor([[16.0, 16, 0, 0, 16, 16]])}
    with torch.no_grad():
        h = model.h(x, 10, cond=Cond(cond=emb, cond_kwargs={"added_cond_kwargs": added}))
    assert h.shape == (1, 32, 4, 4)


def test_local_basis_records_the_conditioning_it_used(sd_model):
    """A Cond passed as cond= keeps its branch and scale, in the computation and in meta (issue 9)."""
    x = torch.randn(1, *sd_model.x_shape, generator=torch.Generator().manual_seed(0))
    guided = sd_model.conditioning("a red circle", branch="cfg", guidance_scale=3.0)
    b = diffgeo.local_basis(sd_model, x, 500, 2, cond=guided, seed=0, progress=False)
    assert (b.meta["branch"], b.meta["guidance_scale"], b.meta["prompt"]) == ("cfg", 3.0, ["a red circle"])
    # independent reference: the full Jacobian of h_u + 3 (h_c - h_u), built from the two branches
    from diffgeo.geometry.pullback import forward_ad_ready

    t_b = sd_model.timesteps_tensor(500, 1)

    def guided_h(v):
        h_u = sd_model.h_fn(v[None], t_b, guided.with_branch("uncond"))[0]
        return h_u + 3.0 * (sd_model.h_fn(v[None], t_b, guided.with_branch("cond"))[0] - h_u)

    with forward_ad_ready(sd_model.unet):
        ref = diffgeo.exact_basis(guided_h, x[0], None, 2)
    torch.testing.assert_close(b.s, ref.s, rtol=1e-3, atol=0)
