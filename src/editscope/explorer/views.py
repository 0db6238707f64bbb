"""What the explorer's pages show of one stored run, as JSON-ready dicts: its description, the
report's headline and attribution tables, one method's blast radius on the operand grid, and the
curves of a sequential run. Every number comes from the report's own functions, so the explorer and
the written report cannot disagree."""

from __future__ import annotations

from typing import Any

from ..report.analyses.anatomy import anatomy_curves
from ..report.analyses.attribution import MARGIN_BINS
from ..metrics.edit_metrics import BASE_STATUSES
from ..report.data.grid import BLAST_LABELS, OperandGrid, operand_grid
from ..report.data.results import LOCALITY, StudyResults, sequential_curves
from ..report.formats.render import excess_table, main_table
from ..report.formats.table import Table
from .probe_table import PLACEBO, SORT_KEYS, QueryError


def table_json(t: Table) -> dict[str, Any]:
    """A report table as ``{"name", "caption", "header", "rows": [[{"text", "bold"}]]}``."""
    return {"name": t.name, "caption": t.caption, "header": t.header,
            "rows": [[{"text": text, "bold": bold} for text, bold in row] for row in t.rows]}


def run_info(res: StudyResults) -> dict[str, Any]:
    """What the run is and what its pages can filter by (computed once per load)."""
    return res.cached(("explorer", "run_info"), lambda: _run_info(res))


def _run_info(res: StudyResults) -> dict[str, Any]:
    m = res.meta
    df = res.frame.df
    placebo_of = {of: c for c, (kind, of) in res.controls.items() if kind == "placebo" and c in res.methods}
    return {"name": m.get("name"), "model": m.get("model_name"), "protocol": res.protocol,
            "status": "in progress" if res.partial else "complete", "units": len(res.units),
            "rows": int(len(df)), "methods": ["base", *res.methods], "edit_methods": res.edit_methods,
            "controls": {c: {"kind": kind, "of": of} for c, (kind, of) in res.controls.items()},
            "placebo_of": placebo_of, "categories": sorted(df["category"].unique().tolist()) + [LOCALITY],
            "base_statuses": list(BASE_STATUSES), "margin_bins": [label for label, _, _ in MARGIN_BINS],
            "sort_keys": list(SORT_KEYS), "placebo": PLACEBO,
            "steps": sorted(int(s) for s in df["step"].dropna().unique()) if res.protocol == "sequential" else [],
            "grid_methods": [mm for mm in res.edit_methods if operand_grid(res, mm) is not None],
            "interval_note": res.interval_note}


def summary(res: StudyResults) -> dict[str, Any]:
    """The report's headline table and, where the run has placebos, its excess-over-placebo table."""
    def make() -> dict[str, Any]:
        tables = [main_table(res)]
        excess = excess_table(res, "placebo")
        if excess is not None:
            tables.append(excess)
        return {"tables": [table_json(t) for t in tables]}

    return res.cached(("explorer", "summary"), make)


def grid(res: StudyResults, method: str) -> dict[str, Any]:
    """``method``'s blast radius: per op an ``n x n`` list of cell codes (``[a][b]``, codes
    :data:`BLAST_LABELS`), the edited cell and the changed count per op."""
    if method not in res.edit_methods:
        raise QueryError("method", f"no edit method {method!r} in this run; it has {', '.join(res.edit_methods)}")
    return res.cached(("explorer", "grid", method), lambda: _grid(res, method))


def _grid(res: StudyResults, method: str) -> dict[str, Any]:
    g = operand_grid(res, method)
    if g is None:
        raise QueryError("method", "this run has no arithmetic grid probes")
    return grid_json(g)


def grid_json(g: OperandGrid) -> dict[str, Any]:
    """An :class:`OperandGrid` as the page draws it: per op an ``n x n`` list of cell codes
    (``[a][b]``), the changed count per op, the edited cell and the unit the rows come from (None for
    rows that are not stored, as a playground edit's)."""
    return {"method": g.method, "n": g.n, "ops": g.ops, "labels": list(BLAST_LABELS),
            "cells": {op: g.cells[op].tolist() for op in g.ops}, "changed": {op: g.changed(op) for op in g.ops},
            "target": None if g.target is None else {"op": g.target[0], "a": g.target[1], "b": g.target[2]},
            "unit": g.rows[0].get("unit")}


def curves(res: StudyResults) -> dict[str, Any]:
    """A sequential run's curves per method against the number of edits: perplexity (``ppl``),
    retention of earlier edits, the update norm and the cumulative norm (``[[step, value], ...]``);
    empty for other protocols."""
    if res.protocol != "sequential":
        return {"methods": {}}
    out: dict[str, dict[str, list[list[float]]]] = {}
    anatomy = anatomy_curves(res)
    for m, c in sequential_curves(res).items():
        series = {**c, **anatomy.get(m, {})}
        out[m] = {k: [[s, v] for s, v in pts] for k, pts in series.items() if pts}
    return {"methods": out}


def warm(res: StudyResults) -> None:
    """Compute once, at load, what the first page view would otherwise wait seconds for (the
    attribution tables' bootstrap, the grids); later calls read the results' caches."""
    run_info(res)
    summary(res)


__all__ = ["curves", "grid", "grid_json", "run_info", "summary", "table_json", "warm"]
