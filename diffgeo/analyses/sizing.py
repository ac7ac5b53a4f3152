"""How many units each claim's interval needs, from a smaller run's interval: the full preset's sizes.

A bootstrap interval of a mean-like statistic narrows as 1/sqrt(n), so a run with n units and
half-width hw reaches the half-width ``target`` at about ``n (hw / target)^2`` units
(:func:`units_needed`). The target half-width of each claim is fixed by its rule
(:func:`target_half_width`):

- excess rule: a third of |excess| (the interval then excludes 0 with room to spare);
- bound rule: half the distance of the excess from the claim's bound;
- equivalence rule: half the distance of |excess| from the margin;
- an excess within its own half-width of that decision point (an inconclusive claim): half the
  current half-width, i.e. 4x the units: a design step, not a guarantee of a verdict;
- permutation rule (Mantel): all the objects there are (the caller's cap).

:func:`plan` applies these to a claims table (``claims.json``'s list) and caps each n. Claims of
untrained designs (untestable, skipped) get no n.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from diffgeo.analyses.rules import BOUNDS, MIN_UNITS

__all__ = ["units_needed", "target_half_width", "plan"]


def units_needed(n: int, half_width: float, target: float) -> int:
    """ceil(n (half_width / target)^2), at least ``MIN_UNITS``: the units for the half-width ``target``.

    >>> units_needed(6, 0.2, 0.1), units_needed(6, 0.05, 0.1)
    (24, 6)
    """
    if n < 1 or not (half_width >= 0) or not (target > 0):
        raise ValueError(f"need n >= 1, half_width >= 0 and target > 0, got {n}, {half_width}, {target}")
    return max(MIN_UNITS, n if half_width <= target else math.ceil(n * (half_width / target) ** 2))


def _rule(claim: dict[str, Any]) -> str:
    return str(claim.get("rule_version", "")).split(" ")[0]


def target_half_width(claim: dict[str, Any]) -> float:
    """The half-width the claim's rule needs (module docstring), from its excess and interval; NaN when it has
    no interval (a permutation test, an unmeasured claim).

    >>> c = {"id": "x", "excess": 0.3, "ci_low": 0.15, "ci_high": 0.45, "rule_version": "excess v1 (...)"}
    >>> round(target_half_width(c), 6), round(target_half_width({**c, "ci_low": -0.1, "ci_high": 0.7}), 6)
    (0.1, 0.2)
    """
    ex, lo, hi = (float(claim.get(k, float("nan"))) for k in ("excess", "ci_low", "ci_high"))
    if not all(math.isfinite(v) for v in (ex, lo, hi)):
        return float("nan")
    hw, rule = (hi - lo) / 2, _rule(claim)
    if rule == "excess":
        gap = abs(ex) / 3
    elif rule == "bound":
        gap = abs(ex - BOUNDS[claim["id"]]) / 2
    elif rule == "equivalence":
        gap = abs(BOUNDS[claim["id"]] - abs(ex)) / 2
    else:
        return float("nan")
    if rule == "excess" and abs(ex) <= hw or rule != "excess" and 2 * gap <= hw:
        return hw / 2
    return gap


def plan(claims: Sequence[dict[str, Any]], caps: dict[str, int] | None = None, default_cap: int = 256
         ) -> dict[str, int]:
    """claim id -> units needed (:func:`units_needed` at :func:`target_half_width`), capped by ``caps[id]`` or
    ``default_cap``; permutation claims get their cap; claims without n or interval are left out.

    >>> rows = [{"id": "a", "n": 6, "excess": 0.3, "ci_low": 0.15, "ci_high": 0.45, "rule_version": "excess v1"},
    ...         {"id": "m", "n": 6, "excess": 0.4, "ci_low": float("nan"), "ci_high": float("nan"),
    ...          "rule_version": "permutation v1"}]
    >>> plan(rows, {"m": 12})          # a: 6 (0.15 / 0.1)^2 = 13.5
    {'a': 14, 'm': 12}
    """
    caps = caps or {}
    out: dict[str, int] = {}
    for c in claims:
        cid, n = str(c["id"]), int(c.get("n", 0))
        cap = caps.get(cid, default_cap)
        if n < 1:
            continue
        if _rule(c) == "permutation":
            out[cid] = cap
            continue
        target = target_half_width(c)
        if math.isfinite(target) and target > 0:
            hw = (float(c["ci_high"]) - float(c["ci_low"])) / 2
            out[cid] = min(cap, units_needed(n, hw, target))
    return out
