"""Guided samples for lists of prompts: :func:`generate` (one sample per prompt) and
:func:`prompt_grid` (rows of prompts over shared x_T), decoded to images.

Noise is drawn on the CPU from ``seed`` for all samples at once, so sample i has the same x_T
whatever the batch size and the guidance scale (sweeps are paired comparisons).
``guidance_scale=None`` is the model's own default (:func:`diffgeo.models.conditioning.default_guidance`).

Anything with a method ``sample_prompts(prompts, *, guidance_scale, steps, seed) -> images``
(a :class:`PromptSampler`) can stand in for a :class:`~diffgeo.models.model.Model`, e.g. a renderer
that draws the prompted scene exactly (an upper bound that measures the reader, not the generator).

>>> import diffgeo
>>> generate(diffgeo.load("digits"), ["a handwritten 3", "seven"], steps=2, progress=False).shape
torch.Size([2, 1, 16, 16])
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch

from diffgeo.core.checks import check_int
from diffgeo.core.progress import progress_bar
from diffgeo.models.conditioning import normalise_prompts
from diffgeo.models.model import Model
from diffgeo.sampling.ddim import sample

__all__ = ["PromptSampler", "generate", "prompt_grid", "DEFAULT_STEPS"]

#: DDIM steps of the alignment measurements and prompt grids.
DEFAULT_STEPS = 20


@runtime_checkable
class PromptSampler(Protocol):
    """A stand-in for a Model: images (N, C, H, W) in [-1, 1] for N prompts."""

    def sample_prompts(self, prompts: list[str], *, guidance_scale: float, steps: int, seed: int) -> torch.Tensor:
        ...


def check_prompt_model(model: Model | PromptSampler, image_shape: tuple[int, ...] | None, what: str) -> None:
    """A text-conditioned Model making images of ``image_shape`` (None: any), or a PromptSampler.

    >>> import diffgeo
    >>> check_prompt_model(diffgeo.load("digits"), (1, 16, 16), "align")     # fine: returns None
    >>> check_prompt_model(diffgeo.load("shapes"), None, "align")
    Traceback (most recent call last):
    ValueError: align needs a text-conditioned model; shapes is unconditional (UNet2DModel)
    """
    if isinstance(model, Model):
        if not model.is_conditional:
            raise ValueError(f"{what} needs a text-conditioned model; {model.name} is unconditional "
                             f"({type(model.unet).__name__})")
        if image_shape is not None and tuple(model.image_shape) != tuple(image_shape):
            raise ValueError(f"{what} needs images of shape {tuple(image_shape)}; {model.name} makes "
                             f"{tuple(model.image_shape)}")
    elif not isinstance(model, PromptSampler):
        raise TypeError(f"{what} takes a diffgeo Model or an object with sample_prompts(prompts, *, guidance_scale, "
                        f"steps, seed); got {type(model).__name__}")


def generate(model: Model | PromptSampler, prompts: Sequence[str], *, guidance_scale: float | None = None,
             steps: int = DEFAULT_STEPS, seed: int = 0, noise: torch.Tensor | None = None, batch_size: int = 250,
             use_clipped_model_output: bool | None = None, progress: bool | None = None) -> torch.Tensor:
    """One guided DDIM sample per prompt: images (N, *image_shape) in [-1, 1], on the CPU.

    x_T: ``noise`` (N, *x_shape) when given, else drawn at once from ``seed``; the negative
    prompt is ``""``. ``use_clipped_model_output``: see :func:`diffgeo.sample` (None: the model's default). A
    :class:`PromptSampler` draws its own noise (guidance None: 1) and ignores the last two.

    >>> import diffgeo
    >>> images = generate(diffgeo.load("digits"), ["a 1", "a 7"], steps=2, seed=0, progress=False)
    >>> images.shape, bool(images.abs().max() <= 1)
    (torch.Size([2, 1, 16, 16]), True)
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_prompt_model(model, None, "generate")
    if not isinstance(model, Model):
        w = 1.0 if guidance_scale is None else float(guidance_scale)
        images = model.sample_prompts(prompts, guidance_scale=w, steps=steps, seed=seed)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] != len(prompts):
            raise ValueError(f"{type(model).__name__}.sample_prompts must return images (N={len(prompts)}, C, H, W), "
                             f"got {getattr(images, 'shape', type(images).__name__)}")
        return images.detach().float().cpu()

    if noise is None:
        noise = torch.randn((len(prompts), *model.x_shape), generator=torch.Generator().manual_seed(seed))
    elif tuple(noise.shape) != (len(prompts), *model.x_shape):
        raise ValueError(f"noise must have shape ({len(prompts)}, {', '.join(map(str, model.x_shape))}), one x_T per "
                         f"prompt; got {tuple(noise.shape)}")
    out = []
    with torch.no_grad():
        for start in progress_bar(range(0, len(prompts), batch_size), desc=f"sampling {model.name}", progress=progress):
            chunk = noise[start:start + batch_size].to(device=model.device, dtype=model.dtype)
            traj = sample(model, noise=chunk, prompt=prompts[start:start + batch_size], guidance_scale=guidance_scale,
                          steps=steps, use_clipped_model_output=use_clipped_model_output, progress=False)
            out.append(model.decode(traj.result).float().cpu())
    return torch.cat(out).clamp(-1, 1)


def prompt_grid(model: Model | PromptSampler, prompts: Sequence[str], *, columns: int = 8,
                guidance_scale: float | None = None, steps: int = DEFAULT_STEPS, seed: int = 0,
                use_clipped_model_output: bool | None = None, progress: bool | None = None) -> torch.Tensor:
    """Images (len(prompts) * columns, C, H, W): row r holds ``columns`` samples of ``prompts[r]``;
    column j starts from the same x_T in every row, so rows differ by the prompt alone.

    >>> import diffgeo
    >>> prompt_grid(diffgeo.load("digits"), ["a 1", "a 7"], columns=3, steps=2, progress=False).shape
    torch.Size([6, 1, 16, 16])
    """
    if isinstance(prompts, Sequence) and not isinstance(prompts, str) and not prompts:
        raise ValueError("prompts is empty: give one prompt per row")
    prompts = normalise_prompts(prompts, what="prompts")  # one string is one prompt (one row), not characters
    columns = check_int(columns, "columns", min=1)
    seed = check_int(seed, "seed", min=0)  # the grid is reproducible: a seed is required
    noise = None
    if isinstance(model, Model):
        noise = torch.randn((columns, *model.x_shape), generator=torch.Generator().manual_seed(seed))
        noise = noise.repeat(len(prompts), *([1] * len(model.x_shape)))
    return generate(model, [p for p in prompts for _ in range(columns)], guidance_scale=guidance_scale, steps=steps,
                    seed=seed, noise=noise, batch_size=len(prompts) * columns,
                    use_clipped_model_output=use_clipped_model_output, progress=progress)
