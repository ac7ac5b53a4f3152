"""Reference values the dashboards print under their figures, computed rather than typed in.

- :func:`random_subspace_distance`: the Grassmann distance between two random k-dimensional
  subspaces of R^D (uniform on the Grassmannian: orthonormalised Gaussian matrices), the value a
  basis distance would take if the two bases had nothing in common. For k = 6 in the 3,072
  dimensions of a 3x32x32 image it is close to its ceiling sqrt(6) pi / 2.
- :func:`sampler_settings`: the sampler settings a dashboard uses for a text model: the model's
  own choice of eps in the DDIM direction term when it carries one, else the clipped eps, and the
  guidance range over which that setting keeps the prompted attribute (:data:`GUIDANCE_MAX`).

>>> 1.5 < random_subspace_distance(3072, 1, n=4) <= 3.1416 / 2   # one angle, nearly a right angle
True
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from diffgeo.evaluation.nulls import random_subspace_null

__all__ = ["random_subspace_distance", "sampler_settings", "GUIDANCE_MAX"]

#: Largest guidance of the text dashboards' slider. Measured with the shapes reader on
#: ``shapes-text`` (tests/test_controls.py checks it on fresh seeds): with the clipped eps the
#: prompted colour of the shape is read at every guidance from 1 to 7; with the raw eps it turns
#: into its complement from about 2.5 (issue 29), which is why the clipped eps is the default.
GUIDANCE_MAX = 7.0


@lru_cache(maxsize=32)
def random_subspace_distance(dim: int, k: int, n: int = 8, seed: int = 0) -> float:
    """Mean Grassmann distance between ``n`` pairs of random k-dimensional subspaces of R^dim.

    >>> 0 < random_subspace_distance(50, 2, n=2) <= 2 ** 0.5 * 3.1416 / 2
    True
    """
    return float(random_subspace_null(dim, k, n_draws=n, seed=seed).distance.mean())


def sampler_settings(model: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`diffgeo.sample` for a dashboard: always the clipped eps
    (``use_clipped_model_output=True``), the setting that keeps the prompted colour over the whole
    guidance range (see :data:`GUIDANCE_MAX`); it is also the embedded models' own default
    (``Model.clipped_eps`` from :mod:`diffgeo.models.zoo`), and a no-op for schedulers that do not clip.

    >>> import diffgeo
    >>> sampler_settings(diffgeo.load("shapes-text"))
    {'use_clipped_model_output': True}
    """
    return {"use_clipped_model_output": True}
