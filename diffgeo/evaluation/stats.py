"""Statistics on scipy: a binomial interval, a rank correlation and a bootstrap interval.

One place for the textbook statistics the package reports, computed by :mod:`scipy.stats`
rather than by hand: :func:`wilson_interval` (``binomtest(...).proportion_ci(method="wilson")``),
:func:`spearman` (``spearmanr``, average ranks for ties) and :func:`bootstrap_interval`
(``scipy.stats.bootstrap``). scipy is imported when a function is first called.

>>> wilson_interval(8, 8)[0] > 0.6, spearman([1, 2, 3, 4], [1, 4, 9, 16])
(True, 1.0)
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["wilson_interval", "spearman", "bootstrap_interval"]


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


def bootstrap_interval(data: Sequence[float] | torch.Tensor, statistic: Callable[[np.ndarray], float] = np.mean, *,
                       level: float = 0.95, n_resamples: int = 1000, seed: int = 0,
                       method: str = "percentile") -> tuple[float, float, float]:
    """(value, low, high): ``statistic`` of ``data`` (one value per independent unit) and its
    bootstrap interval at ``level`` by :func:`scipy.stats.bootstrap` (``method``: "percentile",
    "basic" or "BCa"), deterministic from ``seed``.

    >>> x = np.random.default_rng(0).normal(size=400)
    >>> v, lo, hi = bootstrap_interval(x)
    >>> lo < v < hi, 0.15 < hi - lo < 0.25      # about 2 x 1.96 / sqrt(400)
    (True, True)
    """
    x = _array(data)
    if x.ndim != 1 or len(x) < 1:
        raise ValueError(f"bootstrap_interval needs a 1-d sequence of at least one value, got shape {x.shape}")
    from scipy.stats import bootstrap

    value = float(statistic(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)   # degenerate resamples: NaN bounds
        res = bootstrap((x,), statistic, confidence_level=level, n_resamples=n_resamples, method=method,
                        vectorized=False, random_state=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return value, (low if not math.isnan(low) else float("nan")), (high if not math.isnan(high) else float("nan"))
