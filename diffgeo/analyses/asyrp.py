"""Analysis 7: the Asyrp property table (Kwon et al., ICLR 2023).

The table itself is measured by :func:`diffgeo.editing.evaluate` (``python -m diffgeo edit
properties``, saved as figures/edit_properties_*.json / .csv / .png). It keeps per-strength means,
not the per-sample reads a bootstrap interval needs, so its rows are not yet claims with an
uncertainty and a verdict: the report lists the row as skipped and says where the table is.
"""

from __future__ import annotations

from ._common import Claim, skipped_claim

__all__ = ["asyrp_properties"]

SENTENCE = "h-space edits (Asyrp) are homogeneous, linear, composable, robust and consistent across timesteps."
REASON = ("measured separately by `python -m diffgeo edit properties` (figures/edit_properties_*.json); "
          "the table keeps per-strength means only, so it has no bootstrap interval or verdict yet")


def asyrp_properties(model: str, *, fast: bool = True, progress: bool = False) -> list[Claim]:
    """Claim 7, skipped with the reason above (``fast`` / ``progress`` kept for the report's call).

    >>> asyrp_properties("shapes")[0].verdict
    'skipped'
    """
    return [skipped_claim("7", "asyrp", model, SENTENCE, REASON)]
