"""Read a run folder and compute what the report shows: per-method headline metrics with 95%
intervals, paired exact McNemar tests against a reference method (Holm-corrected), perplexity and
downstream changes, sequential curves. Numbers come only from the results store.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..metrics.edit_metrics import METRICS, aggregate, summarize
from ..runner.store import FILENAME, ResultsStore
from ..stats import holm, mcnemar_exact, mean_interval

CATEGORY_ORDER = ("target", "paraphrase", "portability", "near", "far", "general")
EFFICACY = {"target", "paraphrase", "portability", "portability-hop"}
LEAK = "leak"  # pseudo-category: output rate of the edit target on locality probes


def headline_metric(category: str) -> str:
    """The metric a category is judged by: exact top-1 for what should change, ``unchanged`` for
    what should not (against the base model's own output)."""
    return "top1" if category in EFFICACY else "unchanged"


@dataclass
class Cell:
    value: float
    low: float
    high: float
    n: int


@dataclass
class Column:
    key: str            # e.g. "target/top1", "leak/says_target", "ppl:me_ppl_50", "piqa:acc"
    label: str
    higher_is_better: bool
    cells: dict[str, Cell | None] = field(default_factory=dict)  # method -> cell
    headline: bool = True  # in the main table (else only in the downstream detail table)
    short: str = ""        # terminal header

    def best(self) -> str | None:
        vals = {m: c.value for m, c in self.cells.items() if c is not None and m != "base"}
        if not vals:
            return None
        return (max if self.higher_is_better else min)(vals, key=vals.get)


@dataclass
class Test:
    method: str
    column: str
    n: int
    n01: int
    n10: int
    diff: float
    p: float
    p_holm: float = 1.0


@dataclass
class StudyResults:
    run_dir: Path
    meta: dict[str, Any]
    config: dict[str, Any]
    methods: list[str]
    rows: list[dict[str, Any]]
    scalars: list[dict[str, Any]]
    events: list[dict[str, Any]]
    units: list[Any]
    n_units_planned: int | None
    columns: list[Column]
    tests: list[Test]
    reference: str | None

    @property
    def partial(self) -> bool:
        return self.meta.get("status") != "complete"

    @property
    def protocol(self) -> str:
        return self.config.get("protocol", {}).get("kind", "single")

    def final_rows(self, method: str) -> list[dict[str, Any]]:
        """The rows a method is summarised by: all its units (single/batch), or the last evaluated
        step (sequential)."""
        rows = [r for r in self.rows if r["method"] == method]
        if self.protocol == "sequential" and method != "base" and rows:
            last = max(r["step"] for r in rows)
            rows = [r for r in rows if r["step"] == last]
        return rows

    def summary(self, method: str) -> dict[str, dict[str, dict[str, float]]]:
        return summarize(self.final_rows(method), self.config.get("metrics"))


def _cell(agg: dict[str, float] | None) -> Cell | None:
    return Cell(agg["value"], agg["low"], agg["high"], int(agg["n"])) if agg else None


def _leak_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["category"] not in EFFICACY and r.get("says_target") is not None]


def _columns(res: StudyResults) -> list[Column]:
    cats = sorted({r["category"] for r in res.rows},
                  key=lambda c: (CATEGORY_ORDER.index(c) if c in CATEGORY_ORDER else len(CATEGORY_ORDER), c))
    cols = []
    everyone = ["base", *res.methods]
    for cat in cats:
        metric = headline_metric(cat)
        col = Column(f"{cat}/{metric}", f"{cat} {metric}", True, short=cat[:10])
        for m in everyone:
            rs = [r for r in res.final_rows(m) if r["category"] == cat]
            col.cells[m] = _cell(aggregate((METRICS[metric].fn(r) for r in rs), "rate"))
        cols.append(col)
    if any(r.get("says_target") is not None for r in res.rows):
        col = Column(f"{LEAK}/says_target", "target output rate (locality probes)", False, short="says target")
        for m in everyone:
            col.cells[m] = _cell(aggregate((r["says_target"] for r in _leak_rows(res.final_rows(m))), "rate"))
        cols.append(col)
    by: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    last_step: dict[str, int] = {}
    for s in res.scalars:
        if s["name"] == "guard_ppl" or s["value"] is None:
            continue
        if res.protocol == "sequential" and s["method"] != "base":
            last_step[s["method"]] = max(last_step.get(s["method"], 0), s["step"])
    for s in res.scalars:
        if s["name"] == "guard_ppl" or s["value"] is None:
            continue
        if res.protocol == "sequential" and s["method"] != "base" and s["step"] != last_step.get(s["method"]):
            continue
        by[s["name"]][s["method"]].append(float(s["value"]))
    for name, per in sorted(by.items(), key=lambda kv: (not kv[0].startswith("ppl:"), kv[0])):
        lower = name.startswith("ppl:") or name.endswith(":ppl")
        is_ppl = name.startswith("ppl:")
        col = Column(name, name.replace("ppl:", "perplexity ") if is_ppl else name, not lower,
                     headline=is_ppl or name.endswith(":acc"), short="ppl" if is_ppl else name.split(":")[0])
        for m in everyone:
            vals = per.get(m)
            if vals:
                iv = mean_interval(vals) if len(vals) > 1 else None
                v = statistics.fmean(vals)
                col.cells[m] = Cell(v, iv.low if iv else v, iv.high if iv else v, len(vals))
            else:
                col.cells[m] = None
        cols.append(col)
    return cols


def _paired(res: StudyResults, method: str, ref: str, cat: str) -> tuple[list[bool], list[bool]]:
    metric = headline_metric(cat) if cat != LEAK else "says_target"

    def table(m):
        rs = res.final_rows(m)
        rs = _leak_rows(rs) if cat == LEAK else [r for r in rs if r["category"] == cat]
        key = (lambda r: (r["probe_set"], r["index"])) if res.protocol == "sequential" else \
            (lambda r: (r["unit"], r["probe_set"], r["index"]))
        return {key(r): METRICS[metric].fn(r) for r in rs}

    a, b = table(ref), table(method)
    keys = [k for k in a if k in b and a[k] is not None and b[k] is not None]
    return [bool(a[k]) for k in keys], [bool(b[k]) for k in keys]


def _tests(res: StudyResults) -> list[Test]:
    if res.reference is None:
        return []
    tests = []
    for col in res.columns:
        cat, _, metric = col.key.partition("/")
        if metric not in ("top1", "unchanged", "says_target"):
            continue
        for m in res.methods:
            if m == res.reference:
                continue
            a, b = _paired(res, m, res.reference, cat)
            if not a:
                continue
            t = mcnemar_exact(a, b)
            tests.append(Test(m, col.key, len(a), t.n01, t.n10, (sum(b) - sum(a)) / len(a), t.pvalue))
    for t, p in zip(tests, holm([t.p for t in tests]) if tests else []):
        t.p_holm = p
    return tests


def load_results(run_dir: str | Path, reference: str | None = None) -> StudyResults:
    """Everything the report needs from ``run_dir`` (a folder written by ``editscope run``)."""
    run_dir = Path(run_dir)
    store = ResultsStore(run_dir / FILENAME)
    try:
        meta = store.meta()
        config = meta.get("config", {})
        planned = [m.get("label") or m["method"] for m in config.get("methods", [])]
        units = store.units()
        present = {u.method for u in units}
        methods = [m for m in planned if m in present]
        ref = reference or config.get("reference") or (methods[0] if methods else None)
        if ref is not None and ref not in methods:
            raise ValueError(f"reference method {ref!r} has no results in {run_dir}; have {methods}")
        res = StudyResults(run_dir, meta, config, methods, store.rows(), store.scalars(), store.events(), units,
                           None, [], [], ref)
    finally:
        store.close()
    res.columns = _columns(res)
    res.tests = _tests(res)
    return res


def sequential_curves(res: StudyResults) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per method: ``ppl`` (guard or configured perplexity per step) and ``retention`` (top-1 on the
    target probes of earlier edits, at each evaluated step)."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for m in res.methods:
        ppl = sorted((s["step"], s["value"]) for s in res.scalars
                     if s["method"] == m and s["value"] is not None and (s["name"] == "guard_ppl" or s["name"].startswith("ppl:")))
        seen: dict[int, list[bool]] = defaultdict(list)
        for r in res.rows:
            if r["method"] == m and r["category"] == "target" and r["edit_index"] is not None and r["edit_index"] < r["step"] - 1:
                seen[r["step"]].append(bool(r["top1"]))
        ret = sorted((st, sum(v) / len(v)) for st, v in seen.items() if v)
        out[m] = {"ppl": ppl, "retention": ret}
    return out


__all__ = ["Cell", "Column", "StudyResults", "Test", "headline_metric", "load_results", "sequential_curves"]
