"""diffgeo.sample against diffusers' own pipelines on the same weights, device and thread count, in one run.

    python benchmarks/bench_sampler.py --steps 50 --repeats 5 --threads 1 [--device cpu] [--out sampler.json]

Two pairs, each timed alternately (ours, theirs, ours, ...) after one warm-up call each, median of
``--repeats``: the tiny random Stable Diffusion pipeline of tests/test_text_models.py (built offline, SD 1.5's
scheduler config: set_alpha_to_one false, steps_offset 1) with guidance 7.5, ``diffgeo.sample`` against
``StableDiffusionPipeline(..., output_type="latent")``; and the embedded ``shapes`` against ``DDIMPipeline``
(``use_clipped_model_output=False``, what DDIMPipeline does). Prints JSON with seconds and the ratio
ours / diffusers per pair, and the largest difference of the results (they must agree: same x_T, same steps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import diffgeo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_text_models import TOK_LEN, _randomise, _scheduler, _tiny_unet, _write_clip_tokenizer  # noqa: E402

SD15 = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
            set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def tiny_sd(folder: Path):
    """A tiny random StableDiffusionPipeline saved to folder, and it loaded as a diffgeo Model."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _write_clip_tokenizer(folder / "vocab")
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), latent_channels=4,
                        norm_num_groups=8, sample_size=16, layers_per_block=1)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=TOK_LEN,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id)).eval()
    _randomise(text, 3)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=_tiny_unet(),
                                   scheduler=_scheduler(**SD15), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder / "pipe", safe_serialization=True)
    return pipe, diffgeo.load(folder / "pipe", device="cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pair(ours, theirs, repeats: int, device: torch.device) -> dict:
    """Median seconds of two zero-argument calls, alternated; returns them, the ratio and the results' difference."""
    a, b = ours(), theirs()  # warm-up (and the results to compare)
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("diffusers", theirs)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds_ours": med["ours"], "seconds_diffusers": med["diffusers"],
            "ratio_ours_over_diffusers": med["ours"] / med["diffusers"], "max_abs_diff": float((a - b).abs().max()),
            "all_seconds": times}


def main(argv: list[str] | None = None) -> dict:
    from diffusers import DDIMPipeline, DDIMScheduler

    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    res: dict = {"steps": a.steps, "repeats": a.repeats, "batch": a.batch, "threads": a.threads, "device": str(device),
                 "torch": torch.__version__}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        pipe, model = tiny_sd(Path(tmp))
        pipe.to(device)
        model.to(device)
        pipe.set_progress_bar_config(disable=True)
        prompts = ["a red circle"] * a.batch
        x_T = torch.randn(a.batch, *model.x_shape, generator=g).to(device)
        res["tiny_sd_guidance_7.5"] = pair(
            lambda: diffgeo.sample(model, noise=x_T, prompt=prompts, negative_prompt="", guidance_scale=7.5,
                                   steps=a.steps, progress=False).result,
            lambda: pipe(prompt=prompts, latents=x_T.clone(), num_inference_steps=a.steps, guidance_scale=7.5,
                         output_type="latent").images, a.repeats, device)

        shapes = diffgeo.load("shapes", device=device)
        ddim = DDIMPipeline(unet=shapes.unet, scheduler=DDIMScheduler.from_config(shapes.scheduler.config))
        ddim.set_progress_bar_config(disable=True)
        x_T = torch.randn(a.batch, *shapes.x_shape, generator=torch.Generator().manual_seed(3))

        def theirs() -> torch.Tensor:
            img = ddim(batch_size=a.batch, generator=torch.Generator().manual_seed(3), eta=0.0,
                       num_inference_steps=a.steps, output_type="np").images
            return torch.from_numpy(img)

        def ours() -> torch.Tensor:
            out = diffgeo.sample(shapes, noise=x_T.to(device), steps=a.steps, use_clipped_model_output=False,
                                 progress=False).result
            return (out / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu()

        res["shapes_vs_ddimpipeline"] = pair(ours, theirs, a.repeats, device)
    text = json.dumps(res, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    print(text)  # noqa: T201
    return res


if __name__ == "__main__":
    main()
