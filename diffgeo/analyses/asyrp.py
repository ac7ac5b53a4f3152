"""Analysis 7: the Asyrp property table (Kwon et al., ICLR 2023) as claims with intervals and verdicts.

The table is measured by :func:`diffgeo.editing.properties.edit_properties` (``python -m diffgeo edit
properties --factor F``, saved as figures/edit_properties_<model>_<factor>_{x,h}.json / .csv /
.png), which keeps the per-sample reads. :func:`property_claims` turns one h-space table into five
claims, each a number with a 95% bootstrap interval over the n evaluation samples (resampled
together across strengths: every sample is edited at every strength) and a verdict by a rule
fixed here before any table was read (:data:`RULES`):

- 7a homogeneity: of the samples not already at the target, the fraction the edit at the largest
  strength moves to the target (one dh, the same effect on every sample); reproduced if the
  interval lies above 0.8, not reproduced if below, inconclusive otherwise.
- 7b linearity: R^2 of the least-squares line through (strength, mean change) over the strengths
  (-2..2); reproduced above 0.8, not reproduced below. The note gives the sign flip.
- 7c composition: under dh_a + dh_b, min over the two factors of (change in the sum / change
  alone); reproduced above 0.5 (each factor keeps at least half its own change), not reproduced
  below; undefined (inconclusive) where an edit alone does not change its factor.
- 7d robustness: paired change of validity when Gaussian noise (relative norm 0.5) is added to
  dh at the largest strength; reproduced above -0.1 (noise costs under 10 points of validity),
  not reproduced below.
- 7e timestep consistency: mean cosine similarity between dh_t at different t of the edit
  interval [T, t_edit]; the units resampled are timesteps (dh_t is one vector per t, there are
  no per-sample reads); reproduced above 0.5, not reproduced below. dh_t here is a mean
  difference per t, not Asyrp's learned f_t.

:func:`asyrp_properties` (the report's entry point) reads the saved tables when they exist
(``fast``: never computes more than one small table, about a minute) and says where they came from.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from diffgeo.analyses._common import (INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Claim, bootstrap_ci, load_model,
                                      skipped_claim)
from diffgeo.analyses.registry import Analysis, AnalysisResult, Context
from diffgeo.core.sweep import model_fingerprint
from diffgeo.editing.factors import FACTOR_DEFAULTS, factor_directions
from diffgeo.editing.properties import EditProperties, edit_statistics, edit_properties
from diffgeo.models.zoo import entry
from diffgeo.readers import get_reader

__all__ = ["asyrp_properties", "property_claims", "threshold_verdict", "homogeneity", "linearity_r2",
           "composition_ratio", "robustness_drop", "timestep_cosine", "RULES", "BOUNDS", "SENTENCES", "ANALYSIS"]

log = logging.getLogger(__name__)

SENTENCE = "h-space edits (Asyrp) are homogeneous, linear, composable, robust and consistent across timesteps."
SENTENCES = {
    "7a": "One h-space direction changes the attribute of every sample alike (homogeneity).",
    "7b": "The attribute change grows linearly with the edit strength and flips sign with it (linearity).",
    "7c": "Adding two h-space directions changes both attributes, each about as much as alone (composition).",
    "7d": "Gaussian noise added to the h-space direction keeps the samples valid (robustness).",
    "7e": "The h-space direction dh_t is consistent across the timesteps of the edit interval.",
}
#: The verdict bounds, fixed before any table was read: reproduced when the 95% interval lies
#: above the bound, not reproduced when it lies below, inconclusive when it contains it.
BOUNDS = {"7a": 0.8, "7b": 0.8, "7c": 0.5, "7d": -0.1, "7e": 0.5}
STATISTICS = {
    "7a": "fraction of samples not at the target moved to it at the largest strength",
    "7b": "R^2 of the line mean change ~ strength",
    "7c": "min over factors of change in dh_a + dh_b / change alone",
    "7d": "validity with noisy dh minus without (paired, largest strength)",
    "7e": "mean cosine between dh_t at different t >= t_edit",
}
#: Fewer resampled units than this give no verdict (inconclusive): a bootstrap over 2-4 units
#: (e.g. the timesteps of a 5-step grid above t_edit) has too few distinct resamples to be an interval.
MIN_UNITS = 5
RULES = {k: f"reproduced if the 95% bootstrap interval lies above {b:g}; not reproduced if it lies below "
            f"{b:g}; otherwise (or with fewer than {MIN_UNITS} units) inconclusive" for k, b in BOUNDS.items()}


def threshold_verdict(low: float, high: float, bound: float, n: int = MIN_UNITS) -> str:
    """Reproduced if [low, high] lies above ``bound``, not reproduced if below, else (or NaN, or
    fewer than :data:`MIN_UNITS` units ``n``) inconclusive.

    >>> threshold_verdict(0.85, 0.95, 0.8), threshold_verdict(0.2, 0.6, 0.8), threshold_verdict(0.7, 0.9, 0.8)
    ('reproduced', 'not reproduced', 'inconclusive')
    """
    if n < MIN_UNITS or not (low == low and high == high):
        return INCONCLUSIVE
    if low > bound:
        return REPRODUCED
    if high < bound:
        return NOT_REPRODUCED
    return INCONCLUSIVE


# -- the statistics, on per-sample reads (pure) -----------------------------------------------------
def homogeneity(change_top: torch.Tensor, base_target: torch.Tensor, idx: torch.Tensor) -> float:
    """Fraction of the samples ``idx`` whose unedited read is not the target that reach it:
    change_top, base_target (n,). NaN when every resampled sample was already at the target.

    >>> homogeneity(torch.tensor([1., 1., 0., 0.]), torch.tensor([0., 0., 0., 1.]), torch.arange(4))
    0.6666666666666666
    """
    c, b = change_top[idx].double(), base_target[idx].double()
    eligible = b == 0
    return float(c[eligible].mean()) if bool(eligible.any()) else float("nan")


def linearity_r2(strengths: torch.Tensor, change: torch.Tensor, idx: torch.Tensor) -> float:
    """R^2 of the line through (strength, mean over samples ``idx`` of change (S, n)); NaN if flat.

    >>> s = torch.tensor([-1., 0., 1.])
    >>> linearity_r2(s, torch.tensor([[-1., -1.], [0., 0.], [1., 1.]]), torch.arange(2))
    1.0
    """

    c = change[:, idx].double()
    return edit_statistics(strengths, c, {}, torch.ones(c.shape, dtype=torch.bool))["r2"]


def composition_ratio(parts: dict[str, torch.Tensor], idx: torch.Tensor) -> float:
    """min(mean a_in_sum / mean a_alone, mean b_in_sum / mean b_alone) over samples ``idx``; NaN when
    an edit alone does not raise its target (mean change <= 0: nothing to keep).

    >>> p = {"a_alone": torch.tensor([1., 1.]), "a_in_sum": torch.tensor([1., 0.]),
    ...      "b_alone": torch.tensor([1., 0.]), "b_in_sum": torch.tensor([1., 0.])}
    >>> composition_ratio(p, torch.arange(2))
    0.5
    """
    out = []
    for f in ("a", "b"):
        alone, both = float(parts[f"{f}_alone"][idx].double().mean()), float(parts[f"{f}_in_sum"][idx].double().mean())
        if alone <= 0:
            return float("nan")
        out.append(both / alone)
    return min(out)


def robustness_drop(valid: torch.Tensor, valid_noisy: torch.Tensor, idx: torch.Tensor) -> float:
    """mean(valid_noisy - valid) over samples ``idx`` (paired; negative: noise costs validity).

    >>> robustness_drop(torch.tensor([1., 1.]), torch.tensor([1., 0.]), torch.arange(2))
    -0.5
    """
    return float((valid_noisy[idx].double() - valid[idx].double()).mean())


def timestep_cosine(cosines: torch.Tensor, idx: torch.Tensor) -> float:
    """Mean of cosines[i, j] (K, K) over pairs of resampled timesteps ``idx`` that are different
    timesteps (a timestep drawn twice is not compared with itself); NaN with fewer than two.

    >>> c = torch.tensor([[1., .5, .3], [.5, 1., .1], [.3, .1, 1.]])
    >>> round(timestep_cosine(c, torch.arange(3)), 4)
    0.3
    """
    i, j = idx[:, None].expand(len(idx), len(idx)), idx[None, :].expand(len(idx), len(idx))
    m = i != j
    return float(cosines.double()[i[m], j[m]].mean()) if bool(m.any()) else float("nan")


# -- one table -> five claims ------------------------------------------------------------------------
def _tensor(x: Any) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def property_claims(table: Any, *, x_table: Any = None, source: str = "", n_boot: int = 1000,
                    seed: int = 0) -> list[Claim]:
    """Claims 7a-7e of one h-space :class:`~diffgeo.editing.properties.EditProperties` (with per-sample
    reads); ``x_table``: the x-space table of the same factor, whose value is given in each note
    for comparison; ``source``: where the table came from (said in each note).

    >>> from diffgeo.editing.properties import EditProperties
    >>> n = 10
    >>> t = EditProperties("toy", "h", "colour", "blue", [-1.0, 0.0, 1.0], [-1., 0., 1.], [0.] * 3, 1.0, 1.0,
    ...     True, {}, [1.] * 3, n, 5, 500, per_sample={"change": [[-1.] * n, [0.] * n, [1.] * n],
    ...     "base_target": [0.] * n, "valid": [[1.] * n] * 3,
    ...     "robust": {"valid": [1.] * n, "valid_noisy": [1.] * n, "change_noisy": [1.] * n}})
    >>> [(c.id, c.verdict) for c in property_claims(t, n_boot=50)][:2]
    [('7a', 'reproduced'), ('7b', 'reproduced')]
    """
    ps = table.per_sample or {}
    what = f"{table.factor} -> {table.target}"
    head = f"{table.model}, {what}, n={table.n}, {table.steps} steps, t_edit={table.t_edit}"
    if "change" not in ps:
        return [skipped_claim(k, "asyrp", table.model, SENTENCES[k], f"{head}: the table has no per-sample reads "
                              "(saved before they were kept); rerun python -m diffgeo edit properties")
                for k in SENTENCES]
    s = _tensor(table.strengths)
    top = int(s.argmax())
    n = table.n

    def stats(t: Any) -> dict[str, Any]:
        p = t.per_sample
        ch = _tensor(p["change"])
        out = {"7a": lambda i: homogeneity(ch[top], _tensor(p["base_target"]), i),
               "7b": lambda i: linearity_r2(_tensor(t.strengths), ch, i),
               "7d": lambda i: robustness_drop(_tensor(p["robust"]["valid"]), _tensor(p["robust"]["valid_noisy"]), i)}
        if p.get("composition"):
            parts = {k: _tensor(v) for k, v in p["composition"].items()}
            out["7c"] = lambda i: composition_ratio(parts, i)
        return out

    mine = stats(table)
    theirs = stats(x_table) if x_table is not None and "change" in (x_table.per_sample or {}) else {}
    claims = []
    if not (table.meta or {}).get("validity_read", True):
        mine.pop("7d")
    for k in ("7a", "7b", "7c", "7d"):
        if k == "7d" and k not in mine:
            claims.append(skipped_claim(k, "asyrp", table.model, SENTENCES[k], f"{head}: the model's reader cannot "
                                        "tell a valid image from a failed one, so validity was not measured"))
            continue
        if k not in mine:
            claims.append(skipped_claim(k, "asyrp", table.model, SENTENCES[k],
                                        f"{head}: no second direction was composed (the reader reads one factor)"
                                        if k == "7c" else head))
            continue
        v, lo, hi = bootstrap_ci(n, mine[k], n_boot=n_boot, seed=seed)
        notes = [head]
        if k == "7a":
            notes.append(f"spread (std over samples) of the change at strength {float(s[top]):g}: "
                         f"{table.spread[top]:.3g}; base fraction at the target "
                         f"{float(_tensor(ps['base_target']).mean()):.3g}")
        if k == "7b":
            neg = [i for i, u in enumerate(table.strengths) if u == -float(s[top])]
            if neg:
                cn = _tensor(ps["change"])[neg[0]]
                _, nlo, nhi = bootstrap_ci(n, lambda i: float(cn[i].mean()), n_boot=n_boot, seed=seed)
                notes.append(f"sign flip: mean change {table.mean_change[top]:.3g} at {float(s[top]):g}, "
                             f"{float(cn.mean()):.3g} [{nlo:.3g}, {nhi:.3g}] at {-float(s[top]):g} "
                             f"(flip {table.sign_flip})")
        if k == "7c":
            c = table.composition
            notes.append(f"with {c['factor_b']} -> {c['target_b']} at strength {c.get('strength', 1.0):g}: "
                         f"a {c['a_alone']:.3g} alone / {c['a_in_sum']:.3g} in sum, b {c['b_alone']:.3g} alone / "
                         f"{c['b_in_sum']:.3g} in sum")
        if k == "7d":
            r = ps["robust"]
            noise = (table.robustness or {}).get("noise", float("nan"))
            notes.append(f"validity {float(_tensor(r['valid']).mean()):.3g} -> "
                         f"{float(_tensor(r['valid_noisy']).mean()):.3g} with noise {noise:g}; validity unedited "
                         f"{table.validity[table.strengths.index(0.0)]:.3g}")
        if k in theirs:
            xv = theirs[k](torch.arange(x_table.n))
            notes.append(f"x-space edit of the same factor: {xv:.3g}")
        if source:
            notes.append(source)
        claims.append(Claim(k, "asyrp", table.model, SENTENCES[k], f"{STATISTICS[k]} ({what})", v, lo, hi, n,
                            RULES[k], threshold_verdict(lo, hi, BOUNDS[k], n), "; ".join(notes)))
    cos = (table.meta or {}).get("timestep_cosines")
    if not cos:
        claims.append(skipped_claim("7e", "asyrp", table.model, SENTENCES["7e"],
                                    f"{head}: the direction has one vector for every t"))
    else:
        ts = torch.as_tensor(cos["timesteps"])
        keep = (ts >= table.t_edit).nonzero().flatten()
        c = _tensor(cos["cosines"])[keep][:, keep]
        v, lo, hi = bootstrap_ci(len(keep), lambda i: timestep_cosine(c, i), n_boot=n_boot, seed=seed)
        note = (f"{head}; {len(keep)} timesteps {ts[keep].tolist()} resampled (not samples); dh_t = mean "
                f"difference of h per t, not a learned f_t")
        claims.append(Claim("7e", "asyrp", table.model, SENTENCES["7e"], f"{STATISTICS['7e']} ({what})", v, lo, hi,
                            len(keep), RULES["7e"], threshold_verdict(lo, hi, BOUNDS["7e"], len(keep)),
                            note + (f"; {source}" if source else "")))
    return claims


# -- the report's entry point ------------------------------------------------------------------------
def _saved_tables(model: str, folders: Sequence[Path], fingerprint: str | None = None) -> list[tuple[Any, Any, Path]]:
    """The saved (h table, x table or None, path) of ``model`` in the first folder holding any; with
    ``fingerprint``, only tables measured on exactly those weights (others are stale and skipped)."""

    for folder in folders:
        hs = sorted(Path(folder).glob(f"edit_properties_{model}_*_h.json"))
        out = []
        for h in hs:
            try:
                th = EditProperties.load(h)
                xp = h.with_name(h.name[: -len("_h.json")] + "_x.json")
                tx = EditProperties.load(xp) if xp.exists() else None
            except (OSError, ValueError, TypeError) as err:
                log.warning("cannot read %s: %s", h, err)
                continue
            if th.model != model:
                continue
            if fingerprint is not None and th.meta.get("model_fingerprint") != fingerprint:
                log.warning("%s was measured on other weights of %s: not used (rerun python -m diffgeo edit "
                            "properties)", h, model)
                continue
            out.append((th, tx, h))
        if out:
            return out
    return []


def _tagged(table: Any, claims: list[Claim]) -> list[Claim]:
    """Claim ids made unique per table: ``7a colour->blue``."""

    return [replace(c, id=f"{c.id} {table.factor}->{table.target}") for c in claims]


def asyrp_properties(model: str, *, fast: bool = True, progress: bool = False,
                     tables: str | Path | Sequence[str | Path] | None = None) -> list[Claim]:
    """Claims 7a-7e for each saved h-space table of ``model`` (one set per factor; ids
    ``7a <factor>-><target>``).

    tables: folders searched for figures/edit_properties_<model>_*_h.json (default: ``figures``);
    the first folder holding any measured on the model's current weights (the fingerprint in the
    table's meta) is used and named in each claim's note; stale tables are skipped with a warning. Without saved tables:
    ``fast`` computes one small table (the model's first factor of
    :data:`diffgeo.editing.factors.FACTOR_DEFAULTS` its reader reads, n=8, 5 steps: about a minute
    here, wide intervals), the full preset n=64, 20 steps for every such factor; a model without
    a reader gets a skipped claim with the reason.

    >>> import tempfile
    >>> [c.verdict for c in asyrp_properties("no-such-model", tables=[tempfile.mkdtemp()])]
    ['skipped']
    """
    folders = [Path("figures")] if tables is None else (
        [Path(tables)] if isinstance(tables, (str, Path)) else [Path(f) for f in tables])
    try:

        fingerprint = model_fingerprint(load_model(model))
    except (ValueError, OSError, KeyError):
        fingerprint = None  # a name without a loadable model: its saved tables, by name
    found = _saved_tables(model, folders, fingerprint)
    if found:
        claims = []
        for th, tx, path in found:
            claims += _tagged(th, property_claims(th, x_table=tx,
                                                  source=f"read from the saved table {path} (not recomputed)"))
        return claims
    try:

        m = load_model(model)
        reader = entry(m).reader
    except (ValueError, OSError, KeyError) as err:
        return [skipped_claim("7", "asyrp", model, SENTENCE, f"no saved property table and no model to measure: {err}")]
    if reader is None:
        return [skipped_claim("7", "asyrp", model, SENTENCE, f"no reader is registered for {model} in diffgeo.models.zoo, "
                              "so an edit's effect cannot be read; no saved table in "
                              f"{', '.join(map(str, folders))}")]
    classes = get_reader(reader).classes
    factors = [f for f in FACTOR_DEFAULTS if f in classes]
    if fast:
        factors = factors[:1]
    n, steps = (8, 5) if fast else (64, 20)
    claims = []
    for f in factors:
        a, b, f2, pair2 = FACTOR_DEFAULTS[f]
        prompt = "" if m.is_conditional else None
        _, dh = factor_directions(m, f, a, b, n=16, steps=steps, prompt=prompt)
        second = factor_directions(m, f2, *pair2, n=16, steps=steps, prompt=prompt)[1] if f2 in classes else None
        th = edit_properties(m, dh, space="h", factor=f, target=b, n=n, steps=steps, prompt=prompt, second=second,
                      second_factor=f2 if second is not None else None,
                      second_target=pair2[1] if second is not None else None, progress=progress)
        claims += _tagged(th, property_claims(th, source=f"computed now (n={n}, {steps} steps; no saved table in "
                                                        f"{', '.join(map(str, folders))})"))
    return claims


def _run(context: Context) -> AnalysisResult:
    """Claims 7a-7e on the primary model, from the saved tables in the report's folder or ``figures``
    (a quick table when there are none, unless the preset is full)."""
    claims = context.timed("asyrp", lambda: asyrp_properties(context.primary, fast=context.preset.name != "full",
                                                             tables=[context.out, Path("figures")]))
    return AnalysisResult(claims)


ANALYSIS = Analysis("asyrp", "7. the Asyrp property table from diffgeo.editing.properties.edit_properties", _run)
