"""When to edit and when to boost (Asyrp's rule, Kwon et al. 2023): :func:`edit_interval` puts
t_edit where distance(x0, P_t) and t_boost where distance(x0, x_t) first reach their thresholds,
with a pluggable image distance (:func:`ssim_distance`, offline, or :func:`lpips_distance`);
:func:`default_interval` is the rule on the model's own samples, cached per weights.

>>> import diffgeo
>>> iv = edit_interval(diffgeo.load("shapes"), diffgeo.data.shapes.make_scenes(2, seed=1).images, stride=250)
>>> iv.timesteps.tolist(), iv.distance
([0, 250, 500, 750], 'ssim')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from diffgeo.core.checks import SEED_MAX, check_float, check_int
from diffgeo.core.sweep import model_fingerprint
from diffgeo.editing.common import check_prompt
from diffgeo.models.conditioning import resolve_cond
from diffgeo.sampling.ddim import sample

__all__ = ["edit_interval", "EditInterval", "default_interval", "ssim", "ssim_distance", "lpips_distance",
           "PAPER_T_EDIT", "PAPER_T_BOOST", "LPIPS_EDIT", "LPIPS_BOOST", "SSIM_EDIT", "SSIM_BOOST"]

#: Asyrp's values on CelebA-HQ (of 1000 training steps), from their LPIPS curves.
PAPER_T_EDIT, PAPER_T_BOOST = 538, 167
#: The paper's LPIPS thresholds: t_edit where LPIPS(x0, P_t) reaches 0.33, t_boost where LPIPS(x0, x_t) reaches 1.2.
LPIPS_EDIT, LPIPS_BOOST = 0.33, 1.2
#: Thresholds of the offline default distance (1 - SSIM, window 7, sigma 1.5), calibrated on
#: ``shapes``: the mean 1 - SSIM over 16 real scenes (``make_scenes(16, seed=1)``, stride 20) is
#: 0.36 between x0 and P_t at t = 538 and 0.885 between x0 and x_t at t = 167, the paper's
#: CelebA-HQ values, so the rule gives 540 / 180 there. The first threshold depends on the model's
#: x0 predictions: it was 0.66 for the 5,050-step epsilon ``shapes`` model, whose P_t at t > 800
#: was worse than the data mean, and recalibrated for the v-prediction model that replaced it. Held
#: out, on 16 real UCI digits with their prompts (an epsilon model), the same thresholds give
#: 320 / 360: the two curves cross, so :func:`asyrp` then starts boosting at t_edit (and says so).
#: Why SSIM: it needs no download (LPIPS's backbones cannot be fetched here), is
#: defined for any channel count and size (the digits have one channel at 16 px, where the
#: project's shapes probe does not apply), and like LPIPS it compares local structure rather than
#: pixel values, which is what the rule measures (when x0 stops being recognisable in P_t / x_t).
SSIM_EDIT, SSIM_BOOST = 0.36, 0.885


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-x**2 / (2 * sigma**2))
    return (w / w.sum())


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 2.0, window: int = 7,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) per image of a, b (N, C, H, W): Gaussian window (``window``,
    ``sigma``; 7 fits 16 px images), K1 0.01, K2 0.03, valid region, averaged over channels.

    >>> x = torch.rand(2, 3, 16, 16)
    >>> ssim(x, x).tolist()
    [1.0, 1.0]
    """
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"ssim takes two (N, C, H, W) batches of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    window = min(window, a.shape[-1], a.shape[-2])
    w1 = _gaussian_window(window, sigma)
    k = (w1[:, None] * w1[None]).to(a.dtype).to(a.device)
    n, ch = a.shape[:2]
    kern = k.expand(ch, 1, window, window)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, kern, groups=ch)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return s.flatten(1).mean(1).clamp(max=1.0)


def ssim_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - SSIM per image (N,) of a, b (N, C, H, W): the offline default distance of the t_edit / t_boost rule.

    >>> x = torch.rand(2, 1, 16, 16)
    >>> ssim_distance(x, x).tolist(), ssim_distance.thresholds
    ([0.0, 0.0], (0.36, 0.885))
    """
    return 1.0 - ssim(a, b)


def lpips_distance(net: str = "alex", *, module: Any = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """LPIPS (Zhang et al. 2018) from the optional ``lpips`` package (``pip install diffgeo[lpips]``;
    needs torchvision and its backbone weights, so not on this project's offline machines).

    Returns ``d(a, b) -> (N,)`` for images in [-1, 1] (one-channel images are repeated to three).
    ``module``: an object with ``LPIPS(net=...)`` to use instead of the package (for tests).

    >>> class Fake:   # stands in for the lpips package: the mean absolute difference
    ...     class LPIPS:
    ...         def __init__(self, net, verbose): pass
    ...         def __call__(self, a, b): return (a - b).abs().mean((1, 2, 3))
    >>> d = lpips_distance(module=Fake)
    >>> d(torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)).tolist(), d.thresholds
    ([1.0, 1.0], (0.33, 1.2))
    """
    if module is None:
        try:
            import lpips as module  # type: ignore[import-not-found, no-redef]
        except ImportError:
            raise ImportError("the LPIPS distance needs the optional 'lpips' package (pip install 'diffgeo[lpips]'; "
                              "it needs torchvision); the offline default is ssim_distance") from None
    net_ = module.LPIPS(net=net, verbose=False)
    for p in getattr(net_, "parameters", lambda: [])():
        p.requires_grad_(False)

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape or a.dim() != 4:
            raise ValueError(f"LPIPS takes two (N, C, H, W) batches of the same shape, got {tuple(a.shape)}, "
                             f"{tuple(b.shape)}")
        if a.shape[1] == 1:
            a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
        if a.shape[1] != 3:
            raise ValueError(f"LPIPS takes 1- or 3-channel images, got {a.shape[1]} channels")
        with torch.no_grad():
            return net_(a.float(), b.float()).reshape(len(a))

    distance.thresholds = (LPIPS_EDIT, LPIPS_BOOST)  # type: ignore[attr-defined]
    return distance


ssim_distance.thresholds = (SSIM_EDIT, SSIM_BOOST)  # type: ignore[attr-defined]


def _distance(distance: str | Callable | None) -> tuple[Callable, str, tuple[float, float] | None]:
    if distance is None or distance == "ssim":
        return ssim_distance, "ssim", (SSIM_EDIT, SSIM_BOOST)
    if distance == "lpips":
        d = lpips_distance()
        return d, "lpips", (LPIPS_EDIT, LPIPS_BOOST)
    if callable(distance):
        return distance, getattr(distance, "__name__", "custom"), getattr(distance, "thresholds", None)
    raise ValueError(f"distance must be 'ssim', 'lpips' or a function d(a, b) -> (N,), got {distance!r}")


@dataclass(frozen=True)
class EditInterval:
    """t_edit / t_boost by Asyrp's rule and the curves behind them.

    timesteps: (K,) ascending; d_edit: (K,) mean distance(x0, P_t); d_boost: (K,) mean
    distance(x0, x_t); thresholds (edit, boost); distance: its name."""

    t_edit: int
    t_boost: int
    timesteps: torch.Tensor
    d_edit: torch.Tensor
    d_boost: torch.Tensor
    thresholds: tuple[float, float]
    distance: str
    meta: dict = field(default_factory=dict)


def _first_reaching(ts: torch.Tensor, d: torch.Tensor, threshold: float) -> int:
    hit = (d >= threshold).nonzero()
    return int(ts[int(hit[0])]) if len(hit) else int(ts[-1])


def edit_interval(model: Any, images: torch.Tensor, *, distance: str | Callable | None = None,
                  thresholds: tuple[float, float] | None = None, stride: int = 20, prompt: Any = None,
                  seed: int = 0) -> EditInterval:
    """Asyrp's rule: t_edit = first t with distance(x0, P_t) >= thresholds[0], t_boost = first t with
    distance(x0, x_t) >= thresholds[1], over t = 0, stride, 2 stride, ... (x_t = forward-noised
    images, seeded; P_t the model's one-step x0 prediction). images: (N, *x_shape) in [-1, 1].
    distance: ``"ssim"`` (default, 1 - SSIM, thresholds :data:`SSIM_EDIT`/:data:`SSIM_BOOST`),
    ``"lpips"`` (the paper's 0.33/1.2) or a function ``d(a, b) -> (N,)`` (then pass thresholds,
    or give the function a ``thresholds`` attribute).

    >>> import diffgeo
    >>> m = diffgeo.load("shapes")
    >>> iv = edit_interval(m, diffgeo.data.shapes.make_scenes(4, seed=1).images, stride=100)
    >>> 0 <= iv.t_boost <= iv.t_edit < 1000
    True
    """
    n_t = model.num_train_timesteps
    stride = check_int(stride, "stride", min=1)
    if stride >= n_t:
        raise ValueError(f"stride={stride} leaves only t=0 of the {n_t} training timesteps: the rule needs a curve; "
                         f"give a stride in [1, {n_t - 1}] (e.g. 20)")
    seed = check_int(seed, "seed", min=0, max=SEED_MAX)
    images = model.check_x(images, "images")
    if not model.is_latent and float(images.detach().abs().max()) > 1.01:
        raise ValueError(f"images must be in [-1, 1], got values up to {float(images.detach().abs().max()):g} (map "
                         "[0, 255] images with x / 127.5 - 1, [0, 1] images with 2 * x - 1)")
    if model.is_conditional:
        check_prompt(model, prompt)
    if thresholds is not None:
        if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__len__") or len(thresholds) != 2:
            raise ValueError(f"thresholds must be two numbers (edit, boost), got {thresholds!r}")
        thresholds = (check_float(thresholds[0], "thresholds[0]"), check_float(thresholds[1], "thresholds[1]"))
    fn, name, default_thr = _distance(distance)
    thr = thresholds or default_thr
    if thr is None or len(thr) != 2:
        raise ValueError("a custom distance needs thresholds=(edit, boost)")
    ts = torch.arange(0, n_t, stride)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(images.shape, generator=g).to(images)
    c = resolve_cond(model, prompt, default_branch="cond", batch=len(images))
    d_edit, d_boost = [], []
    with torch.no_grad():
        for t in ts.tolist():
            a = float(model.alphas_cumprod[t])
            x_t = a**0.5 * images + (1 - a) ** 0.5 * z
            eps = model.eps_fn(x_t, model.timesteps_tensor(t, len(images)), c)
            p_t = ((x_t - (1 - a) ** 0.5 * eps) / a**0.5).clamp(-1, 1)
            img = model.decode if model.is_latent else (lambda x: x)
            d_edit.append(float(fn(img(images), img(p_t)).mean()))
            d_boost.append(float(fn(img(images), img(x_t)).mean()))
    de, db = torch.tensor(d_edit), torch.tensor(d_boost)
    return EditInterval(_first_reaching(ts, de, thr[0]), _first_reaching(ts, db, thr[1]), ts, de, db,
                        (float(thr[0]), float(thr[1])), name, {"model": model.name, "n": len(images), "seed": seed,
                                                               "stride": stride})


#: default_interval's cache: (weights fingerprint, distance, n) -> EditInterval.
_INTERVALS: dict[tuple[str, Any, int], EditInterval] = {}


def default_interval(model: Any, distance: str | Callable | None = None, n: int = 16) -> EditInterval:
    """:func:`edit_interval` on n of the model's own samples (20 DDIM steps, seed 0), cached per
    (model weights, distance, n): the key holds :func:`~diffgeo.core.sweep.model_fingerprint`, so
    two models of one name with different weights do not share an interval.

    >>> import diffgeo
    >>> iv = default_interval(diffgeo.load("shapes"), n=2)
    >>> iv is default_interval(diffgeo.load("shapes"), n=2), iv.distance
    (True, 'ssim')
    """
    key = (model_fingerprint(model), distance if isinstance(distance, str) or distance is None else id(distance), n)
    if key not in _INTERVALS:
        prompt = "" if model.is_conditional else None
        with torch.no_grad():
            x0 = sample(model, n, steps=20, seed=0, prompt=prompt, progress=False).result
        _INTERVALS[key] = edit_interval(model, x0, distance=distance, prompt=prompt)
    return _INTERVALS[key]
