"""Objectives for learned Asyrp directions: the directional signal ``(x_edit, x_orig) -> (B,)`` that
:func:`~diffgeo.editing.learned.train_direction` minimises.

- :func:`probe_objective`: cross-entropy of the model's attribute reader (:mod:`diffgeo.readers`, the
  shapes probe) on the edited x0 prediction towards a target class of one factor.
- :func:`clip_objective`: the paper's directional CLIP loss
  ``1 - cos(E_img(x_edit) - E_img(x_orig), E_txt(target) - E_txt(source))`` with E the
  unit-normalised CLIP embeddings (as in StyleGAN-NADA, where the loss comes from), for a user's
  transformers ``CLIPModel`` (given, or loaded from a hub id or folder; never fetched in tests).

>>> import torch
>>> e = torch.eye(3)
>>> clip_directional_loss(e[:1], e[1:2], e[:1], e[1:2]).tolist()   # edit along the text direction
[0.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from diffgeo.core.checks import check_int
from diffgeo.data.shapes import CONTINUOUS as REGRESSED
from diffgeo.data.shapes import RANGES
from diffgeo.editing.factors import BINNED
from diffgeo.models.zoo import entry
from diffgeo.readers import get_reader

__all__ = ["ProbeObjective", "ClipObjective", "probe_objective", "clip_objective", "clip_directional_loss",
           "CLIP_MEAN", "CLIP_STD"]

#: CLIP's image normalisation (OpenAI), used when a processor does not give its own.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _reader_logits(reader: Any) -> tuple[Callable[[torch.Tensor], dict[str, torch.Tensor]], tuple[str, ...]]:
    """Differentiable class scores of a reader, ``images -> {factor: (B, K)}``, and the factors they
    cover: the reader's ``logits`` method (factors: its ``logit_factors``, else all its classes)."""
    if callable(getattr(reader, "logits", None)):
        return reader.logits, tuple(getattr(reader, "logit_factors", reader.classes))
    raise ValueError(f"the {getattr(reader, 'name', type(reader).__name__)} reader gives no differentiable class "
                     "scores (no logits method), so it cannot train a direction; use "
                     "clip_objective with a CLIP model instead")


@dataclass(frozen=True)
class ProbeObjective:
    """Cross-entropy of the reader's read of ``factor`` on the edited images towards ``target``,
    plus ``keep`` times the terms that keep the other factors: the cross-entropy of every other
    factor the reader scores towards the original's read of it, and (readers with a ``probe`` that
    also regresses continuous factors, the shapes probe: size, x, y, background) the smooth-L1
    distance between the edited and the original regression (the edited factor's own regression,
    size, excepted when it is the factor).

    Called as ``objective(x_edit, x_orig) -> (B,)`` with images (B, C, H, W) in [-1, 1]."""

    reader: Any
    factor: str
    target: int
    keep: float = 0.0

    def __call__(self, x_edit: torch.Tensor, x_orig: torch.Tensor) -> torch.Tensor:
        scores = _reader_logits(self.reader)[0]
        logits = scores(x_edit.float())
        if self.factor in logits:
            loss = F.cross_entropy(logits[self.factor], torch.full((len(x_edit),), self.target, dtype=torch.long,
                                                                   device=logits[self.factor].device),
                                   reduction="none")
        else:  # a binned continuous factor of the probe: pull its regression to the target bin's centre
            col = REGRESSED.index(self.factor)
            edges = [0.0, *[(e - RANGES[self.factor][0]) / (RANGES[self.factor][1] - RANGES[self.factor][0])
                            for e in BINNED[self.factor][1]], 1.0]
            centre = (edges[self.target] + edges[self.target + 1]) / 2
            loss = 4.0 * (self.reader.probe(x_edit.float())[-1][:, col] - centre).abs()
        if self.keep == 0.0:
            return loss
        with torch.no_grad():
            orig = scores(x_orig.float())
        for f, lg in logits.items():
            if f != self.factor:
                loss = loss + self.keep * F.cross_entropy(lg, orig[f].argmax(1), reduction="none")
        probe = getattr(self.reader, "probe", None)
        if isinstance(probe, torch.nn.Module):
            r_edit = probe(x_edit.float())[-1]
            with torch.no_grad():
                r_orig = probe(x_orig.float())[-1]
            # the shapes probe regresses (size, x, y, background) in [0, 1] units; a factor keeps its own
            cols = [i for i, name in enumerate(REGRESSED) if name != self.factor]
            d = F.smooth_l1_loss(r_edit[:, cols], r_orig[:, cols], beta=0.02, reduction="none").sum(1)
            loss = loss + self.keep * 20 * d
        return loss

    def describe(self) -> dict[str, Any]:
        names = self.reader.classes[self.factor] if self.factor in self.reader.classes else BINNED[self.factor][0]
        out = {"objective": "probe", "reader": self.reader.name, "factor": self.factor,
               "target": str(names[self.target])}
        if self.keep:
            out["keep"] = self.keep
        return out


def probe_objective(model: Any, factor: str = "colour", target: str | int = "blue", *,
                    reader: Any = None, keep: float | bool = 0.0) -> ProbeObjective:
    """The attribute-probe objective for ``model``'s reader (:mod:`diffgeo.models.zoo` names it; or
    ``reader=``): push the read of ``factor`` towards the class ``target`` (name or index).
    ``keep`` (a weight; True = 1): also keep the original's other factors (see :class:`ProbeObjective`).
    Readers with a regressing ``probe`` (shapes) also train the binned continuous factors of
    :data:`~diffgeo.editing.factors.BINNED` (size, background, x): L1 of the regression to the
    target bin's centre.

    >>> import diffgeo
    >>> probe_objective(diffgeo.load("shapes"), "colour", "blue", keep=True).describe()["keep"]
    1.0

    >>> import diffgeo
    >>> probe_objective(diffgeo.load("shapes"), "shape", "circle").describe()["target"]
    'circle'
    """
    if reader is None:

        name = entry(model).reader
        if name is None:
            raise ValueError(f"no reader is registered for {getattr(model, 'name', model)!r} in diffgeo.models.zoo: pass "
                             "reader= or use clip_objective")
        reader = get_reader(name)
    classes = dict(reader.classes)
    regressed = isinstance(getattr(reader, "probe", None), torch.nn.Module)
    if regressed:  # the shapes probe also regresses size, x, y, background: binned, they train too
        classes.update({f: v[0] for f, v in BINNED.items() if f not in classes})
    if factor not in classes:
        raise ValueError(f"factor={factor!r} is not read by the {reader.name} reader: known factors are "
                         f"{', '.join(classes)}")
    trainable = _reader_logits(reader)[1]
    if factor not in trainable and not (regressed and factor in BINNED):
        raise ValueError(f"the {reader.name} reader reads {factor!r} without class scores to train on: trainable "
                         f"factors are {', '.join(trainable)}")
    names = [str(c) for c in classes[factor]]
    if isinstance(target, str):
        if target not in names:
            raise ValueError(f"target={target!r} is not a class of {factor!r}: known classes are {', '.join(names)}")
        index = names.index(target)
    else:
        index = check_int(target, "target")
        if not 0 <= index < len(names):
            raise ValueError(f"target={index} is not a class index of {factor!r}: give 0..{len(names) - 1} or a name "
                             f"({', '.join(names)})")
    keep = float(keep)
    if not keep >= 0.0:
        raise ValueError(f"keep must be a weight >= 0 (or True/False), got {keep!r}")
    return ProbeObjective(reader, factor, index, keep)


def _features(out: Any) -> torch.Tensor:
    """CLIP ``get_*_features`` output as a tensor (transformers >= 5 returns an output object)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def clip_directional_loss(img_edit: torch.Tensor, img_orig: torch.Tensor, txt_target: torch.Tensor,
                          txt_source: torch.Tensor) -> torch.Tensor:
    """``1 - cos(n(img_edit) - n(img_orig), n(txt_target) - n(txt_source))`` per row, n = unit
    normalisation: img_* (B, D) CLIP image embeddings, txt_* (D,) or (1, D) text embeddings.

    >>> e = torch.eye(3)
    >>> clip_directional_loss(e[:1], e[1:2], e[0], e[1]).tolist()
    [0.0]
    """
    n = lambda v: v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # noqa: E731
    d_img = n(img_edit) - n(img_orig)
    d_txt = (n(txt_target) - n(txt_source)).reshape(1, -1)
    return 1.0 - F.cosine_similarity(d_img, d_txt.expand_as(d_img), dim=-1, eps=1e-12)


@dataclass(frozen=True)
class ClipObjective:
    """The directional CLIP loss (:func:`clip_directional_loss`) of a transformers ``CLIPModel``.

    Images (B, C, H, W) in [-1, 1] are mapped to [0, 1], repeated to 3 channels if they have one,
    resized (bicubic) to CLIP's input size and normalised with the processor's mean and std."""

    clip: Any
    source: str
    target: str
    text_direction: tuple[torch.Tensor, torch.Tensor]  # (E_txt(target), E_txt(source)), each (D,)
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    name: str = "clip"

    def pixel_values(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1] -> CLIP pixel values (B, 3, S, S)."""
        x = (x.float().clamp(-1, 1) + 1) / 2
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        size = int(self.clip.config.vision_config.image_size)
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def image_embeds(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings (B, D) of images x (B, C, H, W) in [-1, 1] (not normalised)."""
        p = next(self.clip.parameters())
        return _features(self.clip.get_image_features(pixel_values=self.pixel_values(x).to(p.device, p.dtype)))

    def __call__(self, x_edit: torch.Tensor, x_orig: torch.Tensor) -> torch.Tensor:
        target, source = self.text_direction
        return clip_directional_loss(self.image_embeds(x_edit), self.image_embeds(x_orig).detach(),
                                     target.to(x_edit.device), source.to(x_edit.device))

    def describe(self) -> dict[str, Any]:
        return {"objective": "clip", "clip": self.name, "source": self.source, "target": self.target}


def clip_objective(clip: Any, source: str, target: str, *, processor: Any = None,
                   tokenizer: Any = None) -> ClipObjective:
    """The directional CLIP objective from ``source`` text to ``target`` text (e.g. "a photo of a
    red shape" -> "a photo of a blue shape").

    clip: a transformers ``CLIPModel``, or a hub id / local folder loaded with
    ``CLIPModel.from_pretrained`` and ``CLIPProcessor.from_pretrained`` (nothing here downloads
    by itself: a hub id needs network or a filled cache). processor: a ``CLIPProcessor`` (gives
    the tokenizer and the image mean/std); or tokenizer: any ``tokenizer(texts, padding=True,
    return_tensors="pt")`` (then OpenAI's mean/std).

    >>> from transformers import CLIPConfig, CLIPModel
    >>> tower = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
    >>> clip = CLIPModel(CLIPConfig(text_config=dict(vocab_size=30, max_position_embeddings=8, **tower),
    ...                             vision_config=dict(image_size=32, patch_size=8, **tower), projection_dim=16))
    >>> tok = lambda texts, **kw: {"input_ids": torch.tensor([[0, 5 + len(t), 2] for t in texts])}
    >>> clip_objective(clip.eval(), "red", "blue", tokenizer=tok)(torch.zeros(2, 3, 32, 32), torch.ones(2, 3, 32, 32)).shape
    torch.Size([2])
    """
    for what, text in (("source", source), ("target", target)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{what} must be a non-empty text, got {text!r}")
    if source == target:
        raise ValueError("source and target texts are equal: the text direction would be zero")
    name = "CLIPModel"
    if isinstance(clip, (str, Path)):
        from transformers import CLIPModel, CLIPProcessor

        name = str(clip)
        model = CLIPModel.from_pretrained(name)
        if processor is None and tokenizer is None:
            processor = CLIPProcessor.from_pretrained(name)
        clip = model
    if not (hasattr(clip, "get_image_features") and hasattr(clip, "get_text_features")):
        raise TypeError("clip must be a transformers CLIPModel (or a hub id / folder of one), got "
                        f"{type(clip).__name__}")
    tok = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
    if tok is None:
        raise ValueError("clip_objective needs processor= (a CLIPProcessor) or tokenizer= to encode the texts")
    image_proc = getattr(processor, "image_processor", None)
    mean = tuple(float(v) for v in getattr(image_proc, "image_mean", None) or CLIP_MEAN)
    std = tuple(float(v) for v in getattr(image_proc, "image_std", None) or CLIP_STD)
    clip = clip.eval()
    p = next(clip.parameters())
    with torch.no_grad():
        enc = tok([target, source], padding=True, return_tensors="pt")
        enc = {k: v.to(p.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        txt = _features(clip.get_text_features(**enc)).float().cpu()
    return ClipObjective(clip, source, target, (txt[0], txt[1]), mean, std, name)
