"""The papers' claims about the geometry of x_t, measured: each analysis returns data and claims, never plots.

===================  =====================================================================
name                 what
===================  =====================================================================
coarse_to_fine       1. spectral centroid of the basis vectors vs t
shared_tangents      2. mean pairwise Grassmann distance between samples' bases vs t
dataset_complexity   3. curve 2 for each embedded model vs its data's complexity
discrepancy          4. distances between one trajectory's bases across t (heatmap)
text                 5. prompts vs tangent spaces, cond vs uncond vs t, the guidance artefact
curvedness           6. curvedness of segments between samples vs a flat baseline
asyrp                7. the Asyrp property table (diffgeo.editing.edits.evaluate)
===================  =====================================================================

Every claim carries a number, a 95% bootstrap interval and a verdict from a rule fixed in code
beside it (:class:`Claim`). :func:`bases_along` computes warm-started bases along a trajectory.
"""

from diffgeo.analyses._common import (INCONCLUSIVE, NOT_REPRODUCED, PRESETS, REPRODUCED, SKIPPED, Claim, Preset,
                                      bases_along, bootstrap_ci, sign_verdict)
from diffgeo.analyses.bases import TrajectoryBases, collect_bases

__all__ = ["ANALYSES", "Claim", "Preset", "PRESETS", "bases_along", "bootstrap_ci", "sign_verdict",
           "collect_bases", "TrajectoryBases", "check_names", "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE",
           "SKIPPED"]

ANALYSES = {
    "coarse_to_fine": "1. spectral centroid of the local basis vectors vs t",
    "shared_tangents": "2. mean pairwise Grassmann distance between samples' bases vs t",
    "dataset_complexity": "3. curve 2 for each model vs the complexity of its training data",
    "discrepancy": "4. distance between one trajectory's bases at t and t' (heatmap)",
    "text": "5. prompts vs tangent spaces; cond vs uncond bases vs t; the guidance artefact",
    "curvedness": "6. curvedness of segments between samples vs a flat baseline",
    "asyrp": "7. the Asyrp property table from diffgeo.editing.edits.evaluate",
}


def check_names(names: list[str] | None) -> list[str]:
    """The analyses to run (all when None); an unknown name raises a ValueError listing the known ones.

    >>> check_names(["text", "curvedness"])
    ['text', 'curvedness']
    """
    if names is None:
        return list(ANALYSES)
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise ValueError(f"unknown analysis {', '.join(map(repr, unknown))}; known: {', '.join(ANALYSES)}")
    return list(names)
