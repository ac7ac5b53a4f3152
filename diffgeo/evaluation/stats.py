"""Statistics on scipy: a binomial interval, a rank correlation and the BCa bootstrap over units.

One place for the textbook statistics the package reports, computed by :mod:`scipy.stats`
rather than by hand: :func:`wilson_interval` (``binomtest(...).proportion_ci(method="wilson")``),
:func:`spearman` (``spearmanr``, average ranks for ties) and :func:`bca_interval`
(``scipy.stats.bootstrap(method="BCa")`` over the indices of independent units, so that a
statistic of pairs of units, e.g. a mean pairwise distance, is resampled by unit). scipy is
imported when a function is first called.

>>> wilson_interval(8, 8)[0] > 0.6, spearman([1, 2, 3, 4], [1, 4, 9, 16])
(True, 1.0)
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["wilson_interval", "spearman", "bca_interval"]


def _array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the fraction k / n at ``level`` (no continuity correction);
    (nan, nan) for n = 0.

    >>> [round(v, 3) for v in wilson_interval(8, 8)]
    [0.676, 1.0]
    >>> wilson_interval(0, 0)
    (nan, nan)
    """
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def spearman(a: Sequence[float] | torch.Tensor, b: Sequence[float] | torch.Tensor) -> float:
    """Spearman rank correlation of paired values (average ranks for ties); NaN with fewer than 3
    pairs or when either side is constant.

    >>> round(spearman([1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 4.0, 3.0, 2.0, 1.0]), 12)
    -1.0
    >>> spearman([1.0, 2.0, 2.0, 3.0], [1.0, 3.0, 3.0, 4.0])     # ties get their average rank
    1.0
    >>> spearman([1.0, 2.0], [1.0, 2.0]), spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    (nan, nan)
    """
    x, y = _array(a), _array(b)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-d sequences of the same length, got {x.shape} and {y.shape}")
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def bca_interval(n: int, statistic: Callable[[np.ndarray], float], *, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(value, low, high): ``statistic`` on all ``n`` units and its BCa bootstrap interval at ``level``.

    ``statistic(idx)`` gets an int array of unit indices (resampled with replacement; the jackknife
    of BCa passes n - 1 of them; all of them, in order, for the value) and returns a float.
    Resamples where it is NaN make BCa undefined: then the percentile interval of the finite
    resamples is returned instead; (value, nan, nan) when n < 2 or no resample is finite.

    >>> x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    >>> v, lo, hi = bca_interval(8, lambda i: float(x[i].mean()), n_boot=999)
    >>> v, 2.0 < lo < 4.5 < hi < 7.0
    (4.5, True)
    """
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"bca_interval needs a number of units n >= 1, got {n!r}")
    value = float(statistic(np.arange(n)))
    if n < 2:
        return value, float("nan"), float("nan")
    from scipy.stats import bootstrap

    def stat(idx: np.ndarray) -> float:
        return float(statistic(np.asarray(idx, dtype=np.int64)))

    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # a degenerate (constant) bootstrap distribution: handled below
        res = bootstrap((np.arange(n),), stat, vectorized=False, n_resamples=n_boot, confidence_level=level,
                        method="BCa", random_state=rng)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if lo == lo and hi == hi:
        return value, lo, hi
    draws = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return value, float("nan"), float("nan")
    if np.all(draws == draws[0]):
        return value, float(draws[0]), float(draws[0])
    alpha = (1 - level) / 2
    return value, float(np.quantile(draws, alpha)), float(np.quantile(draws, 1 - alpha))
