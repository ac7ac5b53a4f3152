"""The result of every DDIM run (sampling, denoising, inversion, edits): :class:`Trajectory`.

>>> import torch
>>> traj = Trajectory(torch.tensor([500, -1]), torch.zeros(2, 1, 3), torch.zeros(1, 1, 3), {"model": "toy"})
>>> traj.result.shape, traj.timesteps.tolist()
(torch.Size([1, 3]), [500, -1])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from diffgeo.core.io import load_tensors_json, save_tensors_json

__all__ = ["Trajectory"]


@dataclass(frozen=True)
class Trajectory:
    """A DDIM path. S steps, B samples.

    timesteps: (S+1,) int64, the timestep of each state (``-1`` = clean end);
    xs: (S+1, B, *x_shape), ``xs[0]`` the start and ``xs[-1]`` the result;
    x0_preds: (S, B, *x_shape), the x0 predicted at each step;
    meta: how it was made (model, eta, seed, direction).

    >>> import tempfile, os
    >>> traj = Trajectory(torch.tensor([500, -1]), torch.ones(2, 1, 3), torch.ones(1, 1, 3), {"eta": 0.0})
    >>> with tempfile.TemporaryDirectory() as d:
    ...     back = Trajectory.load(traj.save(os.path.join(d, "t.safetensors")))
    >>> torch.equal(back.xs, traj.xs), back.meta["eta"]
    (True, 0.0)
    """

    timesteps: torch.Tensor  # (S + 1,)
    xs: torch.Tensor  # (S + 1, B, *x_shape)
    x0_preds: torch.Tensor  # (S, B, *x_shape)
    meta: dict = field(default_factory=dict)

    @property
    def result(self) -> torch.Tensor:
        """The final state, (B, *x_shape).

        >>> Trajectory(torch.tensor([0, -1]), torch.arange(4.0).view(2, 1, 2), torch.zeros(1, 1, 2)).result
        tensor([[2., 3.]])
        """
        return self.xs[-1]

    def save(self, path: str | Path) -> Path:
        """Save as one safetensors file with the metadata inside (atomic); returns the path written.

        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = Trajectory(torch.tensor([0, -1]), torch.zeros(2, 1, 2), torch.zeros(1, 1, 2)).save(
        ...         os.path.join(d, "t.safetensors"))
        ...     p.name
        't.safetensors'
        """
        return save_tensors_json(path, {"timesteps": self.timesteps, "xs": self.xs, "x0_preds": self.x0_preds},
                                 {"kind": "Trajectory", **self.meta})

    @classmethod
    def load(cls, path: str | Path) -> "Trajectory":
        """Load a trajectory written by :meth:`save` (refuses files of another kind).

        >>> import tempfile, os
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = Trajectory(torch.tensor([0, -1]), torch.zeros(2, 1, 2), torch.zeros(1, 1, 2)).save(
        ...         os.path.join(d, "t.safetensors"))
        ...     Trajectory.load(p).xs.shape
        torch.Size([2, 1, 2])
        """
        tensors, meta = load_tensors_json(path, kind="Trajectory")
        missing = sorted({"timesteps", "xs", "x0_preds"} - set(tensors))
        if missing:
            raise ValueError(f"{path} is not a whole Trajectory: it has no {', '.join(missing)}")
        _check_shapes(tensors["timesteps"], tensors["xs"], tensors["x0_preds"], str(path))
        return cls(tensors["timesteps"], tensors["xs"], tensors["x0_preds"], meta)


def _check_shapes(timesteps: torch.Tensor, xs: torch.Tensor, x0_preds: torch.Tensor, where: str) -> None:
    """timesteps (S+1,), xs (S+1, B, ...), x0_preds (S, B, ...) with the same B and sample shape: files
    written before the content record (format 1) are not checked by :mod:`diffgeo.core.io`."""
    ok = (timesteps.dim() == 1 and xs.dim() >= 2 and x0_preds.dim() == xs.dim()
          and xs.shape[0] == timesteps.shape[0] and x0_preds.shape[0] == xs.shape[0] - 1
          and x0_preds.shape[1:] == xs.shape[1:])
    if not ok:
        raise ValueError(f"{where} is not a consistent Trajectory: timesteps {tuple(timesteps.shape)}, xs "
                         f"{tuple(xs.shape)} and x0_preds {tuple(x0_preds.shape)} must be (S+1,), (S+1, B, ...) and "
                         "(S, B, ...); the file was changed or written by something else")
