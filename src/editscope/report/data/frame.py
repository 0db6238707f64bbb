"""A study's evaluation rows as one pandas DataFrame, and the report's aggregations over it.

The report's numbers (headline rates with their intervals, the per-category detail, paired tests,
breakdowns by probe meta) are computed here with vectorised column operations instead of a Python
loop over row dicts: the full flagship holds 426,258 rows. The per-row definitions stay in
:data:`editscope.metrics.METRICS` (each metric's ``column`` form is tested equal to its ``fn``).

Frame columns: the store's row fields (``method, unit, step, probe_set, index, edit_index, category,
..., greedy, base_greedy``), booleans as 1.0/0.0 and missing values as NaN, plus ``root`` (the
protocol unit, see :func:`unit_root`), ``meta_id`` (one integer per distinct meta object, whose
parsed dict is in :attr:`RowFrame.metas`), ``answer_rule`` (the probe's answer rule name) and
``accepted`` (the tuple of answers it accepts: target and aliases), ``base_answer`` and
``base_status`` (the base model's answer key and known / wrong / none:
:func:`editscope.metrics.edit_metrics.base_answer_columns`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...metrics.answers import rule_name_of
from ...probe_versions import row_digest
from ...metrics.edit_metrics import METRICS, accepted_answers, aggregate_array, base_answer_columns
from ...runner.store import BOOL_FIELDS, ROW_FIELDS, ROW_KEYS, ResultsStore
from ...stats import cluster_bootstrap_mean, wilson_interval

#: row fields that are whole numbers (nullable Int64 in the frame)
INT_COLUMNS = ("step", "index", "edit_index", "n_tokens")
#: row fields that are real numbers (NaN where missing)
FLOAT_COLUMNS = ("logprob", "alt_logprob", "base_logprob", "kl", "base_margin", "token_acc", "token_agree")

_UNIT_ROOT = re.compile(r"^((?:edit|batch|step)-\d+)")


def unit_root(unit: str) -> str:
    """The protocol unit a row belongs to: ``edit-0003`` for ``edit-0003``, a placebo's
    ``edit-0003-d01`` and an unrelated edit's ``edit-0003-u02``."""
    m = _UNIT_ROOT.match(unit)
    return m.group(1) if m else unit


@dataclass
class Cell:
    """A reported value with its 95% interval and the number of observations behind it."""

    value: float
    low: float
    high: float
    n: int


@dataclass
class RowFrame:
    """The rows (:attr:`df`) and the parsed meta dicts they point at (``meta_id`` -> dict)."""

    df: pd.DataFrame
    metas: dict[int, Mapping[str, Any]]

    @classmethod
    def read(cls, store: ResultsStore) -> RowFrame:
        """Every row of ``store`` in storage order, read with one query (meta parsed once per
        distinct text)."""
        q, args = store.rows_query()
        df = pd.read_sql_query(q, store.db, params=args)
        codes, texts = pd.factorize(df.pop("meta"))
        metas = {i: json.loads(t) for i, t in enumerate(texts)}
        return cls._finish(df, codes, metas)

    @classmethod
    def of(cls, rows: list[Mapping[str, Any]]) -> RowFrame:
        """The frame of row dicts as :meth:`ResultsStore.rows` returns them (meta parsed)."""
        df = pd.DataFrame.from_records(rows, columns=[*ROW_KEYS, *ROW_FIELDS]) if rows else \
            pd.DataFrame(columns=[*ROW_KEYS, *ROW_FIELDS])
        metas: dict[int, Mapping[str, Any]] = {}
        ids = []
        empty: dict[str, Any] = {}
        for m in df.pop("meta"):
            m = m or empty
            metas.setdefault(id(m), m)
            ids.append(id(m))
        return cls._finish(df, np.asarray(ids, dtype=np.int64), metas)

    @classmethod
    def _finish(cls, df: pd.DataFrame, meta_ids: np.ndarray, metas: dict[int, Mapping[str, Any]]) -> RowFrame:
        for c in BOOL_FIELDS:
            df[c] = df[c].astype(float)
        for c in FLOAT_COLUMNS:
            df[c] = df[c].astype(float)
        for c in INT_COLUMNS:
            df[c] = df[c].astype(float).astype("Int64")
        df["meta_id"] = meta_ids
        roots = {u: unit_root(u) for u in df["unit"].unique()}
        df["root"] = df["unit"].map(roots)
        # rows stored before digests were kept: their digest from their stored fields
        df["probe_digest"] = df["probe_digest"].astype(object)
        missing = df["probe_digest"].isna()
        if missing.any():
            part = df.loc[missing, ["prompt", "target", "category", "meta_id"]]
            codes, combos = pd.MultiIndex.from_frame(part).factorize()
            digests = np.asarray([row_digest(p, t, c, metas[int(i)]) for p, t, c, i in combos], dtype=object)
            df.loc[missing, "probe_digest"] = digests[codes]
        # each probe's answer rule and accepted answers, once per distinct (target, meta)
        codes, combos = pd.MultiIndex.from_arrays([df["target"], df["meta_id"]]).factorize()
        rules = [rule_name_of(t, metas[int(i)]) for t, i in combos]
        accepted = [accepted_answers(t, metas[int(i)]) for t, i in combos]
        df["answer_rule"] = pd.Series(np.asarray(rules, dtype=object)[codes] if len(df) else [], index=df.index,
                                      dtype=object)
        acc = np.empty(len(accepted), dtype=object)
        acc[:] = accepted
        df["accepted"] = pd.Series(acc[codes] if len(df) else [], index=df.index, dtype=object)
        # the base model's answer and its status (known / wrong / none): every locality split reads them
        keys, status = base_answer_columns(df)
        key_col = np.empty(len(keys), dtype=object)
        key_col[:] = keys
        df["base_answer"], df["base_status"] = pd.Series(key_col, index=df.index, dtype=object), status
        return cls(df, metas)

    def without(self, units: set[tuple[str, str]]) -> RowFrame:
        """The frame without the rows of ``units`` ((method, unit) pairs)."""
        if not units:
            return self
        keys = pd.MultiIndex.from_frame(self.df[["method", "unit"]])
        return RowFrame(self.df[~keys.isin(list(units))], self.metas)

    def to_rows(self, index: pd.Index | None = None) -> list[dict[str, Any]]:
        """The rows (all, or those of ``index``) as the dicts :meth:`ResultsStore.rows` returns:
        booleans as bool, missing values as None, meta as its parsed dict."""
        df = self.df if index is None else self.df.loc[index]
        columns = []
        for f in (*ROW_KEYS, *ROW_FIELDS):
            if f == "meta":
                columns.append([self.metas[i] for i in df["meta_id"].tolist()])
                continue
            vals = df[f].to_numpy(dtype=object, na_value=None).tolist()
            if f in BOOL_FIELDS:
                vals = [None if v is None else bool(v) for v in vals]
            columns.append(vals)
        keys = (*ROW_KEYS, *ROW_FIELDS)
        return [dict(zip(keys, rec)) for rec in zip(*columns)]

    def metric(self, name: str) -> pd.Series:
        """``METRICS[name]`` per row (float, NaN where it does not apply), computed once."""
        cache = self.__dict__.setdefault("_metric", {})
        if name not in cache:
            cache[name] = METRICS[name].column(self.df)
        return cache[name]

    def keyed(self, index: pd.Index, keys: tuple[str, ...], metric: str) -> pd.Series:
        """``metric`` over the rows of ``index`` where it applies, indexed by one integer per distinct
        ``keys`` value (the probe identity two methods are paired on); a key that repeats keeps its
        last row."""
        codes = self.__dict__.setdefault("_key_codes", {})
        if keys not in codes:
            codes[keys] = pd.Series(pd.MultiIndex.from_frame(self.df[list(keys)]).factorize()[0], index=self.df.index)
        vals = self.metric(metric).loc[index]
        out = pd.Series(vals.to_numpy(), index=codes[keys].loc[index].to_numpy()).dropna()
        return out[~out.index.duplicated(keep="last")]

    def key_roots(self, keys: tuple[str, ...]) -> pd.Series:
        """The protocol unit root (the edit) of each probe key code :meth:`keyed` gives for ``keys``
        (the last row's, as :meth:`keyed` keeps)."""
        self.keyed(self.df.index[:0], keys, "logprob")  # builds the key codes
        codes = self.__dict__["_key_codes"][keys]
        out = pd.Series(self.df["root"].to_numpy(), index=codes.to_numpy())
        return out[~out.index.duplicated(keep="last")]

    def meta_mask(self, index: pd.Index, where: Mapping[str, str]) -> pd.Series:
        """Rows (of ``index``) whose meta matches every ``{key: value}`` (values compared as text; a
        list-valued entry matches when one element does)."""
        ids = self.df.loc[index, "meta_id"]
        ok = {i: all(k in self.metas[i] and want in meta_texts(self.metas[i][k]) for k, want in where.items())
              for i in ids.unique()}
        return ids.map(ok).astype(bool)

    def meta_groups(self, index: pd.Index, key: str) -> dict[str, pd.Index]:
        """``{text value of meta[key]: row labels}`` over the rows of ``index`` that have the key (a
        list-valued entry puts the row under each element)."""
        ids = self.df.loc[index, "meta_id"]
        by_value: dict[str, list[int]] = {}
        for i in ids.unique():
            m = self.metas[i]
            if key in m:
                for x in meta_texts(m[key]):
                    by_value.setdefault(x, []).append(i)
        return {x: ids.index[ids.isin(mids)] for x, mids in by_value.items()}


def meta_texts(v: Any) -> list[str]:
    """A probe meta entry as the text values it is grouped and matched by (one per list element)."""
    return [str(x) for x in (v if isinstance(v, list) else [v])]


def values_cell(values: pd.Series, clusters: pd.Series | None, kind: str = "rate") -> Cell | None:
    """The mean of the non-NaN ``values`` (a rate: truthy = 1) with its 95% interval: a cluster
    bootstrap over ``clusters`` (the edit each value belongs to) when given with >= 2 distinct
    clusters; else a Wilson interval (rate) or a t-interval (``kind="mean"``) over the values.
    Where every cluster gives the same rate the bootstrap cannot see beyond its few clusters, so a
    Wilson interval over the clusters is used instead."""
    ok = values.notna()
    vals = values[ok].to_numpy(dtype=float)
    if kind == "rate":
        vals = (vals != 0).astype(float)
    if vals.size == 0:
        return None
    if clusters is not None:
        cl = clusters[ok].to_numpy()
        n_clusters = len(pd.unique(cl))
        if n_clusters >= 2:
            iv = cluster_bootstrap_mean(vals, cl)
            if iv.low == iv.high and kind == "rate":
                w = wilson_interval(round(iv.value * n_clusters), n_clusters)
                return Cell(iv.value, min(w.low, iv.value), max(w.high, iv.value), iv.n)
            return Cell(iv.value, iv.low, iv.high, iv.n)
    agg = aggregate_values(pd.Series(vals), kind)
    return Cell(agg["value"], agg["low"], agg["high"], int(agg["n"]))


def aggregate_values(values: pd.Series, kind: str, confidence: float = 0.95) -> dict[str, float] | None:
    """:func:`editscope.metrics.aggregate` of a float Series (NaN = not applicable)."""
    return aggregate_array(values.dropna().to_numpy(dtype=float), kind, confidence)


def summarize_frame(frame: RowFrame, index: pd.Index, metrics: Iterable[str] | None = None,
                    confidence: float = 0.95) -> dict[str, dict[str, dict[str, float]]]:
    """:func:`editscope.metrics.summarize` of the rows in ``index``: per category (in order of first
    appearance) and ``"all"``, each applicable metric's value, interval and n."""
    names = list(metrics) if metrics is not None else list(METRICS)
    for n in names:
        if n not in METRICS:
            raise KeyError(f"unknown metric {n!r}; known: {', '.join(METRICS)}")
    cats = frame.df.loc[index, "category"]
    groups = {c: cats.index[cats == c] for c in cats.unique()}
    groups["all"] = index
    out: dict[str, dict[str, dict[str, float]]] = {}
    for cat, idx in groups.items():
        cell = {}
        for n in names:
            m = METRICS[n]
            agg = aggregate_values(frame.metric(n).loc[idx], m.kind, confidence)
            if agg is not None:
                cell[n] = {**agg, "version": m.version}
        out[cat] = cell
    return out


def paired_values(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean arrays over the probes both keyed value Series have (see
    :meth:`RowFrame.keyed`): ``a``'s and ``b``'s values, in the same probe order."""
    common = a.index.intersection(b.index)
    return a.loc[common].to_numpy() != 0, b.loc[common].to_numpy() != 0


__all__ = ["Cell", "RowFrame", "aggregate_values", "meta_texts", "paired_values",
           "summarize_frame", "unit_root", "values_cell"]
