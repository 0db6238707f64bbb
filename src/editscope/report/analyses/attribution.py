"""Attributing side effects to an edit: the excess over a control, locality by the base model's
margin, the identity control's exceptions, and paired tests among all methods.

``excess_changed`` (per method and category): the method's rate of changed answers minus the
rate of its control's, where a probe's answer changed when ``answer_unchanged`` is false. The
control is the method's matched ``placebo`` (mean over its draws) or its ``unrelated`` /
``unrelated_other`` edits (mean over them). Probes are paired by (study edit, probe set, probe):
every control draw of an edit is evaluated on exactly the probes the method's unit was. The 95%
interval is :func:`editscope.stats.excess_rate`'s two-level bootstrap: resample the control draws
and, at the same time, the probes (one edit) or the edits as clusters (several edits), so that
it carries both the probe sampling and the control's own variability.

The symmetric kinds ``unrelated-own`` / ``unrelated_other-own`` compare, unpaired, the method's
changed rate on the study edit's own category (``near``) with each unrelated edit's changed rate
on *its* own neighbourhood of that category (``control-near``), so that an unrelated edit's
damaged neighbourhood is not read as the study edit's "far" set
(:func:`editscope.stats.symmetric_excess`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from ...metrics.edit_metrics import METRICS
from ...runner.plan import own_category
from ...stats import ExcessResult, excess_rate, symmetric_excess, verdict
from ..documents.placeholders import STUDY, DocumentError, StudyContext
from ..formats.table import fmt_cell, fmt_p
from ..data.results import (KNOWN, LOCALITY, Cell, StudyResults, Test, adjust, category_index, category_rows, index_cell, is_locality,
                      known_only, paired_test, split_known, unit_root)

#: base-model margin bins (top-1 minus top-2 next-token log-probability, nats): (label, low, high)
MARGIN_BINS = (("<0.1", 0.0, 0.1), ("0.1-1", 0.1, 1.0), ("1-3", 1.0, 3.0), (">3", 3.0, float("inf")))
CONTROL_KINDS = ("placebo", "unrelated", "unrelated_other")
#: an unrelated-edit control measured on its own neighbourhood: ``<kind>-own``
OWN_SUFFIX = "-own"
SYMMETRIC_KINDS = ("unrelated-own", "unrelated_other-own")
EXCESS_KINDS = (*CONTROL_KINDS, *SYMMETRIC_KINDS)
KIND_LABEL = {"placebo": "matched placebo", "unrelated": "unrelated edits (same kind)",
              "unrelated_other": "unrelated edits (other kind)",
              "unrelated-own": "unrelated edits (same kind), each on its own neighbourhood",
              "unrelated_other-own": "unrelated edits (other kind), each on its own neighbourhood"}


def _changed(row: dict[str, Any]) -> bool | None:
    same = METRICS["answer_unchanged"].fn(row)
    return None if same is None else not same


def control_of(res: StudyResults, method: str, kind: str) -> str | None:
    """The label of ``method``'s control of ``kind`` in this study, or None."""
    return next((lab for lab, (k, of) in res.controls.items() if k == kind and of == method and lab in res.methods),
                None)


def _refused(res: StudyResults, control: str) -> set[str]:
    """Units of a control method rolled back or refused before any change (status ``failed``)."""
    return {u.unit for u in res.units if u.method == control and u.status == "failed"}


def failed_controls(res: StudyResults, control: str) -> set[str]:
    """Units of a control method whose edit did not take: rolled back (status ``failed``), or an
    unrelated edit whose own prompt does not give its target (``control-target`` answer)."""
    def make() -> set[str]:
        out = _refused(res, control)
        df = res.frame.df
        own = df[(df["method"] == control) & (df["category"] == "control-target")]
        if len(own):
            hit = res.frame.metric("answer_hit").loc[own.index]
            out |= set(own.loc[(hit != 1).to_numpy(), "unit"])
        return out

    return res.cached(("failed_controls", control), make)


@dataclass(frozen=True)
class ControlTake:
    """How many of a control's edits took: ``took`` of ``units`` reached their own target answer;
    ``refused`` were rolled back or refused before any change (e.g. a no-op edit); ``missed`` ran
    but their own prompt does not give their target."""
    units: int
    took: int
    refused: int
    missed: int


def control_take(res: StudyResults, control: str) -> ControlTake:
    """Count ``control``'s units by whether their edit took (see :func:`failed_controls`)."""
    units = {u.unit for u in res.units if u.method == control}
    refused = _refused(res, control)
    failed = failed_controls(res, control) & units
    return ControlTake(len(units), len(units - failed), len(refused), len(failed - refused))


def locality_categories(res: StudyResults, known: bool = False) -> list[str]:
    """The locality categories (pooled :data:`LOCALITY` first when there are several); ``known``: each
    restricted to the probes the base model answers correctly (:data:`KNOWN`)."""
    cats = sorted(c for c in res.frame.df["category"].unique() if is_locality(c))
    cats = [LOCALITY, *cats] if len(cats) > 1 else cats
    return [c + KNOWN for c in cats] if known else cats


def _changed_series(res: StudyResults, index) -> "pd.Series":
    """1.0 where a row's answer changed from the base model's, 0.0 where not (rows without an answer
    comparison dropped)."""
    same = res.frame.metric("answer_unchanged").loc[index].dropna()
    return 1.0 - same


def symmetric(res: StudyResults, method: str, kind: str = "unrelated", cat: str = LOCALITY,
              n_resamples: int = 2000, seed: int = 0) -> ExcessResult | None:
    """``method``'s changed rate on the study edits' own ``cat`` probes minus its ``kind`` control
    edits' changed rates on their own ``cat`` neighbourhoods (``control-<cat>``; for
    :data:`LOCALITY` every locality category that has its own counterpart, on both sides),
    unpaired, over the edits both measured. A
    control edit that did not take is left out. None without such a control or
    without own-neighbourhood rows (a study stored before they were measured). ``cat`` with the
    :data:`KNOWN` suffix keeps, on both sides, only the probes whose base answer is right."""
    ctl = control_of(res, method, kind)
    if ctl is None:
        return None
    cat, known = split_known(cat)
    df = res.frame.df
    idx = res.final_index(ctl)
    cats = df.loc[idx, "category"]
    # the categories both sides have: the pooled cell compares like with like (a global suite such
    # as written facts has no "own" counterpart around an unrelated edit)
    both = [c for c in df["category"].unique() if is_locality(c) and (cats == own_category(c)).any()] \
        if cat == LOCALITY else [cat]
    mine_all = res.final_index(method)
    mine = mine_all[df.loc[mine_all, "category"].isin(both).to_numpy()]
    theirs = idx[cats.isin([own_category(c) for c in both]).to_numpy()]
    if known:
        mine, theirs = known_only(res, mine), known_only(res, theirs)
    if not len(mine) or not len(theirs):
        return None
    failed = failed_controls(res, ctl)
    m = _changed_series(res, mine)
    c = _changed_series(res, theirs)
    c = c[~df.loc[c.index, "unit"].isin(failed).to_numpy()]
    m_by = {r: g.to_numpy(dtype=bool) for r, g in m.groupby(df.loc[m.index, "root"].to_numpy())}
    c_by: dict[str, list[np.ndarray]] = defaultdict(list)
    for (r, _), g in c.groupby([df.loc[c.index, "root"].to_numpy(), df.loc[c.index, "unit"].to_numpy()]):
        c_by[r].append(g.to_numpy(dtype=bool))
    edits = [r for r in m_by if c_by.get(r)]
    if not edits:
        return None
    return symmetric_excess([m_by[r] for r in edits], [c_by[r] for r in edits], n_resamples=n_resamples, seed=seed,
                            margin=res.margin)


def excess(res: StudyResults, method: str, kind: str = "placebo", cat: str = LOCALITY,
           n_resamples: int = 2000, seed: int = 0) -> ExcessResult | None:
    """``excess_changed`` of ``method`` over its control of ``kind`` on category ``cat`` (or a
    pseudo-category), or None when the study has no such control or no paired probes. A
    symmetric kind (``unrelated-own``) gives :func:`symmetric`."""
    if kind.endswith(OWN_SUFFIX):
        return symmetric(res, method, kind.removesuffix(OWN_SUFFIX), cat, n_resamples, seed)
    ctl = control_of(res, method, kind)
    if ctl is None:
        return None
    mine: dict[tuple, bool] = {}
    for r in category_rows(res, method, cat):
        v = _changed(r)
        if v is not None:
            mine[(unit_root(r["unit"]), r["probe_set"], r["index"])] = v
    failed = failed_controls(res, ctl)
    # a control edit that did not take is left out: with one study edit its whole draw goes; with
    # several, only that edit's draw (draws are exchangeable within an edit, not matched across)
    draws: dict[str, dict[tuple, bool]] = defaultdict(dict)  # unit suffix (-d01, -u02) -> probe -> changed
    for r in category_rows(res, ctl, cat):
        v = _changed(r)
        if v is not None and r["unit"] not in failed:
            root = unit_root(r["unit"])
            draws[r["unit"][len(root):]][(root, r["probe_set"], r["index"])] = v
    if len({k[0] for k in mine}) <= 1:
        keys = [k for k in mine if draws and all(k in d for d in draws.values())]
    else:
        keys = [k for k in mine if any(k in d for d in draws.values())]
    if not keys:
        return None
    m = np.array([mine[k] for k in keys], dtype=bool)
    c = np.array([[d.get(k, False) for k in keys] for d in draws.values()], dtype=bool)
    present = np.array([[k in d for k in keys] for d in draws.values()], dtype=bool)
    clusters = [k[0] for k in keys] if res.clustered else None
    return excess_rate(m, c, clusters, n_resamples=n_resamples, seed=seed, margin=res.margin, control_present=present)


@dataclass
class ExcessRow:
    method: str
    kind: str
    control: str
    cells: dict[str, ExcessResult | None]  # category -> result


def excess_rows(res: StudyResults, kind: str = "placebo", known: bool = False) -> list[ExcessRow]:
    """One row per edit method that has a control of ``kind``: its excess on every locality
    category (pooled first; ``known``: on the probes the base model answers correctly)."""
    out = []
    cats = locality_categories(res, known)
    for m in res.edit_methods:
        ctl = control_of(res, m, kind.removesuffix(OWN_SUFFIX))
        if ctl is not None:
            cells = {c: excess(res, m, kind, c) for c in cats}
            if not kind.endswith(OWN_SUFFIX) or any(v is not None for v in cells.values()):
                out.append(ExcessRow(m, kind, ctl, cells))
    return out


def margin_bin(margin: float | None) -> str | None:
    if margin is None:
        return None
    for label, lo, hi in MARGIN_BINS:
        if lo <= margin < hi:
            return label
    return None


def margin_locality(res: StudyResults, method: str, metric: str = "answer_unchanged",
                    cat: str = LOCALITY) -> dict[str, Cell | None]:
    """``metric`` over ``cat`` per base-margin bin (:data:`MARGIN_BINS`); empty when the store
    has no margins (written before they were recorded)."""
    idx = category_index(res, res.final_index(method), cat)
    margins = res.frame.df.loc[idx, "base_margin"]
    if not margins.notna().any():
        return {}
    out: dict[str, Cell | None] = {}
    for label, lo, hi in MARGIN_BINS:
        inside = idx[((margins >= lo) & (margins < hi)).to_numpy()]
        out[label] = index_cell(res, inside, metric) if len(inside) else None
    return out


def identity_exceptions(res: StudyResults, limit: int = 20) -> tuple[int, int, list[dict[str, Any]]]:
    """The identity control's changed probes: ``(n changed at answer level, n probes, the first
    ``limit`` of them)``. Its locality should be exactly 1: each exception is a probe whose answer
    the evaluation itself does not reproduce (batching, padding, a tie in the argmax)."""
    ident = next((lab for lab, (k, _) in res.controls.items() if k == "identity" and lab in res.methods), None)
    if ident is None:
        return 0, 0, []
    rows = [r for r in res.final_rows(ident) if is_locality(r["category"])]
    bad = [r for r in rows if _changed(r)]
    return len(bad), len(rows), bad[:limit]


def strength_level(res: StudyResults, method: str) -> float | None:
    """The P(target | prompt) a method was run to (its ``strength: {p}``), None for its own default."""
    if res.study is None:
        return None
    spec = next((m for m in res.study.all_methods() if m.name == method), None)
    return spec.strength.p if spec is not None and spec.strength is not None else None


def pairwise_tests(res: StudyResults, cat: str = LOCALITY, metric: str = "answer_unchanged") -> list[Test]:
    """Paired exact McNemar between every two edit methods on ``metric`` over ``cat`` (same units
    and probes), Holm-adjusted over all pairs. ``Test.method`` is ``"a vs b"``; ``diff`` = b - a.
    Methods run at matched strength are compared only with methods run to the same level (and
    methods at their default strength only with each other): locality depends on how hard an edit
    pushes, so a pair at different strengths would compare pushes, not methods."""
    tests = []
    for a, b in combinations(res.edit_methods, 2):
        if strength_level(res, a) != strength_level(res, b):
            continue
        t = paired_test(res, b, a, cat, metric)  # b against a on the same probes: diff = b - a
        if t is not None:
            t.method = f"{a} vs {b}"
            tests.append(t)
    return adjust(tests)


__all__ = ["CONTROL_KINDS", "MARGIN_BINS", "ControlTake", "ExcessRow", "control_of", "control_take", "excess", "excess_rows", "failed_controls",
           "identity_exceptions",
           "locality_categories", "margin_bin", "margin_locality", "pairwise_tests", "strength_level", "symmetric"]


# ---- write-up placeholders (see editscope.report.documents.document)

def _excess_of(ctx: StudyContext, kind: str, args: str) -> ExcessResult:
    bits = args.split(":")
    if len(bits) not in (2, 3) or bits[1] not in EXCESS_KINDS:
        raise DocumentError(f"{{{{{kind}:{args}}}}}: write {{{{{kind}:METHOD:KIND[:CATEGORY]}}}} with KIND one "
                            f"of {', '.join(EXCESS_KINDS)}")
    if bits[0] not in ctx.res.methods:
        raise DocumentError(f"{{{{{kind}:{args}}}}}: no method {bits[0]!r} in this run")
    e = excess(ctx.res, bits[0], bits[1], bits[2] if len(bits) == 3 else LOCALITY)
    if e is None:
        raise DocumentError(f"{{{{{kind}:{args}}}}}: {bits[0]!r} has no {bits[1]} control with paired probes")
    return e


@STUDY.register("excess", "{{excess:METHOD:KIND[:CATEGORY]}}")
def _excess_value(ctx: StudyContext, args: str) -> str:
    e = _excess_of(ctx, "excess", args)
    return f"{e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"


@STUDY.register("excess_verdict", "{{excess_verdict:METHOD:KIND[:CATEGORY]}}")
def _excess_verdict(ctx: StudyContext, args: str) -> str:
    e = _excess_of(ctx, "excess_verdict", args)
    return (f"{verdict(e.pvalue, e.p_equivalence)} (bootstrap p {fmt_p(e.pvalue)}; equivalence within "
            f"+-{e.margin:g}: p {fmt_p(e.p_equivalence)}; one test, unadjusted)")


@STUDY.register("excess_rates", "{{excess_rates:METHOD:KIND[:CATEGORY]}}")
def _excess_rates(ctx: StudyContext, args: str) -> str:
    e = _excess_of(ctx, "excess_rates", args)
    return f"{e.method_rate:.3f} vs {e.control_rate:.3f} ({e.draws} draw{'s' if e.draws != 1 else ''})"


@STUDY.register("control_taken", "{{control_taken:METHOD:KIND}}")
def _control_taken(ctx: StudyContext, args: str) -> str:
    bits = args.split(":")
    if len(bits) != 2 or bits[1] not in CONTROL_KINDS:
        raise DocumentError(f"{{{{control_taken:{args}}}}}: write {{{{control_taken:METHOD:KIND}}}} with KIND "
                            f"one of {', '.join(CONTROL_KINDS)}")
    ctx.method("control_taken", args, bits[0])
    ctl = control_of(ctx.res, bits[0], bits[1])
    if ctl is None:
        raise DocumentError(f"{{{{control_taken:{args}}}}}: {bits[0]!r} has no {bits[1]} control in this run")
    t = control_take(ctx.res, ctl)
    out = f"{t.took} of {t.units}"
    extra = [f"{n} {what}" for n, what in ((t.missed, "missed its target" if t.missed == 1 else "missed their target"),
                                          (t.refused, "refused")) if n]
    return f"{out} ({'; '.join(extra)})" if extra else out


@STUDY.register("identity", "{{identity}}")
def _identity_kept(ctx: StudyContext, args: str) -> str:
    bad, n, _ = identity_exceptions(ctx.res)
    if n == 0:
        raise DocumentError("{{identity}}: this run has no identity control")
    return f"{n - bad} of {n}"


@STUDY.register("margin", "{{margin:METHOD:BIN}}")
def _margin_cell(ctx: StudyContext, args: str) -> str:
    bits = args.split(":")
    bins = [b for b, _, _ in MARGIN_BINS]
    if len(bits) != 2 or bits[1] not in bins:
        raise DocumentError(f"{{{{margin:{args}}}}}: write {{{{margin:METHOD:BIN}}}} with BIN one of {bins}")
    ctx.method("margin", args, bits[0])
    c = margin_locality(ctx.res, bits[0]).get(bits[1])
    return f"{fmt_cell(c)} (n={c.n})" if c is not None else "-"
