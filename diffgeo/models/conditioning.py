"""Prompts and conditioning for text-conditioned U-Nets.

:class:`Cond` holds the token embeddings a ``UNet2DConditionModel`` attends to
(``encoder_hidden_states``, (N, L, D)) and is what the U-Net maps take as
their third argument: the embeddings of the prompt and of the negative prompt plus the
*branch* the quantity is computed on:

- ``"cond"``: the prompt's branch, eps(x_t, t, c) or h(x_t, t, c);
- ``"uncond"``: the negative prompt's (by default the empty prompt's) branch;
- ``"cfg"``: classifier-free guidance, ``q_u + w (q_c - q_u)`` for q = eps (or h), w the
  guidance scale. Both branches run as one batch of 2B, as diffusers' pipelines do.

Prompts are checked, never silently changed: an over-long prompt (more tokens than the
tokenizer's ``max_length``, which counts the start and end tokens: 77 for CLIP, so 75 text
tokens) is refused with the count and the limit, not truncated. ``""`` is a valid prompt (the
unconditional one); an empty list is not.

The text encoder itself (:class:`~diffgeo.models.text_encoder.PromptEncoder`, the packaged MiniLM)
lives in :mod:`diffgeo.models.text_encoder`. Stable Diffusion XL (a
:class:`~diffgeo.models.text_encoder.DualPromptEncoder`): prompts also give the U-Net
``added_cond_kwargs`` per branch, the pooled text embedding (``text_embeds``, (N, P)) and
``time_ids`` (N, 6, see :func:`text_time_ids`), as ``StableDiffusionXLPipeline`` does; an
unspecified negative prompt is all zeros there when the pipeline says ``force_zeros_for_empty_prompt``.

>>> import torch
>>> c = Cond(cond=torch.zeros(1, 4, 8), uncond=torch.ones(1, 4, 8), branch="cfg", guidance_scale=3.0)
>>> c.with_branch("uncond").branch, c.embeddings(2).shape
('uncond', torch.Size([4, 4, 8]))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import torch

from diffgeo.core.checks import check_float, check_tensor

__all__ = ["BRANCHES", "Cond", "as_cond", "resolve_cond", "text_time_ids", "default_guidance", "normalise_prompts"]

log = logging.getLogger(__name__)

BRANCHES = ("cond", "uncond", "cfg")


def _check_branch(branch: str) -> None:
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {', '.join(map(repr, BRANCHES))}, got {branch!r}: 'cond' is the "
                         "prompt's branch, 'uncond' the negative (default: empty) prompt's, 'cfg' the "
                         "classifier-free-guided combination")


def _fit_batch(e: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if e.shape[0] == batch:
        return e
    if e.shape[0] == 1:
        return e.expand(batch, *e.shape[1:])
    raise ValueError(f"{what} has batch {e.shape[0]} but x_t has batch {batch}; give one embedding or one per sample")


def _fit_kwargs(value: Any, batch: int, what: str) -> Any:
    """Every tensor (with a batch axis) of a nested keyword structure with batch 1 or ``batch``, fitted to ``batch``."""
    if isinstance(value, torch.Tensor):
        return _fit_batch(value, batch, what) if value.dim() > 0 else value
    if isinstance(value, Mapping):
        return {k: _fit_kwargs(v, batch, f"{what}[{k!r}]") for k, v in value.items()}
    return value


def _cat_kwargs(a: Any, b: Any) -> Any:
    """Concatenate two nested keyword structures along the batch axis (tensors at the leaves)."""
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    if isinstance(a, Mapping):
        return {k: _cat_kwargs(a[k], b[k]) for k in a}
    return a


@dataclass(frozen=True)
class Cond:
    """Conditioning of a text U-Net for one call of ``Model.eps_fn`` / ``Model.h_fn``.

    cond: (B or 1, L, D) ``encoder_hidden_states`` of the prompt(s);
    uncond: (B or 1, L, D) of the negative prompt(s), or None (then only ``branch="cond"`` works);
    branch: ``"cond"``, ``"uncond"`` or ``"cfg"``; guidance_scale: w for ``"cfg"``;
    cond_kwargs / uncond_kwargs: extra U-Net keywords per branch (e.g. SDXL's
    ``added_cond_kwargs``), tensors with batch B or 1;
    prompt / negative_prompt: the strings, kept for metadata (None when built from embeddings).
    """

    cond: torch.Tensor
    uncond: torch.Tensor | None = None
    branch: str = "cond"
    guidance_scale: float = 1.0
    cond_kwargs: Mapping[str, Any] = field(default_factory=dict)
    uncond_kwargs: Mapping[str, Any] = field(default_factory=dict)
    prompt: list[str] | None = None
    negative_prompt: list[str] | None = None

    def __post_init__(self) -> None:
        _check_branch(self.branch)
        if not isinstance(self.cond, torch.Tensor) or self.cond.dim() != 3:
            raise ValueError(f"cond must be a tensor (B, L, D) of token embeddings, got "
                             f"{getattr(self.cond, 'shape', type(self.cond).__name__)}")
        check_tensor(self.cond, "cond", nonempty=False)  # real, finite, not on the meta device
        if self.uncond is not None:
            if not isinstance(self.uncond, torch.Tensor) or self.uncond.dim() != 3:
                raise ValueError(f"uncond must be a tensor (B, L, D) of token embeddings (or None), got "
                                 f"{getattr(self.uncond, 'shape', type(self.uncond).__name__)}")
            check_tensor(self.uncond, "uncond", nonempty=False)
        check_float(self.guidance_scale, "guidance_scale")
        if self.branch in ("uncond", "cfg") and self.uncond is None:
            raise ValueError(f"branch={self.branch!r} needs the unconditional embeddings (uncond=...): guidance "
                             "and the unconditional branch need a negative or empty prompt's embedding")

    def with_branch(self, branch: str, guidance_scale: float | None = None) -> "Cond":
        """The same embeddings on another branch."""
        return replace(self, branch=branch, guidance_scale=self.guidance_scale if guidance_scale is None
                       else float(guidance_scale))

    def embeddings(self, batch: int) -> torch.Tensor:
        """The ``encoder_hidden_states`` for a batch of B inputs: (B, L, D), or (2B, L, D) for
        ``"cfg"`` (unconditional first, then conditional)."""
        if self.branch == "cond":
            return _fit_batch(self.cond, batch, "cond")
        unc = _fit_batch(self.uncond, batch, "uncond")
        if self.branch == "uncond":
            return unc
        return torch.cat([unc, _fit_batch(self.cond, batch, "cond")])

    def unet_kwargs(self, batch: int) -> dict[str, Any]:
        """Extra U-Net keywords for this branch (for ``"cfg"``: unconditional then conditional)."""
        if self.branch == "cond":
            return _fit_kwargs(dict(self.cond_kwargs), batch, "cond_kwargs")
        if self.branch == "uncond":
            return _fit_kwargs(dict(self.uncond_kwargs), batch, "uncond_kwargs")
        if set(self.cond_kwargs) != set(self.uncond_kwargs):
            raise ValueError("cfg needs the same extra U-Net keywords on both branches "
                             f"(cond: {sorted(self.cond_kwargs)}, uncond: {sorted(self.uncond_kwargs)})")
        return _cat_kwargs(_fit_kwargs(dict(self.uncond_kwargs), batch, "uncond_kwargs"),
                           _fit_kwargs(dict(self.cond_kwargs), batch, "cond_kwargs"))

    def meta(self) -> dict[str, Any]:
        """JSON-able description for results' metadata."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "branch": self.branch,
                "guidance_scale": self.guidance_scale if self.branch == "cfg" else None}


def default_guidance(model: Any) -> float:
    """The guidance scale ``guidance_scale=None`` stands for when generating: ``model.guidance``,
    which ``load`` takes from the model's entry in :mod:`diffgeo.models.zoo` (1.0 for unconditional models, models without an unconditional branch and
    models the registry does not know).

    >>> import diffgeo
    >>> default_guidance(diffgeo.load("shapes")), default_guidance(diffgeo.load("digits"))
    (1.0, 2.0)
    """
    if not getattr(model, "is_conditional", False) or not getattr(model, "guidance_ok", True):
        return 1.0

    return float(getattr(model, "guidance", 1.0))


def _check_scale(guidance_scale: Any) -> float | None:
    if guidance_scale is None:
        return None
    return check_float(guidance_scale, "guidance_scale")  # a finite real number; None: the model's default


def _explicit_scale(branch: str, w: float | None) -> float:
    """The scale of an explicitly named branch: cfg needs one; cond/uncond take none (or 1)."""
    if branch == "cfg":
        if w is None:
            raise ValueError("branch='cfg' needs guidance_scale= (e.g. 7.5): the combination is "
                             "q_uncond + w (q_cond - q_uncond)")
        return w
    if w not in (None, 1.0):
        raise ValueError(f"guidance_scale={w} only applies to branch='cfg' (got branch={branch!r}); "
                         "pass branch='cfg' to guide")
    return 1.0


def _check_against(model: Any, c: Cond) -> Cond:
    """An explicit Cond must suit the U-Net: its width and dtype, its extra inputs, an unconditional
    branch when used."""
    cfg = model.unet.config
    dim = getattr(cfg, "encoder_hid_dim", None) or getattr(cfg, "cross_attention_dim", None)
    dim = dim[0] if isinstance(dim, (list, tuple)) else dim
    for what, e in (("cond", c.cond), ("uncond", c.uncond)):
        if e is None:
            continue
        if dim is not None and int(e.shape[-1]) != int(dim):
            raise ValueError(f"{what} has token embeddings of width {e.shape[-1]} (shape {tuple(e.shape)}) but "
                             f"{model.name}'s cross-attention takes width {dim}: (B, L, {dim})")
        if e.dtype != model.dtype:
            raise TypeError(f"{what} has dtype {e.dtype} but {model.name} runs in {model.dtype}: pass "
                            f"{what}.to({model.dtype})")
    kwargs = c.cond_kwargs if c.branch == "cond" else c.uncond_kwargs
    missing = [n for n in model._extra_inputs() if n.split(" ")[0] not in kwargs]
    if missing:
        raise ValueError(f"{model.name}: this U-Net needs {'; '.join(missing)} in cond_kwargs/uncond_kwargs of "
                         "the Cond: diffgeo supports it only when that extra conditioning is supplied")
    if c.branch != "cond" and not model.guidance_ok:
        raise ValueError(f"{model.name} was trained without caption dropout (provenance: caption_dropout=0), so "
                         f"it has no unconditional branch: branch={c.branch!r} / guidance is meaningless; use "
                         "branch='cond' and guidance_scale=1")
    return c


def text_time_ids(model: Any, n: int = 1) -> torch.Tensor:
    """SDXL's ``time_ids`` (n, 6) for a model: original size, crop top-left (0, 0) and target size,
    both sizes the model's image size (H, W), as ``StableDiffusionXLPipeline`` builds them by default.

    >>> import diffgeo
    >>> text_time_ids(diffgeo.load("shapes"), 2).tolist()
    [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0], [32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]
    """
    h, w = (int(s) for s in model.image_shape[1:])
    ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=model.dtype, device=model.device)
    return ids.expand(int(n), 6)


def _added_cond_kwargs(model: Any, pooled: torch.Tensor) -> dict[str, Any]:
    """SDXL's ``added_cond_kwargs`` (text_embeds (N, P), time_ids (N, 6)), checked against the U-Net's add embedding."""
    unet = model.unet
    ids = text_time_ids(model, pooled.shape[0])
    width = int(getattr(unet.config, "addition_time_embed_dim", 0) or 0) * ids.shape[1] + pooled.shape[1]
    linear = getattr(getattr(unet, "add_embedding", None), "linear_1", None)
    if linear is not None and int(linear.in_features) != width:
        raise ValueError(f"{model.name}: the U-Net's added embedding takes {linear.in_features} features but the "
                         f"pooled text embedding ({pooled.shape[1]}) and {ids.shape[1]} time ids give {width} (an "
                         "SDXL refiner with aesthetic scores?); pass cond=Cond(..., cond_kwargs={'added_cond_kwargs': "
                         "{...}}) built with the original pipeline")
    return {"added_cond_kwargs": {"text_embeds": pooled.to(device=model.device, dtype=model.dtype), "time_ids": ids}}


def _encode(model: Any, prompts: list[str], zeros: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """Token embeddings (N, L, D) of prompts and the extra U-Net keywords their text encoder supplies (SDXL:
    ``added_cond_kwargs``); ``zeros``: the all-zero unconditional embeddings of SDXL's empty negative prompt."""
    text = getattr(model, "text", None)
    pooled_of = getattr(text, "pooled", None)
    if zeros:
        emb = torch.zeros(len(prompts), text.max_length, text.hidden_size, device=model.device, dtype=model.dtype)
        return emb, _added_cond_kwargs(model, torch.zeros(len(prompts), text.pooled_dim))
    emb = model.encode_prompt(prompts)
    if pooled_of is None:
        return emb, {}
    return emb, _added_cond_kwargs(model, pooled_of(prompts))


def resolve_cond(model: Any, prompt: str | Sequence[str] | None = None, *,
                 negative_prompt: str | Sequence[str] | None = None, branch: str | None = None,
                 guidance_scale: float | None = None, cond: Cond | Mapping[str, Any] | None = None,
                 batch: int | None = None, default_branch: str | None = None) -> Cond | None:
    """The conditioning a call of the U-Net maps uses: the one resolver behind ``Model.eps`` /
    ``Model.h`` / ``Model.conditioning``, sampling, the pullback maps and h statistics.

    Returns a checked :class:`Cond` (None for unconditional models); its :meth:`Cond.meta` is
    what results record. prompt: a string or one per sample (None: the empty prompt ``""``);
    negative_prompt: the unconditional branch's prompt (None: ``""``); cond: precomputed
    embeddings instead of prompts (a Cond or ``{"encoder_hidden_states": e}``), checked against
    the U-Net; batch: B to check prompt lists against. SDXL models' prompts also fill the Cond's
    ``cond_kwargs`` / ``uncond_kwargs`` with ``added_cond_kwargs`` (see the module docstring).

    The branch is ``branch`` if given, else the branch of a given ``cond``, else
    ``default_branch`` (the geometry functions pass ``"cond"``), else it follows the guidance
    rule of generation: ``guidance_scale=None`` means the model's own default
    (:func:`default_guidance`, from :mod:`diffgeo.models.zoo`), and the branch is ``"cfg"`` when that
    scale is not 1, else ``"cond"``. A branch named explicitly takes a scale only if it is
    ``"cfg"`` (then it must have one).

    >>> import diffgeo
    >>> model = diffgeo.load("digits")
    >>> c = resolve_cond(model, "a handwritten 3")           # generation: the model's default guidance
    >>> c.branch, c.guidance_scale, c.prompt
    ('cfg', 2.0, ['a handwritten 3'])
    >>> resolve_cond(model, "a handwritten 3", default_branch="cond").branch   # geometry
    'cond'
    >>> resolve_cond(model, cond=c.with_branch("cfg", 3.0), default_branch="cond").meta()["guidance_scale"]
    3.0
    >>> resolve_cond(diffgeo.load("shapes")) is None         # unconditional models take no conditioning
    True
    """
    if branch is not None:
        _check_branch(branch)
    w = _check_scale(guidance_scale)
    name = getattr(model, "name", "the model")
    c = as_cond(cond)
    if c is not None:
        if prompt is not None or negative_prompt is not None:
            raise ValueError("pass either prompt=/negative_prompt= or cond=, not both")
        if not model.is_conditional:
            raise ValueError(f"{name} is unconditional and takes no conditioning; drop prompt/cond")
        if branch is not None:
            c = c.with_branch(branch, _explicit_scale(branch, w if w is not None or c.branch != "cfg"
                                                       else c.guidance_scale))
        elif w is not None:
            c = c.with_branch("cfg" if w != 1 else "cond", w)
        return _check_against(model, c)
    if not model.is_conditional:
        if prompt is not None or negative_prompt is not None:
            raise ValueError(f"{name} is unconditional ({type(model.unet).__name__}): it takes no prompt; "
                             "drop prompt=/negative_prompt= (or load a text-conditioned model)")
        if (branch or default_branch or "cond") != "cond" or w not in (None, 1.0):
            raise ValueError(f"{name} is unconditional: guidance_scale={guidance_scale} needs a conditional and an "
                             f"unconditional branch (branch={branch!r}); use guidance_scale=1 (or a text model) "
                             "and the default branch")
        return None
    branch = branch or default_branch
    if branch is None:  # generation: the branch follows the guidance scale
        w = default_guidance(model) if w is None else w
        branch = "cfg" if w != 1 else "cond"
    else:
        w = _explicit_scale(branch, w)
    if branch != "cond" and not model.guidance_ok:
        raise ValueError(f"{name} was trained without caption dropout (provenance: caption_dropout=0), so it has no "
                         f"unconditional branch: branch={branch!r} / guidance is meaningless; use branch='cond' "
                         "and guidance_scale=1")
    single = isinstance(prompt, str) or prompt is None
    prompts = normalise_prompts("" if prompt is None else prompt, None if single else batch)
    embedded, kw = _encode(model, prompts) if branch != "uncond" else (None, {})
    uncond = negatives = None
    ukw: dict[str, Any] = {}
    if branch != "cond":
        neg_single = isinstance(negative_prompt, str) or negative_prompt is None
        negatives = normalise_prompts("" if negative_prompt is None else negative_prompt,
                                      None if neg_single else batch, "negative_prompt")
        zeros = negative_prompt is None and bool(getattr(model.text, "zero_empty_negative", False))
        uncond, ukw = _encode(model, negatives, zeros=zeros)
        if embedded is None:
            embedded, kw = uncond, ukw  # placeholder: the uncond branch never reads it
    elif negative_prompt is not None:
        neg_single = isinstance(negative_prompt, str)
        normalise_prompts(negative_prompt, None if neg_single else batch, "negative_prompt")  # still checked
        log.warning("negative_prompt=%r is unused: %s runs on the conditional branch only (guidance_scale %s); "
                    "pass guidance_scale != 1 (or branch='cfg'/'uncond') for it to count", negative_prompt, name, w)
    return Cond(cond=embedded, uncond=uncond, branch=branch, guidance_scale=w, cond_kwargs=kw, uncond_kwargs=ukw,
                prompt=prompts, negative_prompt=negatives)


def as_cond(cond: Cond | Mapping[str, Any] | None) -> Cond | None:
    """Accept a :class:`Cond`, a plain dict ``{"encoder_hidden_states": e, ...}`` (the conditional
    branch, other keys passed to the U-Net) or None.

    >>> c = as_cond({"encoder_hidden_states": torch.zeros(1, 4, 8)})
    >>> c.branch, c.cond.shape, as_cond(None)
    ('cond', torch.Size([1, 4, 8]), None)
    """
    if cond is None or isinstance(cond, Cond):
        return cond
    if isinstance(cond, Mapping):
        if not cond:
            return None
        if "encoder_hidden_states" not in cond:
            raise ValueError(f"a conditioning dict needs 'encoder_hidden_states' (B, L, D); got keys {sorted(cond)}")
        rest = {k: v for k, v in cond.items() if k != "encoder_hidden_states"}
        return Cond(cond=cond["encoder_hidden_states"], cond_kwargs=rest)
    raise TypeError(f"cond must be a diffgeo.models.conditioning.Cond, a dict with 'encoder_hidden_states', or None; "
                    f"got {type(cond).__name__}")


def normalise_prompts(prompt: str | Sequence[str], batch: int | None = None, what: str = "prompt") -> list[str]:
    """A prompt (str, broadcast to ``batch``) or one per sample, as a list of strings.

    >>> normalise_prompts("a red circle", 2)
    ['a red circle', 'a red circle']
    """
    if isinstance(prompt, str):
        return [prompt] * (batch or 1)
    if not isinstance(prompt, Sequence) or not all(isinstance(p, str) for p in prompt):
        raise TypeError(f"{what} must be a string or a list of strings, got {type(prompt).__name__}")
    prompts = list(prompt)
    if not prompts:
        raise ValueError(f"{what} is an empty list: give a string (broadcast to the batch) or one string per "
                         "sample (use '' for the empty, unconditional prompt)")
    if batch is not None and len(prompts) != batch:
        if len(prompts) == 1:
            return prompts * batch
        raise ValueError(f"{what} has {len(prompts)} entries for a batch of {batch}: give one string or {batch}")
    return prompts
