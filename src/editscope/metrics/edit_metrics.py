"""Named, versioned per-probe metrics of an edit (docs/architecture.md "Protocols") and their aggregation.

Each metric maps one evaluation row (see :class:`editscope.evaluation.EvalResult`) to a value, or to
``None`` where it does not apply (e.g. ``prob`` needs an alternative target). Aggregates carry their
95% interval and n: rates use the Wilson interval, means the t-interval. Each metric also has its
column form (:attr:`Metric.column`: a DataFrame of rows -> one float per row, NaN where the row form
gives None), which the report aggregates with; tests hold the two forms equal.

Each metric names its protocol (:attr:`Metric.protocol`): ``teacher-forced`` (prob, ns, margin,
logprob, delta_logprob, token_acc, locality_token_agreement: the target's probability given the
prompt), ``greedy`` (the decoded continuation: target length + 1 tokens, or a probe's
``gen_tokens`` for free generation, :mod:`editscope.probes.protocols`) or ``next-token`` (kl).

| name | kind | definition |
|---|---|---|
| ``answer_hit`` | rate | the answer read from the greedy continuation by the probe's answer rule (:mod:`.answers`: the first integer, or normalised text) is the target or an alias: efficacy and paraphrase success (the headline) |
| ``top1`` | rate | the greedy tokens start with the target's tokens (token-level: ``"12"`` starts with the target ``"1"``; kept, labelled, beside ``answer_hit``) |
| ``prob`` | rate | P(target) > P(target_true): ROME efficacy/paraphrase score (ES/PS) |
| ``ns`` | rate | P(target) > P(target_new) on neighbourhood probes: ROME neighbourhood score |
| ``margin`` | mean | P(target) - P(alternative): ROME's magnitude scores (EM/PM/NM) |
| ``logprob`` | mean | summed log-probability of the target, nats |
| ``delta_logprob`` | mean | logprob minus the base model's, nats |
| ``unchanged`` | rate | greedy continuation identical to the base model's (locality) |
| ``answer_unchanged`` | rate | (v2) the answer read by the probe's rule is the base model's (the first integer; normalised text up to a clause mark; without an answer, the same first word): the answer is the same even where what follows it changed ("2," vs "2+") |
| ``answer_unchanged_known`` / ``_wrong`` / ``_none`` | rate | ``answer_unchanged`` over the probes the base model answers correctly (its answer reaches the probe's target, the ground truth on locality probes), wrongly, or with no answer the rule can read |
| ``base_known`` | rate | the base model's answer reaches the probe's target (its accuracy where the target is the ground truth) |
| ``kl`` | mean | KL(base || edited) of the next-token distribution, nats, coarsened to the base's top-k tokens plus one bucket for the rest (a lower bound of the full KL) |
| ``says_target`` | rate | the greedy continuation is the watched edit target (output rate of e.g. "5") |
| ``token_acc`` | mean | share of target tokens that are the teacher-forced argmax (EasyEdit/KnowEdit Edit Succ., rephrase and portability accuracy) |
| ``locality_token_agreement`` | mean | share of the target's positions where the teacher-forced argmax token is the base model's (EasyEdit/KnowEdit locality) |
| ``changed_kl`` | rate | the answer changed (not ``answer_unchanged``) *and* the first-token KL exceeds :data:`KL_THRESHOLD` (0.1 nats): a change that is not just a near-tie flipping (lower is better) |
"""

from __future__ import annotations

from ..registry import Registry

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..stats import mean_interval, wilson_interval
from .answers import ANSWER_RULES, answer_key, rule_name_of


#: the target's log-probability given the prompt (no decoding)
TEACHER_FORCED = "teacher-forced"
#: the greedy continuation, decoded for the target's length + 1 token (or a probe's ``gen_tokens``:
#: free generation), its answer read by the probe's answer rule
GREEDY = "greedy"
#: the next-token distribution after the prompt
NEXT_TOKEN = "next-token"


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
    #: how the model is read: :data:`TEACHER_FORCED`, :data:`GREEDY` or :data:`NEXT_TOKEN`
    protocol: str = "greedy"

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


def accepted_answers(target: str, meta: Mapping[str, Any] | None) -> tuple[str, ...]:
    """What a probe accepts as its answer: the target and ``meta["aliases"]``."""
    al = (meta or {}).get("aliases") or ()
    return (target, *([al] if isinstance(al, str) else al))


def _rule(row):
    return ANSWER_RULES[rule_name_of(row["target"], row.get("meta"))]


def _reaches(row, field: str):
    if row.get(field) is None:
        return None
    return _rule(row).reaches(row[field], accepted_answers(row["target"], row.get("meta")))


def _answer_unchanged(row):
    if row.get("unchanged") is None or row.get("greedy") is None or row.get("base_greedy") is None:
        return None
    rule = _rule(row)
    return bool(row["unchanged"]) or answer_key(rule, row["greedy"]) == answer_key(rule, row["base_greedy"])


BASE_STATUSES = ("known", "wrong", "none")


def base_status(row) -> str | None:
    """How the base model answers a probe: ``known`` (its answer reaches the target), ``wrong`` (an
    answer the rule reads, not the target) or ``none`` (no answer the rule can read)."""
    if row.get("base_greedy") is None:
        return None
    if _reaches(row, "base_greedy"):
        return "known"
    return "wrong" if _rule(row).parse(row["base_greedy"])[0] is not None else "none"


def _unchanged_if(status: str):
    def fn(row):
        return _answer_unchanged(row) if base_status(row) == status else None
    return fn


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


def _rules_and_answers(df: pd.DataFrame) -> tuple[list[str], list[tuple[str, ...]]]:
    """Per row: its answer rule's name and accepted answers. From the frame's ``answer_rule`` and
    ``accepted`` columns when it has them (:class:`editscope.report.data.frame.RowFrame`), else from
    ``target`` and ``meta``."""
    if "answer_rule" in df and "accepted" in df:
        return df["answer_rule"].tolist(), df["accepted"].tolist()
    metas = df["meta"].tolist() if "meta" in df else [None] * len(df)
    targets = df["target"].tolist()
    return ([rule_name_of(t, m) for t, m in zip(targets, metas)],
            [accepted_answers(t, m) for t, m in zip(targets, metas)])


def _reach_column(field: str) -> Callable[[pd.DataFrame], pd.Series]:
    def get(df: pd.DataFrame) -> pd.Series:
        rules, accepted = _rules_and_answers(df)
        memo: dict[tuple, bool] = {}
        out = []
        for rule, acc, text in zip(rules, accepted, df[field].tolist()):
            if not isinstance(text, str):
                out.append(np.nan)
                continue
            key = (rule, acc, text)
            if key not in memo:
                memo[key] = ANSWER_RULES[rule].reaches(text, acc)
            out.append(float(memo[key]))
        return pd.Series(out, index=df.index, dtype=float)
    return get


def _answer_keys(df: pd.DataFrame, field: str, rules: list[str]) -> list[Any]:
    memo: dict[tuple[str, str], Any] = {}
    out = []
    for rule, text in zip(rules, df[field].tolist()):
        if not isinstance(text, str):
            out.append(None)
            continue
        if (rule, text) not in memo:
            memo[(rule, text)] = answer_key(ANSWER_RULES[rule], text)
        out.append(memo[(rule, text)])
    return out


def base_answer_columns(df: pd.DataFrame) -> tuple[list[Any], pd.Series]:
    """Per row: the base model's answer key (:func:`answer_key` of ``base_greedy``) and its status
    (:func:`base_status`; None where there is no base output), computed once per distinct (rule,
    accepted answers, base output). From the frame's ``base_answer`` and ``base_status`` columns when
    it has them (:class:`editscope.report.data.frame.RowFrame` computes them once)."""
    if "base_answer" in df and "base_status" in df:
        return df["base_answer"].tolist(), df["base_status"]
    rules, accepted = _rules_and_answers(df)
    memo: dict[tuple, tuple[Any, str]] = {}
    keys, status = [], []
    for rule, acc, text in zip(rules, accepted, df["base_greedy"].tolist()):
        if not isinstance(text, str):
            keys.append(None)
            status.append(None)
            continue
        if (rule, acc, text) not in memo:
            r = ANSWER_RULES[rule]
            key = answer_key(r, text)
            memo[(rule, acc, text)] = key, ("known" if r.reaches(text, acc) else
                                            "wrong" if key[0] == "answer" else "none")
        key, st = memo[(rule, acc, text)]
        keys.append(key)
        status.append(st)
    return keys, pd.Series(status, index=df.index, dtype=object)


def _answer_unchanged_column(df: pd.DataFrame) -> pd.Series:
    unchanged = _col("unchanged")(df)
    ok = unchanged.notna() & df["greedy"].notna() & df["base_greedy"].notna()
    rules, _ = _rules_and_answers(df)
    base_keys, _ = base_answer_columns(df)
    same_answer = pd.Series([a is not None and a == b for a, b in zip(_answer_keys(df, "greedy", rules), base_keys)],
                            index=df.index)
    return _where(ok, (unchanged == 1) | same_answer)


def base_status_column(df: pd.DataFrame) -> pd.Series:
    """:func:`base_status` per row (object Series; None where there is no base output)."""
    return base_answer_columns(df)[1]


def _base_known_column(df: pd.DataFrame) -> pd.Series:
    status = base_status_column(df)
    return _where(status.notna(), status == "known")


def _unchanged_if_column(status: str) -> Callable[[pd.DataFrame], pd.Series]:
    def get(df: pd.DataFrame) -> pd.Series:
        return _answer_unchanged_column(df).where(base_status_column(df) == status)
    return get


def _changed_kl_column(df: pd.DataFrame) -> pd.Series:
    same, kl = _answer_unchanged_column(df), _col("kl")(df)
    return _where(same.notna() & kl.notna(), (same == 0) & (kl > KL_THRESHOLD))


METRICS: Registry[Metric] = Registry("metric", {m.name: m for m in [
    Metric("answer_hit", 1, "rate", "the answer read by the probe's rule is the target (or an alias)",
           lambda r: _reaches(r, "greedy"), _reach_column("greedy")),
    Metric("top1", 1, "rate", "greedy tokens start with the target's tokens (token-level)", lambda r: r["top1"],
           _col("top1")),
    Metric("prob", 1, "rate", "P(target) > P(target_true) (ROME ES/PS)", lambda r: _alt(r, "target_true"),
           _alt_column("target_true"), protocol=TEACHER_FORCED),
    Metric("ns", 1, "rate", "P(target) > P(target_new) (ROME NS)", lambda r: _alt(r, "target_new"),
           _alt_column("target_new"), protocol=TEACHER_FORCED),
    Metric("margin", 1, "mean", "P(target) - P(alternative) (ROME EM/PM/NM)", _margin, _margin_column, protocol=TEACHER_FORCED),
    Metric("logprob", 1, "mean", "log P(target | prompt), nats", lambda r: r["logprob"], _col("logprob"), protocol=TEACHER_FORCED),
    Metric("delta_logprob", 1, "mean", "logprob - base logprob, nats", _delta, _delta_column, protocol=TEACHER_FORCED),
    Metric("unchanged", 1, "rate", "greedy continuation identical to the base's", lambda r: r.get("unchanged"),
           _col("unchanged")),
    Metric("answer_unchanged", 2, "rate", "the answer read by the probe's rule is the base's",
           _answer_unchanged, _answer_unchanged_column),
    *(Metric(f"answer_unchanged_{st}", 1, "rate", f"answer_unchanged where the base's answer is {st}",
             _unchanged_if(st), _unchanged_if_column(st)) for st in BASE_STATUSES),
    Metric("base_known", 1, "rate", "the base model's answer reaches the target",
           lambda r: _reaches(r, "base_greedy"), _base_known_column),
    Metric("kl", 1, "mean", "KL(base || edited) next-token, top-k coarsened, nats", lambda r: r.get("kl"),
           _col("kl"), protocol=NEXT_TOKEN),
    Metric("says_target", 1, "rate", "greedy continuation is the watched target", lambda r: r.get("says_target"),
           _col("says_target")),
    Metric("changed_kl", 1, "rate", f"answer changed and first-token KL > {KL_THRESHOLD} nats", _changed_kl,
           _changed_kl_column),
    Metric("token_acc", 1, "mean", "share of target tokens that are the teacher-forced argmax (EasyEdit)",
           lambda r: r.get("token_acc"), _col("token_acc"), protocol=TEACHER_FORCED),
    Metric("locality_token_agreement", 1, "mean",
           "share of target positions whose teacher-forced argmax is the base's (EasyEdit locality)",
           lambda r: r.get("token_agree"), _col("token_agree"), protocol=TEACHER_FORCED),
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
