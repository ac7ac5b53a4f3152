"""8. The edit-quality table in the report: does at least one method edit each factor cleanly?

Reads the saved table (``edit_quality.json`` in the report's folder or ``figures/``, written by
``benchmarks/edit_quality.py``; recomputing it takes most of an hour on one thread, so the report
never does) and makes one claim per task: the best single direction (most clean edits on held-out
generated samples; the per-sample reference ``target_x``, which needs the scene renderer, is
reported in the notes and claims nothing) reaches success >= 0.90, preservation >= 0.90 and
validity >= 0.95 on >= 64 samples (issue 26's targets, on the point estimates; the claim's
interval is the Wilson interval of the clean-edit rate). Inverted real scenes get their own claims where the table has them. The figure:
clean-edit rates per task and method (:func:`diffgeo.viz.results.draw_edit_quality`).

>>> from types import SimpleNamespace as NS
>>> r = NS(task="colour:blue", method="loco", samples="generated", n=64, success=0.95, preservation=0.92,
...        validity=1.0, clean=0.9, clean_ci=(0.8, 0.95), model="shapes", strength=3.0, candidate="loco1+",
...        transfer=0.95)
>>> quality_claim(r).verdict
'reproduced'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffgeo.analyses._common import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim, skipped_claim
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context, FigureSpec
from diffgeo.editing.table import EditQualityTable
from diffgeo.viz.results import draw_edit_quality

__all__ = ["ANALYSIS", "quality_claim", "load_table", "RULE", "MIN_N"]

SENTENCE = "An attribute of the embedded model can be edited cleanly: the factor changes, the others stay, the image stays valid"
RULE = ("reproduced if the best single direction's success >= 0.90, preservation >= 0.90 and validity >= 0.95 "
        "on >= 64 held-out samples (issue 26); not reproduced if any is lower; inconclusive with fewer samples")
MIN_N = 64
#: Methods whose edit is found again on every edited sample (no single direction to ship or transfer).
PER_SAMPLE = ("target_x", "target_gn")
STEM = "edit_quality"


def quality_claim(row: Any, claim_id: str = "8") -> Claim:
    """The claim of one table row (the best of its task), by :data:`RULE`.

    >>> from types import SimpleNamespace as NS
    >>> r = NS(task="size:large", method="pca_h", samples="real", n=64, success=0.5, preservation=0.9, validity=1.0,
    ...        clean=0.45, clean_ci=(0.33, 0.57), model="shapes", strength=3.0, candidate="pc1+", transfer=None)
    >>> quality_claim(r, "8c").verdict, quality_claim(r).id
    ('not reproduced', '8')
    """
    ok = row.success >= 0.90 and (row.preservation != row.preservation or row.preservation >= 0.90) \
        and row.validity >= 0.95
    verdict = INCONCLUSIVE if row.n < MIN_N else (REPRODUCED if ok else NOT_REPRODUCED)
    te = getattr(row, "t_edit", None)
    note = (f"{row.task} on {row.samples} samples by {row.method} ({row.candidate}, strength {row.strength:.3g}"
            + (f", t_edit {te}" if te is not None else "") + "): "
            f"success {row.success:.2f}, preservation {row.preservation:.2f}, validity {row.validity:.2f}"
            + (f", transfer {row.transfer:.2f}" if row.transfer is not None else ""))
    return Claim(claim_id, "edit_quality", row.model, SENTENCE, "clean-edit rate of the best single direction",
                 row.clean, row.clean_ci[0], row.clean_ci[1], row.n, RULE, verdict, note,
                 source="issue 26; LOCO-Edit (Chen et al., NeurIPS 2024) for the columns", unit="held-out samples")


def load_table(folders: list[Path]) -> tuple[EditQualityTable | None, Path | None]:
    """The first saved table among ``folders`` (``edit_quality.json``), or (None, None).

    >>> import tempfile
    >>> load_table([Path(tempfile.mkdtemp())])
    (None, None)
    """
    for f in folders:
        p = Path(f) / (STEM + ".json")
        if p.is_file():
            return EditQualityTable.load(p), p
    return None, None


def _run(context: Context) -> AnalysisResult:
    table, path = load_table([context.out, Path("figures")])
    if table is None:
        return AnalysisResult([skipped_claim("8", "edit_quality", context.primary, SENTENCE,
                                             "no saved edit-quality table: run benchmarks/edit_quality.py")])
    claims, letters, notes = [], iter("abcdefghijklmnopqrstuvwxyz"), []
    for samples in ("generated", "real"):
        for task in dict.fromkeys(r.task for r in table.rows if r.samples == samples):
            rows = [r for r in table.rows if r.task == task and r.samples == samples and r.clean == r.clean]
            one = [r for r in rows if r.method not in PER_SAMPLE]
            top = max(one, key=lambda r: (r.clean, r.success), default=None)
            if top is not None:
                claims.append(quality_claim(top, f"8{next(letters)}"))
            ref = max((r for r in rows if r.method in PER_SAMPLE), key=lambda r: (r.clean, r.success), default=None)
            if ref is not None:
                notes.append(f"{task} ({samples}): the per-sample reference {ref.method} (each sample's fitted scene "
                             f"re-rendered with the target; needs the renderer, so it is no direction and gets no "
                             f"claim) at t_edit {ref.t_edit}: clean {ref.clean:.2f}, success {ref.success:.2f}, "
                             f"preservation {ref.preservation:.2f}, validity {ref.validity:.2f} (n {ref.n})")
    figures = {STEM + "_bars": FigureSpec(draw_edit_quality, table.rows, (9.0, 3.6))}
    notes.insert(0, f"edit quality read from {path} ({len(table.rows)} rows; every method's row in the JSON/CSV)")
    loco = [r for r in table.rows if r.method == "loco" and r.samples == "generated"]
    if loco:
        notes.append(f"LOCO-style on {loco[0].model}: {min(r.find_s for r in loco):.1f}-{max(r.find_s for r in loco):.1f} s "
                     f"to find the directions of one sample, {1000 * loco[0].edit_s:.0f} ms per edited sample "
                     "(LOCO-Edit reports 79 s / 2 s on its real-image models; not the same work)")
    return AnalysisResult(claims, figures, notes)


ANALYSIS = Analysis("edit_quality", "8. the edit-quality table (diffgeo.editing.table), read from its saved JSON", _run)
