"""Do guided samples show what the prompt says? Measured alignment of the embedded text models.

- ``digits``: a scikit-learn classifier trained on the real 8x8 UCI digits reads the digit of
  each guided sample (mapped back to the classifier's 8x8, 0..16 input space by
  :func:`to_classifier_input`); :func:`digit_agreement` is the fraction whose reading equals the
  prompted digit, per digit and overall, with the confusion matrix.
- ``shapes-text``: the attribute probe (:mod:`diffgeo.probe`) reads shape and colour back;
  :func:`text_alignment` is the fraction that agrees with the factors the caption names.

Prompts use the data sets' own phrasings (:func:`diffgeo.data.digits.digit_captions`,
:mod:`diffgeo.data.captions`), balanced over classes. Noise is drawn on the CPU from ``seed``
for all samples at once, so the same seed gives the same x_T at every guidance scale (the
sweeps are paired comparisons) and for every batch size.

Anything with a method ``sample_prompts(prompts, *, guidance_scale, steps, seed) -> images``
can stand in for a :class:`~diffgeo.models.Model` (e.g. a renderer that draws the prompted scene
exactly: an upper bound that measures the reader, not the generator).

``python -m diffgeo.alignment digits`` writes ``figures/digits_prompts.png`` (one row per digit)
and ``figures/digits_alignment.json`` (agreement per guidance scale and per digit).

>>> import diffgeo
>>> result = digit_agreement(diffgeo.load("digits"), n=20, steps=2, progress=False)
>>> result.n, len(result.per_digit), len(result.confusion), sum(map(sum, result.confusion))
(20, 10, 10, 20)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import digits as digits_data
from .data.captions import canonical_caption, make_captions
from .data.shapes import COLOURS, RESOLUTION as SHAPES_RESOLUTION, SHAPES, sample_factors
from .io import atomic_path
from .models import Model

__all__ = ["DigitClassifier", "DigitAgreement", "TextAlignment", "PromptSampler", "digit_classifier",
           "to_classifier_input", "digit_prompts", "digit_agreement", "digit_agreement_sweep", "shapes_prompts",
           "text_alignment", "text_alignment_sweep", "generate", "prompt_grid", "save_prompt_grid",
           "default_prompts", "GUIDANCE", "DEFAULT_GUIDANCE", "DEFAULT_STEPS", "GUIDANCE_SWEEP"]

log = logging.getLogger(__name__)

#: Guidance scale of each embedded text model's headline numbers and prompt grids (raw eps, as
#: diffusers samples by default), chosen from its sweep (``python -m diffgeo.alignment NAME``, seed 0,
#: 20 steps; figures/NAME_alignment.json).
#: digits (500 samples, the shipped 3000-step model): agreement 0.976 / 0.998 / 1.000 / 0.916 /
#: 0.494 / 0.046 at w = 1 / 1.5 / 2 / 3 / 4 / 7.
#: Above 3 it collapses: sampling clips x0 (the scheduler's ``clip_sample``) but keeps the guided
#: eps in the direction term. With ``use_clipped_model_output=True`` (eps recomputed from the
#: clipped x0) it is 0.976 / 1.000 / 1.000 / 1.000 / 1.000 / 1.000. tests/test_alignment.py checks
#: both on another seed.
#: shapes-text (256 samples, the shipped 3000-step model), shape / colour agreement with raw eps:
#: 0.90/0.91, 0.97/1.00, 0.96/1.00, 0.72/0.97, 0.56/0.65, 0.68/0.03 at w = 1 / 1.5 / 2 / 3 / 4 / 7
#: (valid scenes 65%, 69%, 58%, 11%, 2%, 1%); with clipped eps it rises with w to 0.97/1.00 at 7
#: but only 9-15% of the samples are valid scenes. 1.5 is the best on shape, both and validity.
GUIDANCE = {"digits": 2.0, "shapes-text": 1.5}
#: Guidance scale of generate and prompt_grid when none is given.
DEFAULT_GUIDANCE = 2.0
#: DDIM steps for the alignment measurements.
DEFAULT_STEPS = 20
GUIDANCE_SWEEP = (1.0, 1.5, 2.0, 3.0, 4.0, 7.0)
CLASSIFIER_SEED = 0
CLASSIFIER_TEST_FRACTION = 0.25
SHAPES_FACTORS = ("shape", "colour")
_DIGIT_SHAPE = (1, digits_data.RESOLUTION, digits_data.RESOLUTION)
_SHAPES_SHAPE = (3, SHAPES_RESOLUTION, SHAPES_RESOLUTION)


# -- generation -------------------------------------------------------------------------------
@runtime_checkable
class PromptSampler(Protocol):
    """A stand-in for a Model: images (N, C, H, W) in [-1, 1] for N prompts."""

    def sample_prompts(self, prompts: list[str], *, guidance_scale: float, steps: int, seed: int) -> torch.Tensor:
        ...


def _check_model(model: Model | PromptSampler, image_shape: tuple[int, ...] | None, what: str) -> None:
    """A text-conditioned Model making images of ``image_shape`` (None: any), or a PromptSampler."""
    if isinstance(model, Model):
        if not model.is_conditional:
            raise ValueError(f"{what} needs a text-conditioned model; {model.name} is unconditional "
                             f"({type(model.unet).__name__})")
        if image_shape is not None and tuple(model.image_shape) != image_shape:
            raise ValueError(f"{what} needs images of shape {image_shape}; {model.name} makes "
                             f"{tuple(model.image_shape)}")
    elif not isinstance(model, PromptSampler):
        raise TypeError(f"{what} takes a diffgeo Model or an object with sample_prompts(prompts, *, guidance_scale, "
                        f"steps, seed); got {type(model).__name__}")


def generate(model: Model | PromptSampler, prompts: Sequence[str], *, guidance_scale: float = DEFAULT_GUIDANCE,
             steps: int = DEFAULT_STEPS, seed: int = 0, batch_size: int = 250, use_clipped_model_output: bool = False,
             progress: bool = True) -> torch.Tensor:
    """One guided DDIM sample per prompt: images (N, *image_shape) in [-1, 1], on the CPU.

    x_T for all N samples is drawn at once from ``seed`` (so sample i has the same x_T whatever
    the batch size and the guidance scale); the negative prompt is ``""``.
    ``use_clipped_model_output``: see :func:`diffgeo.sample` (a PromptSampler ignores it).

    >>> import diffgeo
    >>> generate(diffgeo.load("digits"), ["a handwritten 3", "seven"], steps=2, progress=False).shape
    torch.Size([2, 1, 16, 16])
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: give at least one prompt")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    _check_model(model, None, "generate")
    if not isinstance(model, Model):
        images = model.sample_prompts(prompts, guidance_scale=float(guidance_scale), steps=steps, seed=seed)
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] != len(prompts):
            raise ValueError(f"{type(model).__name__}.sample_prompts must return images (N={len(prompts)}, C, H, W), "
                             f"got {getattr(images, 'shape', type(images).__name__)}")
        return images.detach().float().cpu()
    from .sampling import sample

    noise = torch.randn((len(prompts), *model.x_shape), generator=torch.Generator().manual_seed(seed))
    out = []
    with torch.no_grad():
        for start in tqdm(range(0, len(prompts), batch_size), desc=f"sampling {model.name}", disable=not progress):
            chunk = noise[start:start + batch_size].to(device=model.device, dtype=model.dtype)
            traj = sample(model, noise=chunk, prompt=prompts[start:start + batch_size], guidance_scale=guidance_scale,
                          steps=steps, use_clipped_model_output=use_clipped_model_output, progress=False)
            out.append(model.decode(traj.result).float().cpu())
    return torch.cat(out).clamp(-1, 1)


# -- the digit classifier -------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _pool_of_upsampling() -> torch.Tensor:
    """M (64, 64) float64: row i is the 2x2-average-pooled 16x16 bilinear upsampling of the i-th 8x8
    basis image, the same ``F.interpolate`` call as :func:`diffgeo.data.digits.load_digits_images`."""
    basis = torch.eye(64, dtype=torch.float64).view(64, 1, 8, 8)
    up = F.interpolate(basis, size=_DIGIT_SHAPE[1:], mode="bilinear", align_corners=False)
    return F.avg_pool2d(up, 2).reshape(64, 64)


def to_classifier_input(images: torch.Tensor) -> np.ndarray:
    """Map 16x16 digit images (N, 1, 16, 16) in [-1, 1] to the classifier's input (N, 64) in [0, 16].

    The exact inverse of the data module's preprocessing (``x / 8 - 1``, bilinear 8 -> 16 with
    ``align_corners=False``): 2x2 average pooling, then undoing the blur that pooling leaves
    (pooling the bilinear upsampling is not the identity: per axis it mixes each pixel with its
    neighbours by 1/8, 3/4, 1/8, which is invertible; the 64x64 system is solved exactly), then
    ``8 (x + 1)`` and clipping to sklearn's 0..16. Real upsampled digits map back to the originals
    to float precision; generated samples map to the 8x8 image whose pooled upsampling equals
    their pooling.

    >>> from diffgeo.data.digits import load_digits_images
    >>> x = to_classifier_input(load_digits_images().images[:3])
    >>> x.shape, float(x.min()), float(x.max())
    ((3, 64), 0.0, 16.0)
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != _DIGIT_SHAPE:
        raise ValueError(f"images must be a tensor (N, 1, 16, 16) in [-1, 1] (digits model samples), got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    pooled = F.avg_pool2d(images.detach().cpu().double(), 2).reshape(images.shape[0], 64)
    # pooled = x8 @ M  =>  x8 = pooled @ M^-1, i.e. solve M^T x8^T = pooled^T
    x8 = torch.linalg.solve(_pool_of_upsampling().T, pooled.T).T
    return (8.0 * (x8 + 1.0)).clamp(0.0, 16.0).numpy()


@dataclass(frozen=True)
class DigitClassifier:
    """An RBF support-vector classifier of the real 8x8 digits (inputs (N, 64) in 0..16).

    accuracy: on the held-out ``CLASSIFIER_TEST_FRACTION`` of the 1,797 digits (a stratified
    split seeded by ``CLASSIFIER_SEED``); n_train, n_test: split sizes.
    """

    estimator: Any
    accuracy: float
    n_train: int
    n_test: int

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted digits (N,) int64 of 16x16 images (N, 1, 16, 16) in [-1, 1]."""
        return torch.as_tensor(self.estimator.predict(to_classifier_input(images)), dtype=torch.long)


@lru_cache(maxsize=1)
def digit_classifier() -> DigitClassifier:
    """The digit reader (cached; trains in well under a second).

    ``SVC(C=10, gamma=0.001)`` on 75% of sklearn's ``load_digits`` (the standard RBF setting for
    these 0..16 features), scored on the stratified 25% it never saw.

    >>> clf = digit_classifier()
    >>> clf.accuracy > 0.95, clf.n_train + clf.n_test
    (True, 1797)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    data = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(data.data, data.target, test_size=CLASSIFIER_TEST_FRACTION,
                                              stratify=data.target, random_state=CLASSIFIER_SEED)
    estimator = SVC(C=10.0, gamma=0.001).fit(x_tr, y_tr)
    return DigitClassifier(estimator, float(estimator.score(x_te, y_te)), len(y_tr), len(y_te))


# -- digits agreement --------------------------------------------------------------------------------
def digit_prompts(n: int, *, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """n prompts balanced over the ten digits (labels ``i % 10``), each in one of the training
    phrasings drawn from ``seed``: labels (n,) int64 and the prompts.

    >>> digit_prompts(3, seed=0)
    (tensor([0, 1, 2]), ['the numeral 0', 'the numeral 1', 'a hand-drawn 2'])
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    labels = torch.arange(n) % 10
    return labels, digits_data.digit_captions(labels, seed=seed)


@dataclass(frozen=True)
class DigitAgreement:
    """How often the classifier reads the prompted digit in n guided samples.

    overall: fraction of all n; per_digit: 10 fractions (prompted digit d); confusion: 10x10
    counts, ``confusion[prompted][read]``; classifier_accuracy: the reader's own held-out accuracy.
    """

    guidance_scale: float
    steps: int
    n: int
    seed: int
    overall: float
    per_digit: tuple[float, ...]
    confusion: tuple[tuple[int, ...], ...]
    classifier_accuracy: float
    use_clipped_model_output: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _agreement_from_predictions(labels: torch.Tensor, predicted: torch.Tensor, classes: int) -> tuple[
        float, tuple[float, ...], tuple[tuple[int, ...], ...]]:
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((labels.long(), predicted.long()), torch.ones_like(labels, dtype=torch.long), accumulate=True)
    totals = confusion.sum(1)
    per_class = tuple(int(confusion[c, c]) / int(totals[c]) if totals[c] else math.nan for c in range(classes))
    overall = float((labels == predicted).double().mean())
    return overall, per_class, tuple(tuple(int(v) for v in row) for row in confusion)


def digit_agreement(model: Model | PromptSampler, n: int = 500, *, guidance_scale: float = GUIDANCE["digits"],
                    steps: int = DEFAULT_STEPS, seed: int = 0, batch_size: int = 250,
                    use_clipped_model_output: bool = False, classifier: DigitClassifier | None = None,
                    progress: bool = True) -> DigitAgreement:
    """Sample n digits prompted with :func:`digit_prompts` and read them with :func:`digit_classifier`.

    model: the ``digits`` model (images (N, 1, 16, 16)) or a :class:`PromptSampler`.

    >>> import diffgeo
    >>> digit_agreement(diffgeo.load("digits"), n=10, steps=2, progress=False).guidance_scale
    2.0
    """
    _check_model(model, _DIGIT_SHAPE, "digit_agreement")
    clf = classifier or digit_classifier()
    labels, prompts = digit_prompts(n, seed=seed)
    images = generate(model, prompts, guidance_scale=guidance_scale, steps=steps, seed=seed, batch_size=batch_size,
                      use_clipped_model_output=use_clipped_model_output, progress=progress)
    overall, per_digit, confusion = _agreement_from_predictions(labels, clf.predict(images), 10)
    return DigitAgreement(float(guidance_scale), steps, n, seed, overall, per_digit, confusion, clf.accuracy,
                          bool(use_clipped_model_output))


def digit_agreement_sweep(model: Model | PromptSampler, scales: Sequence[float] = GUIDANCE_SWEEP,
                          **kwargs: Any) -> list[DigitAgreement]:
    """:func:`digit_agreement` at each guidance scale, same prompts and x_T (keywords passed on).

    >>> import diffgeo
    >>> [r.guidance_scale for r in digit_agreement_sweep(diffgeo.load("digits"), (1, 3), n=10, steps=2,
    ...                                                  progress=False)]
    [1.0, 3.0]
    """
    return [digit_agreement(model, guidance_scale=float(w), **kwargs) for w in scales]


# -- shapes-text alignment ------------------------------------------------------------------------------
def shapes_prompts(n: int, *, seed: int = 0, phrasing: str = "canonical") -> tuple[Any, list[str], dict]:
    """n shapes prompts, shape and colour balanced over the 18 combinations (other factors random).

    phrasing: ``"canonical"`` ("a red circle", both factors named) or ``"captions"`` (the
    training captions' random phrasings, which name some factors only). Returns the factors,
    the prompts and ``named``: factor -> (n,) bool, whether each prompt names it.

    >>> factors, prompts, named = shapes_prompts(4)
    >>> prompts, named["colour"].tolist()
    (['a red circle', 'a red square', 'a red triangle', 'a yellow circle'], [True, True, True, True])
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    i = torch.arange(n)
    factors = sample_factors(n, seed=seed).replace(shape=i % len(SHAPES), colour=(i // len(SHAPES)) % len(COLOURS))
    if phrasing == "canonical":
        return factors, canonical_caption(factors), {k: torch.ones(n, dtype=torch.bool) for k in SHAPES_FACTORS}
    if phrasing == "captions":
        caps = make_captions(factors, seed=seed, dropout=0.0)
        return factors, caps.texts, {k: caps.named[k] for k in SHAPES_FACTORS}
    raise ValueError(f"phrasing must be 'canonical' or 'captions', got {phrasing!r}")


@dataclass(frozen=True)
class TextAlignment:
    """How often the attribute probe reads the factors the prompt names in n guided samples.

    agreement: factor (``shape``, ``colour``) -> fraction of the prompts naming it whose sample
    the probe reads as named, and ``both`` (prompts naming both, both right); per_class:
    factor -> class name -> fraction; named: factor -> how many prompts named it; valid_rate:
    fraction of samples the probe calls valid scenes (:func:`diffgeo.probe.validity`).
    """

    guidance_scale: float
    steps: int
    n: int
    seed: int
    phrasing: str
    agreement: dict
    per_class: dict
    named: dict
    valid_rate: float
    use_clipped_model_output: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _fraction(hits: torch.Tensor, among: torch.Tensor) -> float:
    """count(hits) / count(among) for (n,) bool masks (hits within among); NaN when among is empty."""
    return int(hits.sum()) / int(among.sum()) if bool(among.any()) else math.nan


def text_alignment(model: Model | PromptSampler, n: int = 256, *, guidance_scale: float = GUIDANCE["shapes-text"],
                   steps: int = DEFAULT_STEPS, seed: int = 0, phrasing: str = "canonical", batch_size: int = 128,
                   use_clipped_model_output: bool = False, progress: bool = True) -> TextAlignment:
    """Sample n scenes prompted with :func:`shapes_prompts` and read shape and colour with the probe.

    model: the ``shapes-text`` model (images (N, 3, 32, 32)) or a :class:`PromptSampler`.

    >>> from diffgeo.data.captions import parse_caption
    >>> from diffgeo.data.shapes import render, sample_factors
    >>> class Perfect:  # draws exactly the shape and colour the prompt names
    ...     def sample_prompts(self, prompts, *, guidance_scale, steps, seed):
    ...         named = [parse_caption(p) for p in prompts]
    ...         f = sample_factors(len(prompts), seed=seed)
    ...         return render(f.replace(shape=torch.tensor([d["shape"] for d in named]),
    ...                                 colour=torch.tensor([d["colour"] for d in named])))
    >>> text_alignment(Perfect(), n=18, progress=False).agreement
    {'shape': 1.0, 'colour': 1.0, 'both': 1.0}
    """
    from .probe import validity

    _check_model(model, _SHAPES_SHAPE, "text_alignment")
    factors, prompts, named = shapes_prompts(n, seed=seed, phrasing=phrasing)
    images = generate(model, prompts, guidance_scale=guidance_scale, steps=steps, seed=seed, batch_size=batch_size,
                      use_clipped_model_output=use_clipped_model_output, progress=progress)
    if tuple(images.shape[1:]) != _SHAPES_SHAPE:
        raise ValueError(f"text_alignment needs images (N, 3, 32, 32), got {tuple(images.shape)}")
    val = validity(images)
    agreement, per_class, counts = {}, {}, {}
    right = {}
    for key, classes in (("shape", SHAPES), ("colour", COLOURS)):
        truth, read, mask = getattr(factors, key), getattr(val.factors, key), named[key]
        right[key] = (truth == read) & mask
        counts[key] = int(mask.sum())
        agreement[key] = _fraction(right[key], mask)
        per_class[key] = {}
        for c, name in enumerate(classes):
            sel = mask & (truth == c)
            per_class[key][name] = _fraction(right[key] & sel, sel)
    both = named["shape"] & named["colour"]
    counts["both"] = int(both.sum())
    agreement["both"] = _fraction(right["shape"] & right["colour"] & both, both)
    return TextAlignment(float(guidance_scale), steps, n, seed, phrasing, agreement, per_class, counts, val.rate,
                         bool(use_clipped_model_output))


def text_alignment_sweep(model: Model | PromptSampler, scales: Sequence[float] = GUIDANCE_SWEEP,
                         **kwargs: Any) -> list[TextAlignment]:
    """:func:`text_alignment` at each guidance scale, same prompts and x_T (keywords passed on)."""
    return [text_alignment(model, guidance_scale=float(w), **kwargs) for w in scales]


# -- prompt grids -------------------------------------------------------------------------------------------
def default_prompts(name: str) -> list[str]:
    """The rows of an embedded text model's prompt grid.

    >>> default_prompts("digits")[:2]
    ['a handwritten 0', 'a handwritten 1']
    """
    if name == "digits":
        return [digits_data.canonical_digit_caption(d) for d in range(10)]
    if name == "shapes-text":
        return shapes_prompts(len(SHAPES) * len(COLOURS))[1]
    raise ValueError(f"no default prompts for {name!r} (known: digits, shapes-text); pass prompts=[...]")


def prompt_grid(model: Model | PromptSampler, prompts: Sequence[str], *, columns: int = 8,
                guidance_scale: float = DEFAULT_GUIDANCE, steps: int = DEFAULT_STEPS, seed: int = 0,
                use_clipped_model_output: bool = False, progress: bool = True) -> torch.Tensor:
    """Images (len(prompts) * columns, C, H, W): row r holds ``columns`` samples of ``prompts[r]``;
    column j starts from the same x_T in every row, so rows differ by the prompt alone.

    >>> import diffgeo
    >>> prompt_grid(diffgeo.load("digits"), ["a 1", "a 7"], columns=3, steps=2, progress=False).shape
    torch.Size([6, 1, 16, 16])
    """
    prompts = list(prompts)
    if not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive integer, got {columns!r}")
    if not prompts:
        raise ValueError("prompts is empty: give one prompt per row")
    if not isinstance(model, Model):
        return generate(model, [p for p in prompts for _ in range(columns)], guidance_scale=guidance_scale,
                        steps=steps, seed=seed, progress=progress)
    from .sampling import sample

    noise = torch.randn((columns, *model.x_shape), generator=torch.Generator().manual_seed(seed))
    noise = noise.repeat(len(prompts), *([1] * len(model.x_shape))).to(device=model.device, dtype=model.dtype)
    with torch.no_grad():
        traj = sample(model, noise=noise, prompt=[p for p in prompts for _ in range(columns)],
                      guidance_scale=guidance_scale, steps=steps, use_clipped_model_output=use_clipped_model_output,
                      progress=progress)
        return model.decode(traj.result).float().cpu().clamp(-1, 1)


def save_prompt_grid(model: Model, path: str | Path, *, prompts: Sequence[str] | None = None, columns: int = 8,
                     guidance_scale: float | None = None, steps: int = DEFAULT_STEPS, seed: int = 0,
                     marks: Sequence[bool] | None = None, progress: bool = True) -> Path:
    """Draw :func:`prompt_grid` (prompts default: :func:`default_prompts` of ``model.name``) and save
    it as a PNG with each row labelled by its prompt. ``marks``: per-image flags drawn as red frames.
    ``guidance_scale`` default: the model's entry in :data:`GUIDANCE`, else :data:`DEFAULT_GUIDANCE`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .plotting import labelled_grid

    prompts = list(prompts) if prompts is not None else default_prompts(model.name)
    if guidance_scale is None:
        guidance_scale = GUIDANCE.get(model.name, DEFAULT_GUIDANCE)
    images = prompt_grid(model, prompts, columns=columns, guidance_scale=guidance_scale, steps=steps, seed=seed,
                         progress=progress)
    if marks is None and model.name == "digits" and prompts == default_prompts("digits"):
        labels = torch.arange(10).repeat_interleave(columns)
        marks = (digit_classifier().predict(images) != labels).tolist()
    title = f"{model.name}: guidance {guidance_scale:g}, {steps} DDIM steps, seed {seed}"
    if marks is not None:
        title += "\n(red = the digit classifier reads another digit)"
    fig = labelled_grid(images, prompts, nrow=columns, title=title, marks=marks)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


# -- command line ----------------------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def _variant(result: DigitAgreement | TextAlignment) -> str:
    return ", clipped eps" if result.use_clipped_model_output else ", raw eps"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffgeo.alignment",
                                     description="Prompt grid and measured text alignment of an embedded text model.")
    parser.add_argument("model", choices=("digits", "shapes-text"))
    parser.add_argument("--n", type=int, default=None, help="samples per guidance scale (digits 500, shapes-text 256)")
    parser.add_argument("--scales", type=float, nargs="+", default=list(GUIDANCE_SWEEP))
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--columns", type=int, default=8, help="samples per prompt in the grid")
    parser.add_argument("--guidance", type=float, default=None,
                        help="guidance scale of the grid (default: the model's entry in GUIDANCE)")
    parser.add_argument("--out", type=Path, default=Path("figures"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .models import load

    model = load(args.model)
    progress = not args.no_progress
    grid = save_prompt_grid(model, args.out / f"{args.model}_prompts.png", columns=args.columns,
                            guidance_scale=args.guidance, steps=args.steps, seed=args.seed, progress=progress)
    run: Callable[..., list] = digit_agreement_sweep if args.model == "digits" else text_alignment_sweep
    n = args.n or (500 if args.model == "digits" else 256)
    # Both DDIM variants of a clipping scheduler: the direction term with the raw (guided) eps, as
    # diffusers by default, and with eps recomputed from the clipped x0.
    results = [r for clipped in (False, True)
               for r in run(model, args.scales, n=n, steps=args.steps, seed=args.seed,
                            use_clipped_model_output=clipped, progress=progress)]
    summary: dict = {"model": args.model, "model_steps": model.provenance.get("steps"), "n": n, "steps": args.steps,
                     "seed": args.seed, "default_guidance": GUIDANCE[args.model],
                     "command": "python -m diffgeo.alignment " + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.model == "digits":
        clf = digit_classifier()
        summary["classifier"] = {"kind": "sklearn SVC(C=10, gamma=0.001)", "held_out_accuracy": clf.accuracy,
                                 "n_train": clf.n_train, "n_test": clf.n_test}
        for r in results:
            log.info("guidance %4.1f%s: agreement %.3f; per digit %s", r.guidance_scale, _variant(r), r.overall,
                     " ".join(f"{v:.2f}" for v in r.per_digit))
    else:
        # Paraphrases and partial captions in the training phrasings ("a small crimson disk on the
        # left", "a square"), scored on the factors each names, at the model's guidance scale.
        results.append(text_alignment(model, n=n, guidance_scale=GUIDANCE[args.model], steps=args.steps,
                                      seed=args.seed, phrasing="captions", progress=progress))
        for r in results:
            log.info("guidance %4.1f%s, %s prompts: agreement %s (valid %.3f)", r.guidance_scale, _variant(r),
                     r.phrasing, {k: round(v, 3) for k, v in r.agreement.items()}, r.valid_rate)
    summary["results"] = [r.to_dict() for r in results]
    path = args.out / f"{args.model}_alignment.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(summary), indent=1))
    log.info("wrote %s and %s", grid, path)


if __name__ == "__main__":
    main()
