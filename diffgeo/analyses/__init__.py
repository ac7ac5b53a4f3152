"""The papers' claims about the geometry of x_t, measured: each analysis returns claims, data and how to draw them.

===================  =====================================================================
name                 what
===================  =====================================================================
coarse_to_fine       1. spectral centroid of the basis vectors vs t
shared_tangents      2. mean pairwise Grassmann distance between samples' bases vs t
dataset_complexity   3. curve 2 for each embedded model vs its data's complexity
discrepancy          4. distances between one trajectory's bases across t (heatmap)
text                 5. prompts vs tangent spaces, cond vs uncond vs t, the guidance artefact
text_over_prompts    5d-f. prompted bases' edits; text influence over t for many prompts
curvedness           6. curvedness of segments between samples vs an untrained network
asyrp                7. Asyrp's h-space properties on its own objects (asyrp_objects; asyrp.py reads saved tables)
asyrp_learned        7g-h. Asyrp's learned f_t: per-sample vs global dh, homogeneity
edit_quality         8. edit quality (edit_quality)
transport            9. basis directions carried between samples by parallel transport
===================  =====================================================================

Every claim carries its source, a statistic, its null, the excess over the null with a 95% interval
(BCa or a permutation test) and a verdict from a versioned rule fixed in code
(:mod:`diffgeo.analyses.rules`, :class:`Claim`). :func:`bases_along` computes warm-started bases along a trajectory.
:data:`ANALYSES` is the report's registry (name -> :class:`Analysis`, the protocol in
:mod:`diffgeo.analyses.registry`): each analysis module exposes one ``ANALYSIS`` object.
"""

from diffgeo.analyses import (asyrp_objects, coarse_to_fine, curved, dataset_complexity, discrepancy,
                              edit_quality, learned_ft, shared_tangents, text, text_edits, transport_claims)
from diffgeo.analyses._common import (INCONCLUSIVE, NOT_REPRODUCED, PRESETS, REPRODUCED, SKIPPED, Claim, Preset,
                                      bases_along, bootstrap_ci, sign_verdict)
from diffgeo.analyses.bases import TrajectoryBases, collect_bases
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.analyses.rules import (RULE_VERSIONS, TOO_FEW, UNTESTABLE, measured_claim, rule_digest,
                                    untestable_claim)

__all__ = ["ANALYSES", "Analysis", "AnalysisResult", "Context", "FigureSpec", "Claim", "Preset", "PRESETS",
           "bases_along", "bootstrap_ci", "sign_verdict", "collect_bases", "TrajectoryBases", "check_names",
           "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "SKIPPED", "UNTESTABLE", "TOO_FEW", "RULE_VERSIONS",
           "rule_digest", "measured_claim", "untestable_claim"]

#: The registry: name -> analysis, in report order (one line per analysis module).
ANALYSES: dict[str, Analysis] = {a.name: a for a in (
    coarse_to_fine.ANALYSIS,
    shared_tangents.ANALYSIS,
    dataset_complexity.ANALYSIS,
    discrepancy.ANALYSIS,
    text.ANALYSIS,
    text_edits.ANALYSIS,
    curved.ANALYSIS,
    asyrp_objects.ANALYSIS,
    learned_ft.ANALYSIS,
    edit_quality.ANALYSIS,
    transport_claims.ANALYSIS,
)}


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
