"""Named, versioned per-probe metrics of an edit (DESIGN.md "Protocols") and their aggregation.

Each metric maps one evaluation row (see :class:`editscope.evaluation.EvalResult`) to a value, or to
``None`` where it does not apply (e.g. ``prob`` needs an alternative target). Aggregates carry their
95% interval and n: rates use the Wilson interval, means the t-interval. Each metric also has its
column form (:attr:`Metric.column`: a DataFrame of rows -> one float per row, NaN where the row form
gives None), which the report aggregates with; tests hold the two forms equal.

| name | kind | definition |
|---|---|---|
| ``top1`` | rate | greedy decoding reproduces the whole target exactly (efficacy/generalization top-1) |
| ``prob`` | rate | P(target) > P(target_true): ROME efficacy/paraphrase score (ES/PS) |
| ``ns`` | rate | P(target) > P(target_new) on neighbourhood probes: ROME neighbourhood score |
| ``margin`` | mean | P(target) - P(alternative): ROME's magnitude scores (EM/PM/NM) |
| ``logprob`` | mean | summed log-probability of the target, nats |
| ``delta_logprob`` | mean | logprob minus the base model's, nats |
| ``unchanged`` | rate | greedy continuation identical to the base model's (locality) |
| ``answer_unchanged`` | rate | the first word of the greedy continuation (a number, a word or one symbol) is the base model's: the answer is the same even where what follows it changed ("2," vs "2+") |
| ``kl`` | mean | KL(base || edited) of the next-token distribution, nats, coarsened to the base's top-k tokens plus one bucket for the rest (a lower bound of the full KL) |
| ``says_target`` | rate | the greedy continuation is the watched edit target (output rate of e.g. "5") |
| ``token_acc`` | mean | share of target tokens that are the teacher-forced argmax (EasyEdit/KnowEdit Edit Succ., rephrase and portability accuracy) |
| ``locality_token_agreement`` | mean | share of the target's positions where the teacher-forced argmax token is the base model's (EasyEdit/KnowEdit locality) |
| ``changed_kl`` | rate | the answer changed (not ``answer_unchanged``) *and* the first-token KL exceeds :data:`KL_THRESHOLD` (0.1 nats): a change that is not just a near-tie flipping (lower is better) |
"""

from __future__ import annotations

from ..registry import Registry

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..stats import mean_interval, wilson_interval


@dataclass(frozen=True)
class Metric:
    """A named, versioned per-row metric. ``kind`` is ``"rate"`` (booleans) or ``"mean"``.

    ``fn`` maps one row (a mapping) to its value or None; ``column`` maps a DataFrame of rows (the
    row fields as columns, booleans as 1.0/0.0, missing as NaN) to a float Series on the same index:
    1.0/0.0 for a rate, NaN where ``fn`` gives None."""

    name: str
    version: int
    kind: str
    description: str
    fn: Callable[[Mapping[str, Any]], Any]
    column: Callable[[pd.DataFrame], pd.Series]

    @property
    def key(self) -> str:
        return f"{self.name}@v{self.version}"


def _alt(row: Mapping[str, Any], kind: str):
    if row.get("alt_logprob") is None or row.get("alt_kind") != kind:
        return None
    return row["logprob"] > row["alt_logprob"]


def _margin(row):
    if row.get("alt_logprob") is None:
        return None
    return math.exp(row["logprob"]) - math.exp(row["alt_logprob"])


def _delta(row):
    if row.get("base_logprob") is None:
        return None
    return row["logprob"] - row["base_logprob"]


_FIRST_WORD = re.compile(r"\s*(-?[^\W_]+|\S)")


def first_word(text: str) -> str:
    """The leading answer of a continuation: ``" -12, so"`` -> ``"-12"``, ``"Paris."`` -> ``"Paris"``,
    ``"+3"`` -> ``"+"``; ``""`` for blank text."""
    m = _FIRST_WORD.match(text or "")
    return m.group(1) if m else ""


def _answer_unchanged(row):
    if row.get("unchanged") is None or row.get("greedy") is None or row.get("base_greedy") is None:
        return None
    return bool(row["unchanged"]) or first_word(row["greedy"]) == first_word(row["base_greedy"])


#: first-token KL (nats) above which a changed answer counts for ``changed_kl``
KL_THRESHOLD = 0.1


def _changed_kl(row):
    same = _answer_unchanged(row)
    if same is None or row.get("kl") is None:
        return None
    return (not same) and row["kl"] > KL_THRESHOLD


# -- column forms (one float per row; NaN = not applicable) --------------------------------------

def _col(name: str) -> Callable[[pd.DataFrame], pd.Series]:
    def get(df: pd.DataFrame) -> pd.Series:
        if name not in df:
            return pd.Series(np.nan, index=df.index)
        return pd.to_numeric(df[name], errors="coerce").astype(float)
    return get


def _where(ok: pd.Series, values: pd.Series) -> pd.Series:
    return values.astype(float).where(ok)


def _alt_column(kind: str) -> Callable[[pd.DataFrame], pd.Series]:
    def get(df: pd.DataFrame) -> pd.Series:
        alt, lp = _col("alt_logprob")(df), _col("logprob")(df)
        return _where(alt.notna() & (df.get("alt_kind") == kind), lp > alt)
    return get


def _margin_column(df: pd.DataFrame) -> pd.Series:
    alt = _col("alt_logprob")(df)
    return _where(alt.notna(), np.exp(_col("logprob")(df)) - np.exp(alt))


def _delta_column(df: pd.DataFrame) -> pd.Series:
    base = _col("base_logprob")(df)
    return _where(base.notna(), _col("logprob")(df) - base)


def _first_words(texts: pd.Series) -> pd.Series:
    """:func:`first_word` of each text (computed once per distinct text)."""
    words = {t: first_word(t) for t in texts.dropna().unique()}
    return texts.map(words)


def _answer_unchanged_column(df: pd.DataFrame) -> pd.Series:
    unchanged = _col("unchanged")(df)
    ok = unchanged.notna() & df["greedy"].notna() & df["base_greedy"].notna()
    same = (unchanged == 1) | (_first_words(df["greedy"]) == _first_words(df["base_greedy"]))
    return _where(ok, same)


def _changed_kl_column(df: pd.DataFrame) -> pd.Series:
    same, kl = _answer_unchanged_column(df), _col("kl")(df)
    return _where(same.notna() & kl.notna(), (same == 0) & (kl > KL_THRESHOLD))


METRICS: Registry[Metric] = Registry("metric", {m.name: m for m in [
    Metric("top1", 1, "rate", "greedy decoding reproduces the whole target", lambda r: r["top1"], _col("top1")),
    Metric("prob", 1, "rate", "P(target) > P(target_true) (ROME ES/PS)", lambda r: _alt(r, "target_true"),
           _alt_column("target_true")),
    Metric("ns", 1, "rate", "P(target) > P(target_new) (ROME NS)", lambda r: _alt(r, "target_new"),
           _alt_column("target_new")),
    Metric("margin", 1, "mean", "P(target) - P(alternative) (ROME EM/PM/NM)", _margin, _margin_column),
    Metric("logprob", 1, "mean", "log P(target | prompt), nats", lambda r: r["logprob"], _col("logprob")),
    Metric("delta_logprob", 1, "mean", "logprob - base logprob, nats", _delta, _delta_column),
    Metric("unchanged", 1, "rate", "greedy continuation identical to the base's", lambda r: r.get("unchanged"),
           _col("unchanged")),
    Metric("answer_unchanged", 1, "rate", "first word of the greedy continuation is the base's",
           _answer_unchanged, _answer_unchanged_column),
    Metric("kl", 1, "mean", "KL(base || edited) next-token, top-k coarsened, nats", lambda r: r.get("kl"),
           _col("kl")),
    Metric("says_target", 1, "rate", "greedy continuation is the watched target", lambda r: r.get("says_target"),
           _col("says_target")),
    Metric("changed_kl", 1, "rate", f"answer changed and first-token KL > {KL_THRESHOLD} nats", _changed_kl,
           _changed_kl_column),
    Metric("token_acc", 1, "mean", "share of target tokens that are the teacher-forced argmax (EasyEdit)",
           lambda r: r.get("token_acc"), _col("token_acc")),
    Metric("locality_token_agreement", 1, "mean",
           "share of target positions whose teacher-forced argmax is the base's (EasyEdit locality)",
           lambda r: r.get("token_agree"), _col("token_agree")),
]})


def aggregate(values: Iterable[Any], kind: str, confidence: float = 0.95) -> dict[str, float] | None:
    """``{"value", "low", "high", "n"}`` of the non-None values, or None if there are none."""
    return aggregate_array(np.asarray([float(v) for v in values if v is not None], dtype=float), kind, confidence)


def aggregate_array(vals: np.ndarray, kind: str, confidence: float = 0.95) -> dict[str, float] | None:
    """:func:`aggregate` of a 1-D float array of applicable values (a rate counts the non-zero ones)."""
    if vals.size == 0:
        return None
    if kind == "rate":
        iv = wilson_interval(int((vals != 0).sum()), int(vals.size), confidence)
    else:
        iv = mean_interval(vals, confidence)
    return {"value": iv.value, "low": iv.low, "high": iv.high, "n": iv.n}


def summarize(rows: list[Mapping[str, Any]], metrics: Iterable[str] | None = None,
              confidence: float = 0.95) -> dict[str, dict[str, dict[str, float]]]:
    """Per category (and ``"all"``), each applicable metric's value, interval and n."""
    names = list(metrics) if metrics is not None else list(METRICS)
    for n in names:
        if n not in METRICS:
            raise KeyError(f"unknown metric {n!r}; known: {', '.join(METRICS)}")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["category"], []).append(r)
    groups["all"] = list(rows)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for cat, rs in groups.items():
        cell = {}
        for n in names:
            m = METRICS[n]
            agg = aggregate((m.fn(r) for r in rs), m.kind, confidence)
            if agg is not None:
                cell[n] = {**agg, "version": m.version}
        out[cat] = cell
    return out


def coarse_kl(base_top_logprobs: Iterable[float], edited_logprobs: Iterable[float]) -> float:
    """KL(p || q) over k named tokens plus one bucket holding the rest of each distribution.

    ``base_top_logprobs`` are log p of the base's top-k tokens; ``edited_logprobs`` are log q of the
    same tokens under the edited model. Merging outcomes never increases KL, so this is a lower bound
    of the full-vocabulary KL, exact when the k tokens carry all the mass.
    """
    p = [math.exp(v) for v in base_top_logprobs]
    q = [math.exp(v) for v in edited_logprobs]
    if len(p) != len(q):
        raise ValueError(f"got {len(p)} base and {len(q)} edited log-probabilities")
    kl = sum(pi * (math.log(pi) - math.log(max(qi, 1e-30))) for pi, qi in zip(p, q) if pi > 0)
    p_rest, q_rest = max(1.0 - sum(p), 0.0), max(1.0 - sum(q), 1e-30)
    if p_rest > 1e-12:
        kl += p_rest * (math.log(p_rest) - math.log(q_rest))
    return max(kl, 0.0)


def says(text: str, target: str) -> bool:
    """Whether a continuation ``text`` is ``target``: it starts with the stripped target and the
    next character, if any, does not continue the same word or number ("5\\n" and "5." say "5";
    "56" does not)."""
    t, w = text.lstrip(), target.strip()
    if not w or not t.startswith(w):
        return False
    return len(t) == len(w) or not t[len(w)].isalnum()
