"""What every analysis shares: claims with verdicts, the bootstrap, presets, bases along trajectories.

A :class:`Claim` is one sentence of a paper, one number measured here, its bootstrap 95%
interval and a verdict from a rule fixed in code before any number was seen (the rule's text
travels with the claim). The rules live next to each claim in its analysis module and use the
helpers below; nothing tunes them after a run.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch

from diffgeo.core.progress import progress_bar
from diffgeo.geometry.basis import LocalBasis, local_basis
from diffgeo.models.loading import load

__all__ = ["Claim", "Preset", "PRESETS", "bootstrap_ci", "sign_verdict", "bases_along", "load_model",
           "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "SKIPPED"]

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, SKIPPED = "reproduced", "not reproduced", "inconclusive", "skipped"


@dataclass(frozen=True)
class Claim:
    """One claim as measured: ``value`` of the statistic over ``n`` resampled units (``unit``), the
    verdict of ``rule`` (a sentence fixed in code before the run, versioned in ``rule_version``).

    With a null (:mod:`diffgeo.analyses.rules`): ``null`` says what the statistic is compared with,
    ``null_value`` its value, ``excess`` the effect over the null, and [ci_low, ci_high] is the 95%
    interval of the excess; without one (older claims) the interval is of ``value``. ``source``:
    the paper and where the sentence stands in it."""

    id: str
    analysis: str
    model: str
    sentence: str
    statistic: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    rule: str
    verdict: str
    note: str = ""
    source: str = ""
    null: str = ""
    null_value: float = float("nan")
    excess: float = float("nan")
    unit: str = ""
    rule_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DistanceBand:
    """dist: Grassmann distances between bases ((T, N, N) between samples, (N, T) between branches);
    mean / low / high (T,): the normalised mean over t with its 95% bootstrap interval;
    max_distance: sqrt(k) pi / 2, the largest distance two k-dimensional subspaces can have."""

    model: str
    ts: list[int]
    dist: torch.Tensor
    mean: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    max_distance: float
    claim: Claim


def skipped_claim(id: str, analysis: str, model: str, sentence: str, reason: str) -> Claim:
    """A claim that could not be measured, with the reason (no number, verdict ``skipped``).

    >>> c = skipped_claim("5a", "text", "shapes", "Similar prompts ...", "shapes is unconditional")
    >>> c.verdict, c.n, c.value != c.value
    ('skipped', 0, True)
    """
    nan = float("nan")
    return Claim(id, analysis, model, sentence, "not measured", nan, nan, nan, 0, "", SKIPPED, reason)


def bootstrap_ci(units: Sequence[Any] | int, statistic: Callable[[torch.Tensor], float], *, n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(value, low, high): the statistic on all units and its percentile bootstrap interval.

    ``units``: the number N of independent units (samples, pairs), or a sequence of them;
    ``statistic(idx)`` gets a LongTensor of N unit indices (resampled with replacement; all of
    them, in order, for the value). Resamples where the statistic is undefined (NaN) are dropped.

    >>> x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    >>> v, lo, hi = bootstrap_ci(4, lambda i: float(x[i].mean()))
    >>> v, lo <= v <= hi
    (2.5, True)
    """
    n = units if isinstance(units, int) else len(units)
    if n < 1:
        raise ValueError("bootstrap_ci needs at least one unit")
    value = float(statistic(torch.arange(n)))
    g = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(n_boot):
        s = float(statistic(torch.randint(0, n, (n,), generator=g)))
        if s == s:
            draws.append(s)
    if not draws:
        return value, float("nan"), float("nan")
    d = torch.tensor(draws, dtype=torch.float64)
    alpha = (1 - level) / 2
    return value, float(torch.quantile(d, alpha)), float(torch.quantile(d, 1 - alpha))


def sign_verdict(low: float, high: float, expected_sign: int) -> str:
    """The default rule: reproduced when the 95% interval excludes 0 on the expected side, not
    reproduced when it excludes 0 on the other side, inconclusive when it contains 0 (or is NaN).

    >>> sign_verdict(0.1, 0.3, +1), sign_verdict(-0.3, -0.1, +1), sign_verdict(-0.1, 0.2, +1)
    ('reproduced', 'not reproduced', 'inconclusive')
    """
    if not (low == low and high == high):
        return INCONCLUSIVE
    if expected_sign * low > 0 and expected_sign * high > 0:
        return REPRODUCED
    if expected_sign * low < 0 and expected_sign * high < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


SIGN_RULE = ("reproduced if the 95% bootstrap interval excludes 0 on the claimed side; not reproduced if it "
             "excludes 0 on the other side; otherwise inconclusive")


@dataclass(frozen=True)
class Preset:
    """Sizes of one report run. n_samples: trajectories per model; steps: DDIM steps of each
    trajectory; n_t: timesteps (evenly spaced on the DDIM grid, first and last included) at which
    bases are taken; k: basis size; tol: local_basis tolerance; n_prompts: prompts for 5a;
    n_pairs / n_points: segments and points per segment for curvedness; n_guidance: samples per
    guidance scale for the artefact."""

    name: str
    n_samples: int
    steps: int
    n_t: int
    k: int
    tol: float
    n_prompts: int
    n_pairs: int
    n_points: int
    n_guidance: int

    def timesteps(self, grid: Sequence[int]) -> list[int]:
        """n_t timesteps of the DDIM grid (descending, the clean end excluded)."""
        grid = [int(t) for t in grid if int(t) >= 0]
        if self.n_t >= len(grid):
            return grid
        idx = torch.linspace(0, len(grid) - 1, self.n_t).round().long().tolist()
        return [grid[i] for i in idx]


PRESETS = {
    # the papers' 20 timesteps and k = 50, with n from the interval widths of the fast run (issue 27): at n = 6 the
    # widest BCa half-widths relative to their excess (4b, 8, 6a-c) call for n >= 9 samples / 7 segments for a
    # half-width of a third of the effect; 24 samples (intervals half as wide as fast's) and 12 segments leave room
    # for the smaller effects at k = 50; 12 prompts give the Mantel test 66 pairs. About 6-7 CPU-hours on one
    # thread (fast's CPU times scaled linearly: 200x the bases, 20x the curvedness); the papers' 100 samples
    # would be about 4x that.
    "full": Preset("full", n_samples=24, steps=20, n_t=20, k=50, tol=1e-3, n_prompts=12, n_pairs=12, n_points=9,
                   n_guidance=256),
    # make demo: about 3.5 CPU-minutes on one thread (issue 27); n_pairs 5: the rules' minimum units
    "fast": Preset("fast", n_samples=6, steps=10, n_t=4, k=5, tol=1e-3, n_prompts=6, n_pairs=5, n_points=4,
                   n_guidance=32),
    # the tests: seconds
    "tiny": Preset("tiny", n_samples=3, steps=4, n_t=3, k=2, tol=1e-3, n_prompts=3, n_pairs=2, n_points=3,
                   n_guidance=4),
}


@functools.lru_cache(maxsize=4)
def load_model(name_or_path: str) -> Any:
    """``load`` once per process (sweep workers load each model once).

    >>> load_model("digits") is load_model("digits"), load_model("digits").name
    (True, 'digits')
    """

    return load(name_or_path)


#: warm-started bases along a trajectory use tol / this to match a cold basis' accuracy at tol
WARM_TOL_DIVISOR = 3.0


def bases_along(model: Any, traj_or_xs: Any, ts: Sequence[int], k: int, *, sample: int = 0, warm: bool = True,
                tol: float = 1e-3, seed: int = 0, progress: bool = False, **map_kwargs: Any) -> list[LocalBasis]:
    """Local bases at several timesteps of one trajectory, each warm-started from the previous one.

    ``traj_or_xs``: a :class:`~diffgeo.sampling.trajectory.Trajectory` (the states at ``ts`` are taken from
    sample ``sample``; each t must be on its grid) or a tensor (len(ts), *x_shape) of the points.
    ``ts``: timesteps, in the order to visit them; the warm-started bases stop at ``tol / 3``
    (:data:`WARM_TOL_DIVISOR`), the accuracy a cold basis reaches at ``tol``. Keywords go to :func:`~local_basis`
    (prompt, branch, ...). Returns one :class:`~LocalBasis` per t.

    >>> from diffgeo.sampling.ddim import sample
    >>> model = load("digits")
    >>> traj = sample(model, 1, steps=4, seed=0, progress=False)
    >>> bases = bases_along(model, traj, [750, 500], 1, tol=1e-2)
    >>> [b.t for b in bases], bases[1].meta["warm"]
    ([750, 500], True)
    """
    ts = [int(t) for t in ts]
    if hasattr(traj_or_xs, "timesteps") and hasattr(traj_or_xs, "xs"):
        grid = [int(t) for t in traj_or_xs.timesteps]
        missing = [t for t in ts if t not in grid]
        if missing:
            raise ValueError(f"timesteps {missing} are not on the trajectory's grid {grid}")
        xs = [traj_or_xs.xs[grid.index(t), sample] for t in ts]
    elif isinstance(traj_or_xs, torch.Tensor):
        if traj_or_xs.shape[0] != len(ts):
            raise ValueError(f"traj_or_xs holds {traj_or_xs.shape[0]} points but ts has {len(ts)} timesteps")
        xs = list(traj_or_xs)
    else:
        raise TypeError(f"traj_or_xs must be a Trajectory or a tensor (len(ts), *x_shape), got {type(traj_or_xs).__name__}")

    out: list[LocalBasis] = []
    for x, t in progress_bar(list(zip(xs, ts)), desc=f"bases k={k}", progress=progress, leave=False):
        init = out[-1] if (warm and out) else None
        # a warm run stops each vector just under tol where a cold one overshoots in its last block:
        # tol / WARM_TOL_DIVISOR gives the cold basis' accuracy (benchmarks/bench_trajectory_basis.py)
        step_tol = tol / WARM_TOL_DIVISOR if init is not None else tol
        out.append(local_basis(model, x, t, k, tol=step_tol, seed=seed, progress=False, init=init, **map_kwargs))
    return out
