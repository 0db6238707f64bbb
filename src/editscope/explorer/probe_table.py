"""The explorer's probe table: one method's stored rows filtered, compared with another method's
(or the method's placebo's) rows of the same probes, sorted and paged on the server.

A row's key across units is ``(root, probe_set, index)``: the protocol unit root (the edit, see
:func:`editscope.report.data.frame.unit_root`) and the probe. "Changed" is answer-level: the answer
read by the probe's rule differs from the base model's (metric ``answer_unchanged``), falling back to
the whole greedy output where no rule applies.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ..metrics.edit_metrics import BASE_STATUSES
from ..report.analyses.attribution import MARGIN_BINS
from ..report.data.results import LOCALITY, StudyResults, category_index

#: the columns a page may be sorted by (``probe``: storage order)
SORT_KEYS = ("probe", "prompt", "category", "unit", "base_margin", "kl", "logprob")
MAX_PAGE = 500
#: the placeholder for "the method's own placebo" in ``vs``
PLACEBO = "placebo"


class QueryError(ValueError):
    """A query value the run cannot answer; :attr:`field` names the form field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class ProbeQuery(BaseModel):
    """The probe table's filters (every one optional but ``method``), sort and page."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(min_length=1, max_length=200)
    category: str | None = Field(None, max_length=200, description="a category, or 'locality' for all of them")
    unit: str | None = Field(None, max_length=200)
    step: int | None = Field(None, ge=0, description="sequential runs: the step (default the last)")
    changed: Literal["any", "changed", "unchanged"] = "any"
    base: Literal["any", "known", "wrong", "none"] = "any"
    margin: Literal["any", "<0.1", "0.1-1", "1-3", ">3"] = "any"
    op: Literal["+", "-", "*"] | None = None
    a: int | None = Field(None, ge=0)
    b: int | None = Field(None, ge=0)
    text: str | None = Field(None, max_length=200, description="prompt contains (case-insensitive)")
    vs: str | None = Field(None, max_length=200, description="another method, or 'placebo' for this method's")
    differs: bool = False
    sort: Literal["probe", "prompt", "category", "unit", "base_margin", "kl", "logprob"] = "probe"
    order: Literal["asc", "desc"] = "asc"
    page: int = Field(1, ge=1)
    size: int = Field(50, ge=1, le=MAX_PAGE)


assert tuple(label for label, _, _ in MARGIN_BINS) == ("<0.1", "0.1-1", "1-3", ">3")  # ProbeQuery.margin's choices
assert BASE_STATUSES == ("known", "wrong", "none")  # ProbeQuery.base's choices


def changed_column(res: StudyResults) -> pd.Series:
    """Per frame row: 1.0 when the answer differs from the base model's, 0.0 when not, NaN where
    neither the answer nor the greedy output is known (computed once)."""
    def make() -> pd.Series:
        answer = res.frame.metric("answer_unchanged")
        whole = res.frame.df["unchanged"]
        return 1.0 - answer.where(answer.notna(), whole)

    return res.cached(("explorer", "changed"), make)


def method_index(res: StudyResults, method: str, step: int | None = None) -> pd.Index:
    """The frame labels of ``method``'s rows: its final rows, or those of ``step``."""
    if method != "base" and method not in res.methods:
        raise QueryError("method", f"no method {method!r} in this run; it has {', '.join(['base', *res.methods])}")
    if step is None:
        return res.final_index(method)
    df = res.frame.df
    idx = df.index[(df["method"] == method).to_numpy()]
    steps = df.loc[idx, "step"]
    if not (steps == step).any():
        raise QueryError("step", f"{method!r} has no rows at step {step}; its steps are "
                                 f"{', '.join(str(int(s)) for s in sorted(steps.dropna().unique()))}")
    return idx[(steps == step).to_numpy(dtype=bool)]


def resolve_vs(res: StudyResults, method: str, vs: str) -> str:
    """``vs`` as a method label: :data:`PLACEBO` becomes the placebo matched to ``method``."""
    if vs == PLACEBO:
        mine = [c for c, (kind, of) in res.controls.items() if kind == "placebo" and of == method and c in res.methods]
        if not mine:
            raise QueryError("vs", f"{method!r} has no placebo in this run; compare it with another method instead")
        return mine[0]
    if vs == "base":
        raise QueryError("vs", "every row already shows the base model's output beside the method's; compare with "
                               "another method or with 'placebo'")
    if vs not in res.methods:
        raise QueryError("vs", f"no method {vs!r} in this run; it has {', '.join(res.methods)}")
    return vs


def _keyed(res: StudyResults, method: str) -> pd.DataFrame:
    """``method``'s final rows indexed by (root, probe_set, index) (a placebo's first draw where it
    has several): greedy output, changed, unit."""
    def make() -> pd.DataFrame:
        df = res.frame.df
        idx = res.final_index(method)
        part = pd.DataFrame({"greedy": df.loc[idx, "greedy"], "changed": changed_column(res).loc[idx],
                             "says_target": df.loc[idx, "says_target"], "unit": df.loc[idx, "unit"]})
        part.index = pd.MultiIndex.from_frame(df.loc[idx, ["root", "probe_set", "index"]])
        return part[~part.index.duplicated(keep="first")]

    return res.cached(("explorer", "keyed", method), make)


def _filtered(res: StudyResults, q: ProbeQuery) -> pd.Index:
    df = res.frame.df
    idx = method_index(res, q.method, q.step)
    if q.category is not None:
        cats = set(df.loc[idx, "category"].unique())
        if q.category != LOCALITY and q.category not in cats:
            raise QueryError("category", f"{q.method!r} has no {q.category!r} probes; it has "
                                         f"{', '.join(sorted(cats))} (or {LOCALITY!r}: all locality categories)")
        idx = category_index(res, idx, q.category)
    if q.unit is not None:
        units = df.loc[idx, "unit"]
        if not (units == q.unit).any():
            raise QueryError("unit", f"{q.method!r} has no unit {q.unit!r} among the rows asked for")
        idx = idx[(units == q.unit).to_numpy()]
    if q.changed != "any":
        ch = changed_column(res).loc[idx]
        idx = idx[(ch == (1.0 if q.changed == "changed" else 0.0)).to_numpy()]
    if q.base != "any":
        idx = idx[(df.loc[idx, "base_status"] == q.base).to_numpy()]
    if q.margin != "any":
        lo, hi = next((lo, hi) for label, lo, hi in MARGIN_BINS if label == q.margin)
        m = df.loc[idx, "base_margin"]
        idx = idx[((m >= lo) & (m < hi)).to_numpy(dtype=bool)]
    where = {k: str(v) for k, v in (("op", q.op), ("a", q.a), ("b", q.b)) if v is not None}
    if where:
        idx = idx[res.frame.meta_mask(idx, where).to_numpy()]
    if q.text:
        idx = idx[df.loc[idx, "prompt"].str.contains(q.text, case=False, regex=False).to_numpy()]
    return idx


def _value(v: Any) -> Any:
    """A frame value as JSON: NaN/NA as None, numpy scalars as Python ones."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def probe_page(res: StudyResults, q: ProbeQuery) -> dict[str, Any]:
    """One page of the table: ``{"total", "page", "pages", "size", "vs", "rows"}``; each row holds
    the probe (prompt, target, category, meta), the base model's and the method's outputs side by
    side, whether the answer changed, and with ``vs`` the other method's output of the same probe."""
    df = res.frame.df
    idx = _filtered(res, q)
    vs = resolve_vs(res, q.method, q.vs) if q.vs else None
    other = None
    if vs is not None:
        keys = pd.MultiIndex.from_frame(df.loc[idx, ["root", "probe_set", "index"]])
        other = _keyed(res, vs).reindex(keys)
        other.index = idx
        if q.differs:
            mine = changed_column(res).loc[idx]
            keep = other["changed"].notna() & mine.notna() & (other["changed"] != mine)
            idx, other = idx[keep.to_numpy()], other[keep.to_numpy()]
    elif q.differs:
        raise QueryError("differs", "'only where they differ' needs a method to compare with (vs)")
    if q.sort != "probe":  # stable, and rows without a value last in either order
        idx = df.loc[idx, q.sort].sort_values(ascending=q.order == "asc", kind="stable", na_position="last").index
    elif q.order == "desc":
        idx = idx[::-1]
    total = len(idx)
    pages = max(1, -(-total // q.size))
    if q.page > pages:
        raise QueryError("page", f"page {q.page} is past the last page ({pages}) of {total} rows")
    page = idx[(q.page - 1) * q.size: q.page * q.size]
    changed = changed_column(res)
    rows = []
    for label in page:
        r = df.loc[label]
        row = {"method": r["method"], "unit": r["unit"], "step": _value(r["step"]), "probe_set": r["probe_set"],
               "index": _value(r["index"]), "category": r["category"], "prompt": r["prompt"], "target": r["target"],
               "meta": dict(res.frame.metas[int(r["meta_id"])]), "base_greedy": _value(r["base_greedy"]),
               "greedy": _value(r["greedy"]), "changed": _bool(changed.at[label]), "digest": r["probe_digest"],
               "says_target": _bool(r["says_target"]), "base_status": _value(r["base_status"]),
               "base_margin": _value(r["base_margin"]), "kl": _value(r["kl"]), "logprob": _value(r["logprob"])}
        if other is not None:
            o = other.loc[label]
            row["vs"] = {"method": vs, "unit": _value(o["unit"]), "greedy": _value(o["greedy"]),
                         "changed": _bool(o["changed"]), "says_target": _bool(o["says_target"])}
        rows.append(row)
    return {"total": total, "page": q.page, "pages": pages, "size": q.size, "vs": vs, "rows": rows}


def _bool(v: Any) -> bool | None:
    v = _value(v)
    return None if v is None else bool(v)


def probe_rows(res: StudyResults, digest: str) -> dict[str, Any]:
    """One probe (by its content digest: prompt, target, category and meta) and its rows in every
    unit of the run: every method, control, edit and step that measured it."""
    df = res.frame.df
    hit = df.index[(df["probe_digest"] == digest).to_numpy(dtype=bool)]
    if not len(hit):
        raise QueryError("digest", f"no probe with digest {digest!r} in this run")
    first = df.loc[hit[0]]
    changed = changed_column(res)
    units = [{"method": df.at[i, "method"], "unit": df.at[i, "unit"], "step": _value(df.at[i, "step"]),
              "greedy": _value(df.at[i, "greedy"]), "changed": _bool(changed.at[i]),
              "says_target": _bool(df.at[i, "says_target"]), "kl": _value(df.at[i, "kl"]),
              "logprob": _value(df.at[i, "logprob"])} for i in hit]
    return {"digest": digest, "category": first["category"], "prompt": first["prompt"],
            "target": first["target"], "meta": dict(res.frame.metas[int(first["meta_id"])]),
            "base_greedy": _value(first["base_greedy"]), "base_status": _value(first["base_status"]),
            "base_margin": _value(first["base_margin"]), "units": units}


__all__ = ["MAX_PAGE", "PLACEBO", "ProbeQuery", "QueryError", "SORT_KEYS", "changed_column", "method_index",
           "probe_page", "probe_rows", "resolve_vs"]
