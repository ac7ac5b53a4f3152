"""Statistics on scipy: a binomial interval and a rank correlation.

One place for the textbook statistics the package reports, computed by :mod:`scipy.stats`
rather than by hand: :func:`wilson_interval` (``binomtest(...).proportion_ci(method="wilson")``),
and :func:`spearman` (``spearmanr``, average ranks for ties). scipy is imported when a function is first called.

>>> wilson_interval(8, 8)[0] > 0.6, spearman([1, 2, 3, 4], [1, 4, 9, 16])
(True, 1.0)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["wilson_interval", "spearman"]


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
