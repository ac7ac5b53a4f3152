"""The verdict rules of the report, fixed in code with a version, and how a claim is written down.

Every measured claim says: the paper's sentence and where it stands (``source``), the statistic,
its ``null`` (what the statistic is when the claimed effect is absent) and the null's value, the
effect as an ``excess`` over the null with its 95% interval (BCa bootstrap over ``unit``, or an
exact / permutation test), the number of units ``n``, and a verdict by one of the rules below.
A claim whose design cannot answer it here is ``untestable here`` with the reason, and a claim
measured on fewer than :data:`MIN_UNITS` units gets no verdict (``too few units``).

The rules' constants are hashed: :data:`RULE_VERSIONS` records, for each rule, the digest of
its constants at each version, and tests/test_claims.py fails when the constants change without a
new version being recorded. The version travels with each claim (``rule_version``).

>>> excess_verdict(0.1, 0.3, n=6, sign=+1), excess_verdict(0.1, 0.3, n=3, sign=+1)
('reproduced', 'too few units')
>>> rule_tag("excess")
'excess v1'
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from diffgeo.analyses._common import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim, sign_verdict

__all__ = ["UNTESTABLE", "TOO_FEW", "LEVEL", "MIN_UNITS", "ALPHA", "N_BOOT", "N_PERM", "BOUNDS", "RULE_CONSTANTS",
           "RULE_VERSIONS", "RULE_TEXT", "rule_digest", "rule_tag", "excess_verdict", "bound_verdict", "equivalence_verdict",
           "permutation_verdict", "measured_claim", "untestable_claim"]

UNTESTABLE = "untestable here"
TOO_FEW = "too few units"

LEVEL = 0.95        # two-sided interval level
MIN_UNITS = 5       # fewer resampled units: no verdict (a bootstrap over 2-4 units is not an interval)
ALPHA = 0.05        # one-sided level of the permutation tests
N_BOOT = 2000       # BCa resamples
N_PERM = 999        # permutations of a Mantel test
#: Bounds of the bound rule, per claim, on the claim's excess (fixed before any data was computed).
BOUNDS = {
    "4": 0.5,       # normalised retention above chance (0 = chance k/n, 1 = identical): "does not carry over" < 0.5
    "7a": 0.5,      # coefficient of variation of per-image effects: "alike" = spread under half the mean effect
    "7b": 0.1,      # 1 - R^2 over strengths: "linear" = a line leaves under 10% of the variance over strengths
    "7c": 0.25,     # |interaction / main effect| (equivalence margin): "combines" = under a quarter of the effect
    "7e": 0.25,     # |effect ratio - 1| (equivalence margin): "consistent" = within 25% of the per-t effect
    "7g": 0.25,     # |global dh effect / per-sample f_t effect - 1| (equivalence margin), 7e's margin (v2)
    "7h": 0.5,      # coefficient of variation of the learned f_t's per-image effects, 7a's bound (v2)
}

RULE_CONSTANTS: dict[str, dict[str, Any]] = {
    "excess": {"level": LEVEL, "min_units": MIN_UNITS, "n_boot": N_BOOT},
    "bound": {"level": LEVEL, "min_units": MIN_UNITS, "n_boot": N_BOOT, "bounds": BOUNDS},
    "permutation": {"alpha": ALPHA, "min_units": MIN_UNITS, "n_perm": N_PERM},
    "equivalence": {"level": LEVEL, "min_units": MIN_UNITS, "n_boot": N_BOOT, "bounds": BOUNDS},
}
RULE_TEXT = {
    "excess": (f"reproduced if the {LEVEL:.0%} BCa interval of the excess over the null excludes 0 on the claimed "
               f"side; not reproduced if it excludes 0 on the other side; otherwise inconclusive; no verdict with "
               f"fewer than {MIN_UNITS} units"),
    "bound": (f"reproduced if the {LEVEL:.0%} BCa interval of the excess lies on the claimed side of the claim's "
              f"bound; not reproduced if it lies on the other side; otherwise inconclusive; no verdict with fewer "
              f"than {MIN_UNITS} units"),
    "equivalence": (f"reproduced if the {LEVEL:.0%} BCa interval of the excess lies inside [-bound, bound] (the "
                    f"claim's equivalence margin); not reproduced if it lies wholly outside; otherwise inconclusive; "
                    f"no verdict with fewer than {MIN_UNITS} units"),
    "permutation": (f"reproduced if the one-sided permutation p-value in the claimed direction is below {ALPHA}; not "
                    f"reproduced if the one in the other direction is; otherwise inconclusive; no verdict with fewer "
                    f"than {MIN_UNITS} units"),
}
#: rule -> {version: digest of its constants at that version}; the highest version is the current one.
RULE_VERSIONS: dict[str, dict[int, str]] = {
    "excess": {1: "810c358c3b86"},
    "bound": {1: "e9e11ccaa765", 2: "3bb66ef9d1a8"},
    "permutation": {1: "505e6b371629"},
    "equivalence": {1: "ea8a30326083", 2: "e0b40600c61d"},
}


def rule_digest(name: str) -> str:
    """The first 12 hex digits of the SHA-256 of a rule's constants (JSON, sorted keys).

    >>> len(rule_digest("excess"))
    12
    """
    if name not in RULE_CONSTANTS:
        raise ValueError(f"unknown rule {name!r}; known: {', '.join(RULE_CONSTANTS)}")
    blob = json.dumps({"rule": name, "constants": RULE_CONSTANTS[name]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def rule_tag(name: str) -> str:
    """``"<rule> v<current version>"``, the tag a claim carries.

    >>> rule_tag("permutation")
    'permutation v1'
    """
    if name not in RULE_VERSIONS:
        raise ValueError(f"unknown rule {name!r}; known: {', '.join(RULE_VERSIONS)}")
    return f"{name} v{max(RULE_VERSIONS[name])}"


def _finite(*xs: float) -> bool:
    return all(x == x for x in xs)


def excess_verdict(low: float, high: float, *, n: int, sign: int) -> str:
    """The excess rule on the interval [low, high] of the excess over the null, claimed sign +1 / -1.

    >>> excess_verdict(-0.3, -0.1, n=8, sign=+1), excess_verdict(-0.1, 0.2, n=8, sign=-1)
    ('not reproduced', 'inconclusive')
    """
    if n < MIN_UNITS:
        return TOO_FEW
    return sign_verdict(low, high, sign)


def bound_verdict(low: float, high: float, *, n: int, claim: str, side: int) -> str:
    """The bound rule: [low, high] against ``BOUNDS[claim]``; side -1: the claim says "below the bound".

    >>> bound_verdict(0.1, 0.3, n=6, claim="4", side=-1), bound_verdict(0.6, 0.9, n=6, claim="4", side=-1)
    ('reproduced', 'not reproduced')
    """
    bound = BOUNDS[claim]
    return excess_verdict(low - bound, high - bound, n=n, sign=side)


def equivalence_verdict(low: float, high: float, *, n: int, claim: str) -> str:
    """The equivalence rule: [low, high] inside [-B, B] with B = ``BOUNDS[claim]`` reproduces, wholly outside it
    does not.

    >>> equivalence_verdict(-0.1, 0.2, n=6, claim="7c"), equivalence_verdict(0.3, 0.9, n=6, claim="7c")
    ('reproduced', 'not reproduced')
    """
    b = BOUNDS[claim]
    if n < MIN_UNITS:
        return TOO_FEW
    if not _finite(low, high):
        return INCONCLUSIVE
    if -b < low and high < b:
        return REPRODUCED
    if high < -b or low > b:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def permutation_verdict(p_claimed: float, p_other: float, *, n: int) -> str:
    """The permutation rule on the one-sided p-values in the claimed and in the other direction.

    >>> permutation_verdict(0.01, 0.99, n=6), permutation_verdict(0.3, 0.7, n=6), permutation_verdict(0.01, 1, n=4)
    ('reproduced', 'inconclusive', 'too few units')
    """
    if n < MIN_UNITS:
        return TOO_FEW
    if not _finite(p_claimed, p_other):
        return INCONCLUSIVE
    if p_claimed < ALPHA:
        return REPRODUCED
    if p_other < ALPHA:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def measured_claim(id: str, analysis: str, model: str, sentence: str, source: str, statistic: str, *, value: float,
                   null: str, null_value: float, excess: tuple[float, float, float], n: int, unit: str, rule: str,
                   verdict: str, note: str = "") -> Claim:
    """A measured claim: ``value`` of the statistic, ``null_value`` of its null, ``excess`` = (excess over
    the null, interval low, high); ``rule`` a key of :data:`RULE_TEXT`.

    >>> c = measured_claim("x", "a", "m", "s", "paper", "stat", value=1.0, null="zero", null_value=0.0,
    ...                    excess=(1.0, 0.5, 1.5), n=6, unit="samples", rule="excess", verdict="reproduced")
    >>> c.excess, c.ci_low, c.rule_version
    (1.0, 0.5, 'excess v1 (...)')
    """
    ex, lo, hi = excess
    return Claim(id, analysis, model, sentence, statistic, float(value), float(lo), float(hi), int(n),
                 RULE_TEXT[rule], verdict, note, source=source, null=null, null_value=float(null_value),
                 excess=float(ex), unit=unit, rule_version=f"{rule_tag(rule)} ({rule_digest(rule)})")


def untestable_claim(id: str, analysis: str, model: str, sentence: str, source: str, reason: str) -> Claim:
    """A claim the design here cannot answer: no number, verdict ``untestable here``, the reason in the note.

    >>> untestable_claim("3", "a", "m", "s", "paper", "n = 2 models").verdict
    'untestable here'
    """
    nan = float("nan")
    return Claim(id, analysis, model, sentence, "not measured", nan, nan, nan, 0, "", UNTESTABLE, reason,
                 source=source)
