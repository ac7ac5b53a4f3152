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
    guidance scale for the artefact; units: (claim id, n) pairs, the units a claim's own analysis draws
    where it does not share them (claims 5d, 7a-h, 9; :mod:`diffgeo.analyses.sizing` says why each n)."""

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
    units: tuple[tuple[str, int], ...] = ()

    def n_for(self, claims: Sequence[str], default: int) -> int:
        """The units an analysis draws for ``claims``: the largest of their ``units`` entries, else ``default``.

        >>> p = Preset("p", 6, 10, 4, 5, 1e-3, 6, 5, 4, 32, units=(("7a", 40), ("7b", 24)))
        >>> p.n_for(["7a", "7b"], 16), p.n_for(["9"], 6)
        (40, 6)
        """
        given = [n for c, n in self.units if c in claims]
        return max(given) if given else int(default)

    def timesteps(self, grid: Sequence[int]) -> list[int]:
        """n_t timesteps of the DDIM grid (descending, the clean end excluded)."""
        grid = [int(t) for t in grid if int(t) >= 0]
        if self.n_t >= len(grid):
            return grid
        idx = torch.linspace(0, len(grid) - 1, self.n_t).round().long().tolist()
        return [grid[i] for i in idx]


PRESETS = {
    # the papers' 20 timesteps and k = 50; each claim's n from the fast run's interval (issue 27,
    # diffgeo.analyses.sizing.plan: n_fast (hw_fast / hw_target)^2, hw_target a third of the excess, half its
    # distance from a bound / margin, or half hw_fast where fast was inconclusive): bases 9 (4b; 1-4c and 5b
    # need 6), 5a/5e/5f all 12 prompts there are, 5c 128 seeds, 6a-c 8 segments, and in ``units`` 5d 24, 7a-f 64
    # (7c's; 7a 44, 7b 23), 7g-h 16 drawn (~12 not already blue; 12 suffice), 9 24. One thread: ~1.8 CPU-hours,
    # from CPU seconds per unit at these settings: sample of 1-4c 80, 5b 103, 5d 90, prompt of 5e/5f 142, segment
    # 30, image of 7a-f 4.3 (+9), 7g-h 0.6 (+61 training), 9 2.4 + pairs; in-process parts (4b/4c edits, 5d,
    # 7, 9: ~50 min) do not spread over Dask workers. The sizes assume fast's effects carry over to k = 50 and 20 t.
    "full": Preset("full", n_samples=9, steps=20, n_t=20, k=50, tol=1e-3, n_prompts=12, n_pairs=8, n_points=9,
                   n_guidance=128, units=(("5d", 24), ("7a", 64), ("7b", 64), ("7c", 64), ("7d", 64), ("7e", 64),
                                          ("7f", 64), ("7g", 16), ("7h", 16), ("9", 24))),
    # make demo: 328 CPU-seconds on one thread (issue 27, all analyses, fresh cache); n_pairs 5: the rules' minimum
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
