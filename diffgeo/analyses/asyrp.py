"""Analysis 7: the Asyrp property table (Kwon et al., ICLR 2023) from ``diffgeo.editing.evaluate``.

The editing module is written separately; when it is missing (or fails) the row is skipped and
the report says why.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any

from ._common import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim, skipped_claim

__all__ = ["asyrp_properties"]

log = logging.getLogger(__name__)

SENTENCE = "h-space edits (Asyrp) are {prop}."
_VERDICTS = {REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE}


def _field(obj: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return default


def asyrp_properties(model: str, *, fast: bool = True, progress: bool = False) -> list[Claim]:
    """Claims 7.*: one per property row of ``diffgeo.editing.evaluate`` (skipped with a reason when absent)."""
    if importlib.util.find_spec("diffgeo.editing") is None:
        return [skipped_claim("7", "asyrp", model, SENTENCE.format(prop="homogeneous, linear, robust and "
                              "consistent across timesteps"), "diffgeo.editing does not exist in this build")]
    editing = importlib.import_module("diffgeo.editing")
    evaluate = getattr(editing, "evaluate", None)
    if not callable(evaluate):
        return [skipped_claim("7", "asyrp", model, SENTENCE.format(prop="homogeneous, linear, robust and consistent"),
                              "diffgeo.editing has no evaluate() yet")]
    from ._common import load_model

    try:
        table = evaluate(load_model(model), fast=fast, progress=progress)
    except Exception as err:  # the report must still be written; the reason goes into it
        log.warning("asyrp: diffgeo.editing.evaluate failed: %s", err)
        return [skipped_claim("7", "asyrp", model, SENTENCE.format(prop="homogeneous, linear, robust and consistent"),
                              f"diffgeo.editing.evaluate failed: {type(err).__name__}: {err}")]
    rows = _field(table, "rows", "properties", default=table)
    claims = []
    for i, row in enumerate(rows if isinstance(rows, (list, tuple)) else []):
        prop = str(_field(row, "property", "name", default=f"property {i}"))
        value = float(_field(row, "value", default=float("nan")))
        lo = float(_field(row, "ci_low", "low", default=float("nan")))
        hi = float(_field(row, "ci_high", "high", default=float("nan")))
        verdict = str(_field(row, "verdict", default=INCONCLUSIVE))
        claims.append(Claim(f"7.{i + 1}", "asyrp", model, SENTENCE.format(prop=prop),
                            str(_field(row, "statistic", "description", default=prop)), value, lo, hi,
                            int(_field(row, "n", default=0) or 0), str(_field(row, "rule", default="from diffgeo.editing")),
                            verdict if verdict in _VERDICTS else INCONCLUSIVE))
    if not claims:
        return [skipped_claim("7", "asyrp", model, SENTENCE.format(prop="homogeneous, linear, robust and consistent"),
                              f"diffgeo.editing.evaluate returned no property rows ({type(table).__name__})")]
    return claims
