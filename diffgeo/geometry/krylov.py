"""The block Krylov solver for the top-k singular triplets of J, as a state machine fed with products.

:class:`KrylovSolver` holds the state of one point's solve and never calls J itself: it says which
block of vectors it needs next (``pending``, (b, n)) and takes ``J Q`` and ``J^T J Q`` for that block
(:meth:`KrylovSolver.feed`). :func:`~diffgeo.geometry.basis.local_basis` drives one solver with the
products of one point; :func:`~diffgeo.geometry.batched.local_bases` drives many, stacking their
pending blocks into one batched product, so the arithmetic per point is the same in both.

Method: block Lanczos on ``J^T J`` with full reorthogonalisation and Rayleigh-Ritz on ``J Q`` (float64
Gram matrix); warm starts use the Ritz residuals of the unconverged vectors as the next block (block
Davidson without preconditioning). It stops when every relative residual
``||J^T J v - s^2 v|| / s^2 <= tol``, after ``max_iter`` blocks, or when Q spans the whole space.

>>> import torch
>>> A = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64))
>>> solver = KrylovSolver(4, 4, 2, block=2, tol=1e-6, max_iter=10, seed=0, dtype=torch.float64,
...                       device=torch.device("cpu"))
>>> while not solver.done:
...     q = solver.pending
...     solver.feed(q @ A.T, q @ A.T @ A)
>>> solver.s
tensor([4., 3.], dtype=torch.float64)
"""

from __future__ import annotations

import torch

__all__ = ["KrylovSolver", "orthonormalise_against", "WARM_GUARD"]

# Random vectors added to a warm start. The complement of the top-k right singular space is invariant
# under J^T J, so a start orthogonal to the answer would otherwise stay orthogonal to it and converge,
# with small residuals, to the wrong singular vectors; the guards give the Ritz vectors components along
# the answer, which the residual blocks then grow. Two cost 4 products per basis
# (benchmarks/README.md, "Bases along a trajectory").
WARM_GUARD = 2


def orthonormalise_against(new: torch.Tensor, q: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
    """Rows of ``new`` (b, n) made orthonormal and orthogonal to the rows of ``q`` (d, n) (CGS2 + QR).

    Directions lost to cancellation (the Krylov space became invariant) are replaced by random
    ones from ``gen`` (a CPU generator), so the space keeps growing (needed for maps of low rank or
    repeated singular values). Returns (b, n) on ``new``'s device and dtype.

    >>> out = orthonormalise_against(torch.tensor([[1.0, 1.0, 0.0]]), torch.eye(3)[:1], torch.Generator())
    >>> out.abs()
    tensor([[0., 1., 0.]])
    """
    dtype = new.dtype
    thresh = 1e3 * torch.finfo(dtype).eps
    out = new
    for _attempt in range(3):
        norms = out.norm(dim=1).clamp_min(torch.finfo(dtype).tiny)
        for _ in range(2):
            if q is not None and q.shape[0]:
                out = out - (out @ q.T) @ q
        qr_q, qr_r = torch.linalg.qr(out.double().T)
        keep = qr_r.diagonal().abs() > thresh * norms.double()
        if bool(keep.all()):
            return qr_q.T.to(dtype).contiguous()
        # replace the lost directions by random vectors and redo
        fresh = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(device=out.device, dtype=dtype)
        out = torch.where(keep[:, None].to(out.device), out, fresh)
    return torch.linalg.qr(out.double().T)[0].T.to(dtype).contiguous()


class KrylovSolver:
    """One point's block Krylov solve for the top-k right singular vectors of J (m x n).

    ``pending`` (b, n): the block whose products are needed next (None once ``done``);
    :meth:`feed` takes ``J Q`` (b, m) and ``J^T J Q`` (b, n) for it. Afterwards ``vq`` (k, n),
    ``uq`` = J v / s (k, m), ``s`` (k,), ``residuals`` (k,) are float64 on ``device``; ``iterations``
    and ``worst`` (the largest residual) say how it went. ``init`` (k0, n): a warm start. Random
    vectors come from a CPU generator seeded with ``seed``, so the start is the same on every device.
    """

    def __init__(self, n: int, m: int, k: int, *, block: int, tol: float, max_iter: int, seed: int,
                 dtype: torch.dtype, device: torch.device, init: torch.Tensor | None = None):
        self.n, self.m, self.k = n, m, k
        self.block, self.tol, self.max_iter = block, tol, max_iter
        self.dtype, self.device = dtype, device
        self.warm = init is not None
        self.gen = torch.Generator().manual_seed(seed)
        self.q_blocks: list[torch.Tensor] = []
        self.y_blocks: list[torch.Tensor] = []
        self.z_blocks: list[torch.Tensor] = []
        self.gram = torch.zeros(0, 0, dtype=torch.float64, device=device)  # Y Y^T = Q J^T J Q^T, float64
        self.iterations = 0
        self.worst = float("inf")
        self.done = False
        self.vq = self.uq = self.s = self.residuals = None
        if init is None:
            start = self._randn(min(block, n))
        else:  # the warm subspace plus a few random guard vectors (see WARM_GUARD)
            guard = min(WARM_GUARD, n - init.shape[0])
            start = torch.cat([init.to(device=device, dtype=dtype), self._randn(guard)])
        self.pending: torch.Tensor | None = orthonormalise_against(start, None, self.gen)

    def _randn(self, rows: int) -> torch.Tensor:
        return torch.randn(rows, self.n, generator=self.gen, dtype=torch.float64).to(device=self.device,
                                                                                     dtype=self.dtype)

    @property
    def size(self) -> int:
        """Vectors in the Krylov basis so far."""
        return int(self.gram.shape[0])

    def feed(self, yi: torch.Tensor, zi: torch.Tensor) -> None:
        """Take ``J Q`` (b, m) and ``J^T J Q`` (b, n) for ``pending``; set the next block or finish."""
        if self.done or self.pending is None:
            raise RuntimeError("KrylovSolver.feed called after the solve finished")
        qi, n, k = self.pending, self.n, self.k
        yi, zi = yi.to(device=self.device, dtype=self.dtype), zi.to(device=self.device, dtype=self.dtype)
        self.iterations += 1
        self.q_blocks.append(qi)
        self.y_blocks.append(yi)
        self.z_blocks.append(zi)
        y = torch.cat(self.y_blocks)
        cross = yi.double() @ y.double().T                      # (b, d)
        d_old = self.gram.shape[0]
        self.gram = torch.cat([torch.cat([self.gram, cross[:, :d_old].T], 1), cross], 0)
        d = self.gram.shape[0]
        if d < k and d < n:  # fewer Ritz vectors than asked for yet (block < k): grow first
            grow = zi if not self.warm else self._randn(k - d).to(zi)
            self.pending = orthonormalise_against(grow[: min(self.block if not self.warm else k - d, n - d)],
                                                  torch.cat(self.q_blocks), self.gen)
            return
        # Rayleigh-Ritz on span(Q): Q J^T J Q^T = Y Y^T = A diag(s^2) A^T; the Ritz vectors are
        # v = A^T Q (rows), J v = A^T Y, and J^T J v = A^T Z gives the residuals.
        evals, evecs = torch.linalg.eigh(self.gram)
        a = evecs[:, -k:].flip(1)
        s_sq = evals[-k:].flip(0).clamp_min(0)
        s = s_sq.sqrt()
        q, z = torch.cat(self.q_blocks), torch.cat(self.z_blocks)
        vq = a.T @ q.double()
        r = a.T @ z.double() - s_sq[:, None] * vq
        denom = torch.clamp(s_sq, min=float(evals[-1].clamp_min(0)) * 1e-12 + torch.finfo(torch.float64).tiny)
        residuals = r.norm(dim=1) / denom
        self.worst = float(residuals.max())
        self.vq, self.s, self.residuals = vq, s, residuals
        if self.worst <= self.tol or self.iterations >= self.max_iter or d >= n:
            self.uq = (a.T @ y.double()) / s.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
            self.done, self.pending = True, None
            self.q_blocks = self.z_blocks = []  # free the Krylov basis; y is folded into uq
            self.y_blocks = []
            return
        if not self.warm:
            self.pending = orthonormalise_against(zi[: min(self.block, n - d)], q, self.gen)
        else:  # residuals of the unconverged Ritz vectors, largest first
            todo = (residuals > self.tol).nonzero()[:, 0][: min(k, n - d)]
            self.pending = orthonormalise_against(r[todo].to(self.dtype), q, self.gen)

    @property
    def converged(self) -> bool:
        """True when every residual met ``tol`` (or Q spans the whole space)."""
        return self.done and (self.worst <= self.tol or self.size >= self.n)
