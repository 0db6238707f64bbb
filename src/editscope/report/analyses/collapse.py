"""Collapse accounting: per-edit perplexity as a distribution, not a mean.

"The Butterfly Effect of Model Editing" treats perplexity on ME-PPL as the surrogate for model
collapse: a few single edits send it to the thousands while the mean over edits hides them. For
every method and perplexity corpus of a stored run this module counts the units whose perplexity
is at or above an absolute threshold (default 1000) and those at or above ``ratio`` x the base
model's (default 2, "doubled"), each with an exact (Clopper-Pearson) 95% interval, and lists the
worst ``k`` edits with their requests. In a sequential run the same thresholds give each method's
collapse point: the first number of edits after which perplexity crossed them.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from ...metrics.perplexity import check_thresholds
from ...stats import Interval, clopper_pearson
from ..documents.placeholders import STUDY, DocumentError, StudyContext
from ..data.results import StudyResults
from ..formats.table import count_with_rate
from ...errors import InputError
from ...runner.plan import build_plan

DEFAULT_THRESHOLD = 1000.0
DEFAULT_RATIO = 2.0
DEFAULT_WORST = 5


@dataclass(frozen=True)
class UnitPerplexity:
    """One unit's perplexity on one corpus, with the edit(s) it made (``prompt -> target``)."""

    unit: str
    step: int
    value: float
    requests: list[str]


@dataclass
class CollapseRow:
    """One method on one corpus: counts of collapsed and doubled units and the distribution."""

    method: str
    corpus: str
    base: float | None
    n: int
    collapsed: int
    collapsed_iv: Interval
    doubled: int | None
    doubled_iv: Interval | None
    median: float
    p90: float
    maximum: float
    worst: list[UnitPerplexity] = field(default_factory=list)
    values: list[UnitPerplexity] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class CollapsePoint:
    """Sequential: the first step (edits applied) at which perplexity crossed each line."""

    method: str
    corpus: str
    base: float | None
    steps: int
    final: float
    collapsed_at: int | None
    doubled_at: int | None


def collapse_lines(res: StudyResults) -> tuple[float, float]:
    """The run's collapse lines: its protocol's absolute ``threshold`` (default 1000) and ``ratio``
    to the base model's perplexity (default 2, "doubled")."""
    proto = res.config.get("protocol", {})
    return float(proto.get("threshold", DEFAULT_THRESHOLD)), float(proto.get("ratio") or DEFAULT_RATIO)


def _requests_by_unit(res: StudyResults) -> dict[tuple[str, str], list[str]]:
    """``(method, unit) -> ["prompt -> target", ...]`` read from each unit's target rows."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    df = res.frame.df
    targets = df.loc[df["category"] == "target", ["method", "unit", "prompt", "target"]].drop_duplicates()
    for m, u, p, t in targets.itertuples(index=False):
        out[(m, u)].append(f"{p} -> {t}")
    missing = [u for u in res.units if u.method != "base" and (u.method, u.unit) not in out and u.edits]
    if missing and res.study is not None:  # no probes (a mining run): the requests from the study's edits

        try:
            edits = build_plan(res.study).edits
        except (InputError, OSError, ValueError):  # the dataset is not here: the table shows no request
            return out
        for u in missing:
            out[(u.method, u.unit)] = [f"{r.prompt} -> {r.target_new}" for i in u.edits if i < len(edits)
                                       for r in edits[i].requests]
    return out


def _is_ppl(name: str, guard: bool) -> bool:
    return name.startswith("ppl:") or (guard and name == "guard_ppl")


def _base(res: StudyResults) -> dict[str, float]:
    return {k: v for k, v in res.base_scalars().items() if _is_ppl(k, True)}


def _per_unit(res: StudyResults, guard: bool = False) -> dict[tuple[str, str], list[UnitPerplexity]]:
    """Per (method, corpus) the units' perplexities; ``guard``: also the sequential guard's
    ``guard_ppl`` (measured after every edit, where ``ppl:*`` may be measured every k)."""
    reqs = _requests_by_unit(res)
    out: dict[tuple[str, str], list[UnitPerplexity]] = defaultdict(list)
    for (m, unit, step), values in res.scalar_values().items():
        if m == "base":
            continue
        for name, value in values.items():
            if _is_ppl(name, guard):
                out[(m, name)].append(UnitPerplexity(unit, step, value, reqs.get((m, unit), [])))
    return out


def collapse_table(res: StudyResults, threshold: float = DEFAULT_THRESHOLD, ratio: float = DEFAULT_RATIO,
                   worst: int = DEFAULT_WORST) -> list[CollapseRow]:
    """Per method (study order) and perplexity corpus, over its units (single/batch protocol; a
    sequential run counts its evaluated steps). Empty when the run measured no perplexity.
    Computed once per thresholds for ``res`` (the report's table and figure share it)."""
    check_thresholds(threshold, ratio)
    return res.memo(("collapse_table", threshold, ratio, worst), lambda: _collapse_table(res, threshold, ratio, worst))


def _collapse_table(res: StudyResults, threshold: float, ratio: float, worst: int) -> list[CollapseRow]:
    base = _base(res)
    per = _per_unit(res)
    out = []
    for m in res.methods:
        for corpus in sorted({c for mm, c in per if mm == m}):
            units = per[(m, corpus)]
            vals = sorted(u.value for u in units)
            b = base.get(corpus)
            collapsed = sum(v >= threshold for v in vals)
            doubled = sum(v >= ratio * b for v in vals) if b else None
            q = statistics.quantiles(vals, n=10, method="inclusive")[-1] if len(vals) > 1 else vals[0]
            out.append(CollapseRow(
                m, corpus, b, len(vals), collapsed, clopper_pearson(collapsed, len(vals)),
                doubled, clopper_pearson(doubled, len(vals)) if doubled is not None else None,
                statistics.median(vals), q, vals[-1],
                sorted(units, key=lambda u: -u.value)[:worst], units))
    return out


def collapse_points(res: StudyResults, threshold: float = DEFAULT_THRESHOLD,
                    ratio: float = DEFAULT_RATIO) -> list[CollapsePoint]:
    """Sequential runs: per method and corpus (the configured ``ppl:*`` and the guard's
    ``guard_ppl``; a ``ppl:*`` on the guard's own corpus is left out), the first step at or above
    each line (None: never)."""
    check_thresholds(threshold, ratio)
    if res.protocol != "sequential":
        return []
    base = _base(res)
    per = _per_unit(res, guard=True)
    # the guard measures its corpus after every edit: the same corpus every k edits adds nothing
    proto = res.study.protocol if res.study is not None else None
    guarded = f"ppl:{proto.guard_corpus}" if proto is not None and proto.guard != "off" else None
    out = []
    for m in res.methods:
        for corpus in sorted({c for mm, c in per if mm == m}):
            if corpus == guarded and (m, "guard_ppl") in per:
                continue
            curve = sorted((u.step, u.value) for u in per[(m, corpus)])
            b = base.get(corpus)
            first = (lambda line: next((st for st, v in curve if v >= line), None))
            out.append(CollapsePoint(m, corpus, b, curve[-1][0], curve[-1][1], first(threshold),
                                     first(ratio * b) if b else None))
    return out


COLLAPSE_FIELDS = ("units", "collapsed", "doubled", "median", "p90", "max", "base")
#: a sequential chain's collapse point (its first curve: the guard's when it ran)
POINT_FIELDS = ("steps", "final", "collapsed_at", "doubled_at")


@STUDY.register("collapse", "{{collapse:METHOD:FIELD}}")
def collapse_value(ctx: StudyContext, args: str) -> str:
    """``{{collapse:METHOD:FIELD}}`` (the run's first perplexity corpus, its protocol's thresholds)."""
    res = ctx.res
    method, _, field = args.partition(":")
    sequential = res.protocol == "sequential"
    fields = POINT_FIELDS + ("base",) if sequential else COLLAPSE_FIELDS
    if field not in fields:
        raise DocumentError(f"{{{{collapse:{args}}}}}: give {{{{collapse:METHOD:FIELD}}}} with FIELD one of "
                            f"{', '.join(fields)} ({'a sequential' if sequential else 'a single or batch'} run)")
    threshold, ratio = collapse_lines(res)
    if sequential:
        points = collapse_points(res, threshold, ratio)
        point = next((p for p in points if p.method == method), None)
        if point is None:
            raise DocumentError(f"{{{{collapse:{args}}}}}: no perplexity curve for {method!r}; have "
                                f"{sorted({p.method for p in points})}")
        if field in ("collapsed_at", "doubled_at"):
            at = getattr(point, field)
            return "never" if at is None else str(at)
        value = {"steps": point.steps, "final": point.final, "base": point.base}[field]
        return "-" if value is None else (str(value) if field == "steps" else f"{value:.2f}")
    rows = collapse_table(res, threshold, ratio)
    row = next((r for r in rows if r.method == method), None)
    if row is None:
        raise DocumentError(f"{{{{collapse:{args}}}}}: no collapse accounting for {method!r}; have "
                            f"{sorted({r.method for r in rows})} (single or batch units with perplexity)")
    if field == "units":
        return str(row.n)
    if field in ("collapsed", "doubled"):
        return count_with_rate(getattr(row, field), getattr(row, f"{field}_iv"))
    value = {"median": row.median, "p90": row.p90, "max": row.maximum, "base": row.base}[field]
    return "-" if value is None else f"{value:.2f}"
