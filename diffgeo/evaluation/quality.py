"""Sample quality of a shapes model, measured with the attribute probe.

``python -m diffgeo evaluate`` draws 512 samples from the embedded ``shapes`` model and writes
``figures/shapes_quality.png`` (factor histograms, generated vs training distribution) and
``figures/shapes_quality.json`` (validity, and which invalid samples are clean scenes past the
training ranges: :func:`quality_of`) and ``figures/shapes_invalid.png`` (the invalid samples, the
malformed ones framed red); ``--model digits`` writes ``figures/digits_quality.json``: the
Frechet distance (in the digit reader's decision values and in its input pixels) and
precision/recall of 450 prompted samples against the real digits the reader holds out, beside
the same numbers for real digits (:func:`evaluate_digits`).

>>> import diffgeo
>>> report = evaluate_samples(diffgeo.load("shapes"), n=8, steps=5, progress=False)
>>> sorted(report.class_frequencies)
['colour', 'shape']
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field

import torch

from diffgeo.data.digits import load_digits_images
from diffgeo.data.prompts import digit_prompts
from diffgeo.data.shapes import COLOURS, CONTINUOUS, SHAPES, sample_factors
from diffgeo.models.conditioning import default_guidance
from diffgeo.models.model import Model
from diffgeo.readers.digits import CLASSIFIER_SEED, CLASSIFIER_TEST_FRACTION, digit_classifier, to_classifier_input
from diffgeo.readers.probe import VALID_RMSE, fit_scene, validity
from diffgeo.sampling.ddim import sample
from diffgeo.sampling.generation import DEFAULT_STEPS, generate

__all__ = ["QualityReport", "evaluate_samples", "sample_images", "quality_of", "ks_statistic",
           "tv_floor", "ks_floor", "frechet_distance", "feature_frechet_distance", "precision_recall",
           "digit_features", "DigitQuality", "digit_quality_of", "evaluate_digits"]

log = logging.getLogger(__name__)


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs.

    >>> round(ks_statistic(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])), 3)
    0.0
    """
    grid = torch.cat([a, b]).sort().values
    cdf_a = torch.searchsorted(a.sort().values, grid, right=True) / len(a)
    cdf_b = torch.searchsorted(b.sort().values, grid, right=True) / len(b)
    return float((cdf_a - cdf_b).abs().max())


def tv_floor(n: int, k: int, *, draws: int = 20000, seed: int = 0) -> tuple[float, float]:
    """Median and 95th percentile of the total-variation distance to uniform of the class
    frequencies of n draws from the uniform distribution over k classes: what a model that draws
    exactly the training distribution reads at this n (Monte Carlo, ``draws`` repeats, seeded).
    A measured TV below the 95th percentile does not tell the model from the data.

    >>> med, p95 = tv_floor(493, 6)   # colour, about 493 valid of 512 samples
    >>> 0.03 < med < 0.05 and 0.05 < p95 < 0.08
    True
    """
    if n < 1 or k < 2:
        raise ValueError(f"tv_floor needs n >= 1 draws and k >= 2 classes, got n={n}, k={k}")
    g = torch.Generator().manual_seed(seed)
    # multinomial counts as a chain of binomials: class j takes Bin(what is left, 1 / (k - j)) of the draws
    left = torch.full((draws,), float(n), dtype=torch.float64)
    counts = []
    for j in range(k - 1):
        counts.append(torch.binomial(left, torch.full_like(left, 1 / (k - j)), generator=g))
        left = left - counts[-1]
    counts = torch.stack(counts + [left], dim=1)
    tv = 0.5 * (counts / n - 1 / k).abs().sum(dim=1)
    return float(tv.median()), float(tv.quantile(0.95))


def ks_floor(n: int, m: int, *, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Median and 95th percentile of the two-sample KS statistic between n and m draws of one
    continuous distribution: what :func:`ks_statistic` reads for a model that draws exactly the
    training distribution, against a reference sample of m (Monte Carlo, ``draws`` repeats, seeded).

    The statistic is distribution-free: it depends only on where the n draws fall in the merged
    order of n + m, a uniformly random n-subset. With 0-based merged ranks r_1 < ... < r_n, the i-th
    smallest draw has B_i = r_i - (i - 1) reference draws below it, and the largest CDF gap is
    max_i max(|i/n - B_i/m|, |(i-1)/n - B_i/m|), so no sample of m is drawn or sorted.

    >>> med, p95 = ks_floor(493, 20000)
    >>> 0.03 < med < 0.045 and 0.05 < p95 < 0.07
    True
    """
    if n < 1 or m < 1:
        raise ValueError(f"ks_floor needs n, m >= 1, got n={n}, m={m}")
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    ks = torch.empty(draws, dtype=torch.float64)
    for d in range(draws):
        below = torch.randperm(n + m, generator=g)[:n].sort().values.double() - (i - 1)
        ks[d] = torch.maximum((i / n - below / m).abs(), ((i - 1) / n - below / m).abs()).max()
    return float(ks.median()), float(ks.quantile(0.95))


@dataclass(frozen=True)
class QualityReport:
    """valid_rate over n samples; out_of_range_rate: the share of the n that are invalid only because
    their scene lies past the training ranges (a clean single scene, :func:`diffgeo.readers.probe.fit_scene`
    within ``VALID_RMSE``, with a factor outside its range); ``invalid``: the indices of the invalid
    samples, ``out_of_range``: those of them that are such scenes; class frequencies (generated,
    among valid samples) per class factor; total-variation distance of each class distribution to
    uniform (the training distribution); KS statistic of each continuous factor against the
    training distribution;
    ``floor``: per measure, the (median, 95th percentile) it reads for a model that draws exactly
    the training distribution with as many valid samples (:func:`tv_floor`, :func:`ks_floor`).
    A measure under its floor's 95th percentile is within sampling noise of the data."""

    n: int
    steps: int
    seed: int
    valid_rate: float
    invalid: list[int]
    out_of_range: list[int]
    class_frequencies: dict
    class_tv: dict
    continuous_ks: dict
    continuous_values: dict
    floor: dict = field(default_factory=dict)

    @property
    def out_of_range_rate(self) -> float:
        return len(self.out_of_range) / self.n

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("continuous_values")
        out["out_of_range_rate"] = self.out_of_range_rate
        return out


def evaluate_samples(model: Model, *, n: int = 512, steps: int = 50, seed: int = 1234, batch_size: int = 128,
                     progress: bool | None = None) -> QualityReport:
    """Score :func:`sample_images` with :func:`quality_of`.

    >>> import diffgeo
    >>> evaluate_samples(diffgeo.load("shapes"), n=4, steps=2, progress=False).n
    4
    """
    images = sample_images(model, n=n, steps=steps, seed=seed, batch_size=batch_size, progress=progress)
    return quality_of(images, steps=steps, seed=seed)


def sample_images(model: Model, *, n: int = 512, steps: int = 50, seed: int = 1234, batch_size: int = 128,
                  progress: bool | None = None) -> torch.Tensor:
    """n DDIM samples (n, *x_shape) on the CPU, in batches: batch i from ``seed + i``, so the first
    batch is ``sample(model, batch_size, seed=seed)``.

    >>> import diffgeo
    >>> sample_images(diffgeo.load("shapes"), n=3, steps=2, batch_size=2, progress=False).shape
    torch.Size([3, 3, 32, 32])
    """
    images = []
    with torch.no_grad():
        for i, start in enumerate(range(0, n, batch_size)):
            m = min(batch_size, n - start)
            images.append(sample(model, m, steps=steps, seed=seed + i, progress=progress).result.cpu())
    return torch.cat(images)


def quality_of(images: torch.Tensor, *, steps: int = 0, seed: int = 0) -> QualityReport:
    """Score shapes images (N, 3, 32, 32) with the probe against the known training distribution:
    validity, the factor distributions of the valid ones, and the invalid ones that are clean scenes
    past the training ranges (:func:`diffgeo.readers.probe.fit_scene`, about 1 s per invalid image).
    ``steps`` and ``seed`` only label the report.

    >>> from diffgeo.data.shapes import RANGES, render
    >>> f = sample_factors(4, seed=0).replace(y=torch.tensor([RANGES["y"][1] + 2.0, 15.0, 15.0, 15.0]))  # one 2 px past
    >>> r = quality_of(render(f))
    >>> r.valid_rate, r.out_of_range_rate, r.invalid, r.out_of_range
    (0.75, 0.25, [0], [0])
    """
    val = validity(images)
    invalid = (~val.valid).nonzero().flatten()
    out_of_range = invalid[:0]
    if len(invalid):
        fit = fit_scene(images[invalid], val.factors[invalid])
        out_of_range = invalid[(fit.rmse <= VALID_RMSE) & fit.out_of_range]
    f = val.factors[val.valid] if bool(val.valid.any()) else val.factors
    ref_n = 20000
    ref = sample_factors(ref_n, seed=777)
    freqs, tv = {}, {}
    for name, labels in (("shape", SHAPES), ("colour", COLOURS)):
        counts = torch.bincount(getattr(f, name), minlength=len(labels)).double()
        p = counts / counts.sum()
        freqs[name] = {lab: round(float(v), 4) for lab, v in zip(labels, p)}
        tv[name] = round(float(0.5 * (p - 1 / len(labels)).abs().sum()), 4)
    ks = {name: round(ks_statistic(getattr(f, name).double(), getattr(ref, name).double()), 4) for name in CONTINUOUS}
    values = {name: getattr(f, name).tolist() for name in CONTINUOUS}
    n_read = len(f)
    floor = {name: [round(v, 4) for v in tv_floor(n_read, len(labels))]
             for name, labels in (("shape", SHAPES), ("colour", COLOURS))}
    floor_ks = [round(v, 4) for v in ks_floor(n_read, ref_n)]  # distribution-free: one floor for all four
    floor.update({name: floor_ks for name in CONTINUOUS})
    return QualityReport(len(images), steps, seed, val.rate, invalid.tolist(), out_of_range.tolist(), freqs, tv, ks,
                         values, floor)


# -- digits: a sample-quality figure of merit against the real digits ----------------------------------
def frechet_distance(mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mean_a, cov_a) and N(mean_b, cov_b):
    ``|mean_a - mean_b|^2 + tr(cov_a + cov_b - 2 (cov_a^1/2 cov_b cov_a^1/2)^1/2)``.

    means (D,), covariances (D, D) symmetric positive semi-definite; computed in float64 with
    symmetric eigendecompositions (no complex square roots).

    >>> eye = torch.eye(2)
    >>> round(frechet_distance(torch.zeros(2), eye, torch.tensor([3.0, 4.0]), 4 * eye), 6)  # 25 + 2 * (2 - 1)^2
    27.0
    """
    ma, mb = mean_a.double().reshape(-1), mean_b.double().reshape(-1)
    ca, cb = cov_a.double(), cov_b.double()
    d = ma.numel()
    if mb.numel() != d or ca.shape != (d, d) or cb.shape != (d, d):
        raise ValueError(f"frechet_distance needs means (D,) and covariances (D, D) of one D; got {tuple(mean_a.shape)}, "
                         f"{tuple(cov_a.shape)}, {tuple(mean_b.shape)}, {tuple(cov_b.shape)}")
    vals, vecs = torch.linalg.eigh((ca + ca.T) / 2)
    root_a = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    middle = root_a @ ((cb + cb.T) / 2) @ root_a
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((ma - mb).pow(2).sum() + ca.trace() + cb.trace() - 2 * cross)


def feature_frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """:func:`frechet_distance` of the Gaussians fitted to two feature sets a (N, D) and b (M, D)
    (sample means and unbiased covariances), as FID does in Inception features.

    >>> x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
    >>> feature_frechet_distance(x, x) < 1e-9
    True
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"feature sets must be (N, D) and (M, D) with N, M >= 2; got {tuple(a.shape)}, {tuple(b.shape)}")
    a, b = a.double(), b.double()
    return frechet_distance(a.mean(0), torch.cov(a.T).reshape(a.shape[1], -1), b.mean(0),
                            torch.cov(b.T).reshape(b.shape[1], -1))


def precision_recall(real: torch.Tensor, generated: torch.Tensor, *, k: int = 5) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al., NeurIPS 2019) of generated (M, D) against
    real (N, D) features: precision is the fraction of generated points inside the real manifold
    (within the distance to its k-th nearest real neighbour of some real point), recall the fraction
    of real points inside the generated manifold (the same with the roles swapped).

    >>> x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    >>> precision_recall(x, x)
    (1.0, 1.0)
    """
    if real.dim() != 2 or generated.dim() != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"feature sets must be (N, D) and (M, D); got {tuple(real.shape)}, {tuple(generated.shape)}")
    if not 1 <= k < min(len(real), len(generated)):
        raise ValueError(f"k must be in [1, min(N, M) - 1], got {k} for N={len(real)}, M={len(generated)}")

    def inside(support: torch.Tensor, query: torch.Tensor) -> float:
        radii = torch.cdist(support, support).kthvalue(k + 1, dim=1).values  # +1: each point is its own 0th neighbour
        return float((torch.cdist(query, support) <= radii[None]).any(dim=1).double().mean())

    real, generated = real.double(), generated.double()
    return inside(real, generated), inside(generated, real)


def digit_features(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two feature spaces of the project's digit reader (:func:`diffgeo.readers.digits.digit_classifier`)
    for 16x16 digit images (N, 1, 16, 16) in [-1, 1]: its input, the 8x8 image in 0..16 (N, 64),
    and its learned features, the 45 pairwise (one-vs-one) decision values of its RBF SVM (N, 45).

    >>> from diffgeo.data.digits import load_digits_images
    >>> [f.shape for f in digit_features(load_digits_images().images[:3])]
    [torch.Size([3, 64]), torch.Size([3, 45])]
    """


    pixels = to_classifier_input(images)
    ovo = copy.copy(digit_classifier().estimator)  # a shallow copy: the cached reader stays as it is
    ovo.decision_function_shape = "ovo"
    return torch.as_tensor(pixels, dtype=torch.float64), torch.as_tensor(ovo.decision_function(pixels))


@dataclass(frozen=True)
class DigitQuality:
    """Sample quality of a digits model against real digits the reader never saw.

    The reference is the reader's held-out split (``n_real`` digits; the digits model itself was
    trained on all 1,797, so nothing is held out from it); the floor ``*_real`` is the same
    measure for ``n`` real digits from the reader's training split, what a perfect generator would
    score at this n. fd_reader: Frechet distance in the reader's 45 decision values; fd_pixels: in
    its 64 input pixels (0..16); precision/recall: :func:`precision_recall` (k=5) in the pixels.
    """

    n: int
    n_real: int
    guidance_scale: float
    steps: int
    seed: int
    fd_reader: float
    fd_reader_real: float
    fd_pixels: float
    fd_pixels_real: float
    precision: float
    recall: float
    precision_real: float
    recall_real: float

    def summary(self) -> dict:
        return asdict(self)


def digit_quality_of(images: torch.Tensor, *, guidance_scale: float = float("nan"), steps: int = 0, seed: int = 0,
                     k: int = 5) -> DigitQuality:
    """:class:`DigitQuality` of given 16x16 digit images (N, 1, 16, 16) in [-1, 1] (N >= 2k).

    >>> q = digit_quality_of(load_digits_images().images[:10])   # real digits scored as if generated
    >>> q.n, q.n_real, q.precision
    (10, 450, 0.9)
    """
    from sklearn.model_selection import train_test_split

    data = load_digits_images()
    index = torch.arange(len(data.labels)).numpy()
    train_idx, test_idx = train_test_split(index, test_size=CLASSIFIER_TEST_FRACTION, stratify=data.labels.numpy(),
                                           random_state=CLASSIFIER_SEED)  # the reader's own split
    n = len(images)
    if n > len(train_idx):
        raise ValueError(f"at most {len(train_idx)} images (the size of the real floor set), got {n}")
    pick = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(seed))[:n].numpy()
    pix_gen, dec_gen = digit_features(images)
    pix_ref, dec_ref = digit_features(data.images[test_idx])
    pix_flo, dec_flo = digit_features(data.images[train_idx[pick]])
    precision, recall = precision_recall(pix_ref, pix_gen, k=k)
    precision_real, recall_real = precision_recall(pix_ref, pix_flo, k=k)
    r = lambda v: round(v, 4)  # noqa: E731
    return DigitQuality(n, len(test_idx), float(guidance_scale), steps, seed,
                        r(feature_frechet_distance(dec_gen, dec_ref)), r(feature_frechet_distance(dec_flo, dec_ref)),
                        r(feature_frechet_distance(pix_gen, pix_ref)), r(feature_frechet_distance(pix_flo, pix_ref)),
                        r(precision), r(recall), r(precision_real), r(recall_real))


def evaluate_digits(model: Model, *, n: int = 450, guidance_scale: float | None = None, steps: int | None = None,
                    seed: int = 0, progress: bool | None = None) -> DigitQuality:
    """Sample n prompted digits (balanced over 0-9, as :func:`diffgeo.evaluation.alignment.text_alignment`
    prompts them) and score them with :func:`digit_quality_of`. guidance_scale (None: the model's
    default, :mod:`diffgeo.models.zoo`) and steps default to the alignment measurements' settings.

    >>> import diffgeo
    >>> q = evaluate_digits(diffgeo.load("digits"), n=10, steps=2, progress=False)
    >>> q.n, q.guidance_scale, q.steps
    (10, 2.0, 2)
    """
    guidance_scale = default_guidance(model) if guidance_scale is None else guidance_scale
    steps = DEFAULT_STEPS if steps is None else steps
    prompts = digit_prompts(n, seed=seed).prompts
    images = generate(model, prompts, guidance_scale=guidance_scale, steps=steps, seed=seed, progress=progress)
    return digit_quality_of(images, guidance_scale=guidance_scale, steps=steps, seed=seed)
