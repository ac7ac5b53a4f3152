"""Geometry of local bases: subspace distances, frequency content and parallel transport.

Subspaces are given as a :class:`~diffgeo.geometry.basis.LocalBasis` (its v) or as a tensor (k, ...)
whose rows span the subspace (orthonormalised here). Principal angles
``0 <= theta_1 <= ... <= theta_k <= pi/2`` come from the SVD of ``A B^T`` (cosines) and of the
part of B orthogonal to A (sines), whichever is accurate for each angle.

>>> import torch
>>> a = torch.eye(4)[:2]                       # span(e1, e2)
>>> b = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 1.0, 0]])
>>> principal_angles(a, b)                      # 0 and 45 degrees
tensor([0.0000, 0.7854], dtype=torch.float64)
>>> round(grassmann_distance(a, b), 4), round(projection_distance(a, b), 4)
(0.7854, 0.7071)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from diffgeo.core.checks import check_int, check_tensor
from diffgeo.geometry.basis import LocalBasis

__all__ = ["principal_angles", "grassmann_distance", "projection_distance", "distance_matrix",
           "radial_power_spectrum", "spectral_centroid", "transport", "transport_agreement"]

BasisLike = LocalBasis | torch.Tensor


# -- subspaces ---------------------------------------------------------------------------------
def _rows(basis: BasisLike, name: str = "basis") -> torch.Tensor:
    """(k, n) float64 matrix of the spanning vectors (real, finite, k >= 1), checked as argument ``name``."""
    v = basis.v if isinstance(basis, LocalBasis) else basis
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a LocalBasis or a tensor (k, ...), got {type(basis).__name__}")
    if v.dim() < 2:
        raise ValueError(f"{name}: a subspace needs a tensor (k, ...) of spanning vectors, got shape {tuple(v.shape)}")
    check_tensor(v, name, floating=False)  # real, finite, not empty, not on the meta device
    return v.detach().reshape(v.shape[0], -1).to(torch.float64).cpu()


def _orthonormal(basis: BasisLike, name: str = "basis") -> torch.Tensor:
    """Orthonormal rows spanning the same subspace, (k, n) float64."""
    m = _rows(basis, name)
    q, r = torch.linalg.qr(m.T)
    diag = r.diagonal().abs()
    if m.shape[0] > m.shape[1] or bool((diag <= 1e-10 * diag.max().clamp_min(1e-300)).any()):
        raise ValueError(f"{name}: the {m.shape[0]} vectors are linearly dependent: they do not span a "
                         f"{m.shape[0]}-dimensional subspace")
    return q.T


def _angles_orthonormal(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    if qa.shape[1] != qb.shape[1]:
        raise ValueError(f"subspaces live in different spaces: dimension {qa.shape[1]} vs {qb.shape[1]}")
    if qa.shape[0] < qb.shape[0]:
        qa, qb = qb, qa  # angles of the smaller subspace qb to the larger qa
    cos = torch.linalg.svdvals(qb @ qa.T).clamp(0, 1)                      # descending
    sin = torch.linalg.svdvals(qb - (qb @ qa.T) @ qa).clamp(0, 1).flip(0)  # ascending
    small = cos > 1 / math.sqrt(2)
    return torch.where(small, torch.arcsin(sin), torch.arccos(cos))


def principal_angles(a: BasisLike, b: BasisLike) -> torch.Tensor:
    """Principal angles (radians, ascending) between span(a) and span(b): (min(k_a, k_b),) float64.

    a, b: LocalBasis or (k, ...) tensors of spanning vectors (need not be orthonormal).

    >>> principal_angles(torch.eye(3)[:2], torch.eye(3)[1:])
    tensor([0.0000, 1.5708], dtype=torch.float64)
    """
    return _angles_orthonormal(_orthonormal(a, "a"), _orthonormal(b, "b"))


def grassmann_distance(a: BasisLike, b: BasisLike) -> float:
    """Grassmann geodesic distance ``sqrt(sum theta_j^2)`` (0 to ``sqrt(k) pi/2``).

    >>> round(grassmann_distance(torch.eye(3)[:1], torch.eye(3)[1:2]), 4)
    1.5708
    """
    return float(principal_angles(a, b).square().sum().sqrt())


def projection_distance(a: BasisLike, b: BasisLike) -> float:
    """Projection (chordal) distance ``sqrt(sum sin^2 theta_j)`` (0 to ``sqrt(k)``); for equal k it is
    ``||P_a - P_b||_F / sqrt(2)``.

    >>> projection_distance(torch.eye(3)[:1], torch.eye(3)[1:2])
    1.0
    """
    return float(principal_angles(a, b).sin().square().sum().sqrt())


def distance_matrix(bases: Sequence[BasisLike], metric: str = "grassmann") -> torch.Tensor:
    """Pairwise distances (N, N) float64 between N subspaces; metric ``"grassmann"`` or ``"projection"``.

    >>> e = torch.eye(3)
    >>> distance_matrix([e[:1], e[1:2], e[:1]], "projection")
    tensor([[0., 1., 0.],
            [1., 0., 1.],
            [0., 1., 0.]], dtype=torch.float64)
    """
    if metric not in ("grassmann", "projection"):
        raise ValueError(f"metric must be 'grassmann' or 'projection', got {metric!r}")
    if isinstance(bases, (torch.Tensor, LocalBasis)) or not isinstance(bases, Sequence):
        raise TypeError(f"bases must be a list of LocalBasis or (k, ...) tensors, got {type(bases).__name__}")
    qs = [_orthonormal(b, f"bases[{i}]") for i, b in enumerate(bases)]
    n = len(qs)
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            theta = _angles_orthonormal(qs[i], qs[j])
            d = theta.square().sum().sqrt() if metric == "grassmann" else theta.sin().square().sum().sqrt()
            out[i, j] = out[j, i] = d
    return out


# -- frequency content -------------------------------------------------------------------------
def _images(v: BasisLike) -> torch.Tensor:
    x = v.v if isinstance(v, LocalBasis) else v
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4):
        raise ValueError("v: expected basis vectors as images (k, C, H, W) or (k, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    check_tensor(x, "v", floating=False)
    return (x if x.dim() == 4 else x[:, None]).detach().to(torch.float64).cpu()


def _radius(h: int, w: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    return (fy.square() + fx.square()).sqrt()  # cycles per pixel


def radial_power_spectrum(v: BasisLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum of each basis vector.

    v: LocalBasis or images (k, C, H, W) / (k, H, W). Power ``|FFT2|^2`` summed over channels,
    averaged over rings of radius ``r`` (in units of ``1/max(H, W)`` cycles per pixel, rounded).
    Returns ``(freqs (R,), power (k, R))``, freqs in cycles per pixel.

    >>> img = torch.cos(2 * torch.pi * 4 * torch.arange(32.0) / 32).expand(32, 32)[None]
    >>> freqs, power = radial_power_spectrum(img)
    >>> float(freqs[power[0].argmax()])
    0.125
    """
    x = _images(v)
    k, _, h, w = x.shape
    power = torch.fft.fft2(x).abs().square().sum(1).reshape(k, -1)      # (k, H*W)
    size = max(h, w)
    ring = torch.round(_radius(h, w) * size).long().reshape(-1)
    n_rings = int(ring.max()) + 1
    counts = torch.bincount(ring, minlength=n_rings).to(torch.float64)
    sums = torch.zeros(k, n_rings, dtype=torch.float64).index_add_(1, ring, power)
    keep = counts > 0
    return torch.arange(n_rings, dtype=torch.float64)[keep] / size, sums[:, keep] / counts[keep]


def spectral_centroid(v: BasisLike) -> torch.Tensor:
    """Power-weighted mean spatial frequency of each basis vector (cycles per pixel), (k,) float64.

    ``sum_f |f| P(f) / sum_f P(f)`` over all 2-D frequencies (the mean removed first, so a
    constant image does not count as low frequency). Low values: coarse directions; high: fine.

    >>> img = torch.cos(2 * torch.pi * 4 * torch.arange(32.0) / 32).expand(32, 32)[None]
    >>> spectral_centroid(img)
    tensor([0.1250], dtype=torch.float64)
    """
    x = _images(v)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().square().sum(1)                     # (k, H, W)
    r = _radius(*x.shape[-2:])
    total = power.sum(dim=(-2, -1))
    return (power * r).sum(dim=(-2, -1)) / total.clamp_min(torch.finfo(torch.float64).tiny)


# -- parallel transport ------------------------------------------------------------------------
def _coefficients(a: LocalBasis, direction: int | torch.Tensor) -> torch.Tensor:
    """Coordinates (k_a,) of a direction in A's latent basis."""
    if not isinstance(direction, torch.Tensor) or direction.dim() == 0:
        direction = check_int(direction, "direction")
        if not 0 <= direction < a.k:
            raise IndexError(f"direction index {direction} out of range for a basis of k={a.k}")
        c = torch.zeros(a.k, dtype=torch.float64)
        c[direction] = 1.0
        return c
    if isinstance(direction, torch.Tensor) and tuple(direction.shape) == tuple(a.v.shape[1:]):
        check_tensor(direction, "direction", floating=False, nonempty=False)
        return _flat64(a.v) @ direction.detach().reshape(-1).to(device="cpu", dtype=torch.float64)
    raise ValueError(f"direction must be an index into A's basis or a vector of shape {tuple(a.v.shape[1:])}")


def _flat64(x: torch.Tensor) -> torch.Tensor:
    """(k, ...) as a (k, n) float64 CPU matrix: transport computes on the CPU whatever devices the bases are on."""
    return x.detach().reshape(x.shape[0], -1).to(device="cpu", dtype=torch.float64)


def transport(a: LocalBasis, b: LocalBasis, direction: int | torch.Tensor, *, via: str = "h") -> torch.Tensor:
    """Move a direction of sample A into sample B's tangent space; returns a unit vector (*x_shape).

    ``direction``: an index i (A's v_i) or a vector in X (its part in span(V_A) is used, as
    coordinates c = V_A d). ``via="h"`` (Park et al.): map to H with A's tangent basis,
    ``u_A = U_A^T c``, project onto B's tangent space and read the coordinates in B's latent
    basis, ``V_B^T (U_B u_A)``; ``via="x"``: project in X, ``V_B^T V_B (V_A^T c)``. Both are
    normalised. Where the map is linear (A and B share their basis) both are the identity. A and B
    and the direction may be on different devices and dtypes (the arithmetic runs in float64 on the
    CPU); the result is on B's device, in B's dtype.

    >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    >>> from diffgeo.geometry.basis import exact_basis
    >>> ba = exact_basis(lambda x: A @ x, torch.zeros(3), None, 2)
    >>> bb = exact_basis(lambda x: A @ x, torch.ones(3), None, 2)
    >>> transport(ba, bb, 1)
    tensor([0., 1., 0.])
    """
    if via not in ("h", "x"):
        raise ValueError(f"via must be 'h' or 'x', got {via!r}")
    for name, basis in (("a", a), ("b", b)):
        if not isinstance(basis, LocalBasis):
            raise TypeError(f"{name} must be a LocalBasis (transport needs both its v and u), got "
                            f"{type(basis).__name__}")
    if tuple(a.v.shape[1:]) != tuple(b.v.shape[1:]):
        raise ValueError(f"bases live in different spaces: {tuple(a.v.shape[1:])} vs {tuple(b.v.shape[1:])}")
    c = _coefficients(a, direction)
    # rounding noise of the working precision is ~eps relative: sqrt(eps) (3.5e-4 in float32) tells it apart
    tol = max(torch.finfo(t.dtype).eps for t in (a.v, b.v) + ((direction,) if isinstance(direction, torch.Tensor)
                                                                 and direction.is_floating_point() else ())) ** 0.5
    if float(c.norm()) <= tol * (float(direction.norm()) if isinstance(direction, torch.Tensor) else 1.0):
        raise ValueError("the direction is orthogonal to A's tangent space: it has no coordinates to transport")
    vb = _flat64(b.v)
    if via == "h":
        u_a = _flat64(a.u).T @ c
        coords = _flat64(b.u) @ u_a
    else:
        coords = vb @ (_flat64(a.v).T @ c)
    out = vb.T @ coords
    norm = out.norm()
    if norm <= tol * max(float(c.norm()), 1e-300):
        raise ValueError("the direction is orthogonal to B's tangent space: its transport is zero")
    return (out / norm).to(device=b.v.device, dtype=b.v.dtype).reshape(b.v.shape[1:])


def transport_agreement(a: LocalBasis, b: LocalBasis) -> torch.Tensor:
    """|cosine| between the via-H and via-X transports of each of A's basis vectors, (k_a,) float64.

    1 means the two definitions agree; lower values say the tangent spaces of A and B are
    related differently in X and in H.

    >>> from diffgeo.geometry.basis import exact_basis
    >>> ba = exact_basis(lambda x: torch.tanh(x) * 2, torch.zeros(3), None, 2)
    >>> transport_agreement(ba, ba)
    tensor([1., 1.], dtype=torch.float64)
    """
    out = torch.empty(a.k, dtype=torch.float64)
    for i in range(a.k):
        th, tx = transport(a, b, i, via="h").double(), transport(a, b, i, via="x").double()
        out[i] = (th.reshape(-1) @ tx.reshape(-1)).abs()
    return out
