"""Null generators for the report's claims: what a statistic looks like when the claimed effect is absent.

Pure geometry and statistics (no model), each with a known answer that tests check:

- :func:`random_subspace_null`: principal-angle statistics of pairs of random k-dimensional subspaces
  of R^n by Monte Carlo (uniform on the Grassmannian: QR of Gaussian matrices). For k << n the
  cosines are O(sqrt(k / n)), so the Grassmann distance tends to its maximum sqrt(k) pi / 2, and
  the mean squared cosine is exactly k / n in expectation (:func:`chance_retention`).
- :func:`random_directions_like`: random directions of the same norm as given ones (uniform on the
  sphere of that radius), the null of "this direction edits more than any direction would".
- :func:`mantel_test`: permutation (Mantel) test of the association of two distance matrices
  over the same objects (rows and columns permuted together), the right test when the units are
  objects and the statistic is over their pairs.
- :func:`random_tangent_directions`: unit vectors uniform on the unit sphere of a subspace (span of
  orthonormal rows), the null of "a basis vector does X": the same for a random tangent direction.
  :func:`nearest_cosine` is the |cosine| of a direction with its nearest basis vector; for a uniform
  unit vector of R^k it is the largest |coordinate|, 2 sqrt(2) / pi on average for k = 2.
- :func:`ddim_shift_gain`: how much a shift of eps in one DDIM step moves x_{t-1}, when the shift
  enters both the x0 prediction and the direction term (it mostly cancels: Asyrp's Theorem 1)
  or the x0 prediction only (Asyrp's asymmetric process).

>>> null = random_subspace_null(3072, 5, n_draws=20)
>>> bool(null.distance.mean() / null.max_distance > 0.95)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

__all__ = ["SubspaceNull", "random_subspace_null", "chance_retention", "random_directions_like", "mantel_test",
           "ddim_shift_gain", "random_tangent_directions", "nearest_cosine"]


@dataclass(frozen=True)
class SubspaceNull:
    """Monte Carlo null of two random k-dim subspaces of R^n: distance (D,) Grassmann distances,
    retention (D,) mean squared cosines of the principal angles, max_distance sqrt(k) pi / 2."""

    n: int
    k: int
    distance: torch.Tensor
    retention: torch.Tensor
    max_distance: float

    def quantile(self, q: float) -> float:
        """The q-quantile of the null distances (normalised by the maximum).

        >>> random_subspace_null(100, 2, n_draws=10).quantile(0.5) <= 1.0
        True
        """
        return float(torch.quantile(self.distance / self.max_distance, q))


def _check_nk(n: int, k: int) -> None:
    if not (isinstance(n, int) and isinstance(k, int) and 1 <= k <= n):
        raise ValueError(f"need integers 1 <= k <= n (subspace dimension k of R^n), got k={k!r}, n={n!r}")


def random_subspace_null(n: int, k: int, *, n_draws: int = 200, seed: int = 0) -> SubspaceNull:
    """Principal-angle statistics of ``n_draws`` independent pairs of uniformly random k-dim subspaces of R^n.

    >>> null = random_subspace_null(1000, 2, n_draws=50)
    >>> null.distance.shape, abs(float(null.retention.mean()) - chance_retention(1000, 2)) < 0.002
    (torch.Size([50]), True)
    """
    _check_nk(n, k)
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    g = torch.Generator().manual_seed(seed)
    dist = torch.empty(n_draws, dtype=torch.float64)
    ret = torch.empty(n_draws, dtype=torch.float64)
    for i in range(n_draws):
        a, b = (torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))[0] for _ in range(2))
        cos = torch.linalg.svdvals(a.T @ b).clamp(0, 1)
        dist[i] = torch.arccos(cos).square().sum().sqrt()
        ret[i] = cos.square().mean()
    return SubspaceNull(n, k, dist, ret, math.sqrt(k) * math.pi / 2)


def chance_retention(n: int, k: int) -> float:
    """Expected mean squared cosine of the principal angles between a fixed and a random k-dim subspace
    of R^n: k / n (a random unit vector keeps k / n of its energy in a fixed k-dim subspace).

    >>> chance_retention(3072, 5)
    0.0016276041666666667
    """
    _check_nk(n, k)
    return k / n


def random_directions_like(v: torch.Tensor, n_draws: int, *, seed: int = 0) -> torch.Tensor:
    """``n_draws`` random directions with the norm of ``v`` (any shape): (n_draws, *v.shape), uniform on
    the sphere of radius ||v||.

    >>> d = random_directions_like(torch.full((1, 2, 2), 2.0), 5)     # ||v|| = 4
    >>> d.shape, torch.allclose(d.flatten(1).norm(dim=1), torch.full((5,), 4.0, dtype=d.dtype))
    (torch.Size([5, 1, 2, 2]), True)
    """
    if not isinstance(v, torch.Tensor) or v.numel() == 0 or not bool(torch.isfinite(v).all()):
        raise ValueError("v must be a non-empty finite tensor")
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_draws, v.numel(), generator=g, dtype=torch.float64)
    z = z / z.norm(dim=1, keepdim=True) * v.double().norm()
    return z.reshape(n_draws, *v.shape).to(v.dtype if v.is_floating_point() else torch.float64)


def _upper(m: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(m.shape[0], 1)
    return m[i, j]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else float("nan")


def mantel_test(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, *, n_perm: int = 999, seed: int = 0,
                alternative: str = "greater", method: str = "spearman") -> tuple[float, float]:
    """(r, p): correlation of the upper triangles of two symmetric (P, P) distance matrices over the same
    P objects, and its permutation p-value (objects of ``b`` relabelled, rows and columns together;
    ``p = (1 + #{r_perm >= r}) / (1 + n_perm)`` for ``alternative="greater"``, "less" the other way).
    method: "spearman" (ranks of the pair distances) or "pearson".

    >>> x = np.arange(6.0)
    >>> d = np.abs(x[:, None] - x[None, :])
    >>> r, p = mantel_test(d, d ** 2, n_perm=199)
    >>> round(r, 6), p < 0.05
    (1.0, True)
    """
    a = np.asarray(a.detach().cpu().double() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu().double() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape != b.shape:
        raise ValueError(f"mantel_test needs two square matrices of the same shape, got {a.shape} and {b.shape}")
    if a.shape[0] < 4:
        raise ValueError(f"mantel_test needs at least 4 objects (P x P matrices), got P={a.shape[0]}")
    if alternative not in ("greater", "less") or method not in ("spearman", "pearson"):
        raise ValueError(f"alternative must be 'greater' or 'less' and method 'spearman' or 'pearson', got "
                         f"{alternative!r}, {method!r}")
    from scipy.stats import rankdata

    rank: Callable[[np.ndarray], np.ndarray] = rankdata if method == "spearman" else (lambda u: u)
    ua = rank(_upper(a))
    rb = np.zeros_like(b)              # b's pair values as ranks, once: relabelling objects keeps the ranks
    i, j = np.triu_indices(b.shape[0], 1)
    rb[i, j] = rb[j, i] = rank(_upper(b))
    r = _pearson(ua, rb[i, j])
    rng = np.random.default_rng(seed)
    perms = np.stack([rng.permutation(a.shape[0]) for _ in range(n_perm)])      # (n_perm, P)
    pb = rb[perms[:, i], perms[:, j]]                                            # (n_perm, pairs)
    ca = ua - ua.mean()
    cb = pb - pb.mean(1, keepdims=True)
    den = np.sqrt((ca * ca).sum() * (cb * cb).sum(1))
    rp = np.where(den > 0, (cb @ ca) / np.where(den > 0, den, 1.0), np.nan)
    count = int(np.sum(rp >= r - 1e-12)) if alternative == "greater" else int(np.sum(rp <= r + 1e-12))
    return r, (1 + count) / (1 + n_perm)


def ddim_shift_gain(alpha_t: float, alpha_prev: float) -> tuple[float, float]:
    """(symmetric, asymmetric): the factor by which a shift d of eps moves x_{t-1} in one deterministic
    DDIM step x_{t-1} = sqrt(a') (x_t - sqrt(1 - a) eps) / sqrt(a) + sqrt(1 - a') eps, when d enters both
    terms (symmetric) or the x0 prediction only (asymmetric, Asyrp's process); a, a' are the
    cumulative alphas at t and t-1 (a < a'). The symmetric factor is the small difference of the two.

    >>> s, a = ddim_shift_gain(0.5, 0.6)
    >>> round(s, 4), round(a, 4), abs(s) < abs(a)
    (-0.1421, -0.7746, True)
    """
    if not (0 < alpha_t < 1 and 0 < alpha_prev <= 1):
        raise ValueError(f"cumulative alphas must lie in (0, 1], got {alpha_t}, {alpha_prev}")
    asym = -math.sqrt(alpha_prev) * math.sqrt(1 - alpha_t) / math.sqrt(alpha_t)
    return asym + math.sqrt(1 - alpha_prev), asym


def random_tangent_directions(v: torch.Tensor, n_draws: int, *, seed: int = 0) -> torch.Tensor:
    """``n_draws`` unit vectors uniform on the unit sphere of span(v): (n_draws, n) float64, for v (k, n)
    with orthonormal rows (a local basis' ``v_flat``): Gaussian coordinates, normalised, mapped by v.

    >>> d = random_tangent_directions(torch.eye(4)[:2], 3)
    >>> d.shape, bool(d[:, 2:].abs().max() == 0), torch.allclose(d.norm(dim=1), torch.ones(3, dtype=d.dtype))
    (torch.Size([3, 4]), True, True)
    """
    if not isinstance(v, torch.Tensor) or v.dim() != 2 or v.numel() == 0 or not bool(torch.isfinite(v).all()):
        raise ValueError("v must be a finite (k, n) tensor of orthonormal rows (a basis' v_flat)")
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(n_draws, v.shape[0], generator=g, dtype=torch.float64)
    return (c / c.norm(dim=1, keepdim=True)) @ v.double()


def nearest_cosine(v: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """|cosine| of each direction d (m, n) with its nearest row of v (k, n, orthonormal rows): (m,) float64,
    max_i |<v_i, d>| / ||d||. 1: d is a basis vector; 1/sqrt(k) at least for d inside span(v).

    >>> nearest_cosine(torch.eye(3)[:2], torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 1.0]])).tolist()
    [0.8, 0.0]
    """
    if v.dim() != 2 or d.dim() != 2 or v.shape[1] != d.shape[1]:
        raise ValueError(f"need v (k, n) and d (m, n) in the same space, got {tuple(v.shape)} and {tuple(d.shape)}")
    dd = d.double()
    return (dd @ v.double().T).abs().max(1).values / dd.norm(dim=1).clamp_min(1e-300)
