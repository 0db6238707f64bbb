"""What the base model answers, and locality read by it: the base model's answer distribution on the
locality probes (known / wrong / no answer, and its most frequent answers), locality split by that
status per method, and the stored edits that were no-ops for the base model (its answer already
was, or started with, the target: refused by ``apply_edit`` since, but present in older stores).

Known-answer locality (probes the base model answers correctly) is the headline where a suite has
ground truth: elsewhere "locality" mostly measures whether wrong answers stay wrong.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ...metrics.answers import ANSWER_RULES
from ...metrics.edit_metrics import BASE_STATUSES, base_status_column
from ..data.results import LOCALITY, Cell, StudyResults, category_index, index_cell


@dataclass
class BaseAnswers:
    """The base model's answers over one category (or all locality probes)."""

    category: str
    n: int
    share: dict[str, float]          # status -> share of the probes
    top: list[tuple[str, float]]     # most frequent answers (as text) and their shares


def base_answers(res: StudyResults, top: int = 3) -> list[BaseAnswers]:
    """Per locality category (and all of them): the base model's answer statuses and top answers."""
    idx = category_index(res, res.final_index("base"), LOCALITY)
    if not len(idx):
        return []
    df = res.frame.df
    status = base_status_column(df).loc[idx]
    cats = df.loc[idx, "category"]
    out = []
    for cat in [*dict.fromkeys(cats), LOCALITY]:
        sel = idx if cat == LOCALITY else idx[(cats == cat).to_numpy()]
        st = status.loc[sel]
        answers = Counter()
        for rule, text in zip(df.loc[sel, "answer_rule"], df.loc[sel, "base_greedy"]):
            a, _ = ANSWER_RULES[rule].parse(text or "")
            answers["(none)" if a is None else str(a)] += 1
        n = len(sel)
        out.append(BaseAnswers(cat, n, {s: float((st == s).sum()) / n for s in BASE_STATUSES},
                               [(a, k / n) for a, k in answers.most_common(top)]))
    return out


def locality_by_status(res: StudyResults) -> dict[str, dict[str, Cell | None]]:
    """``{method: {status: answer_unchanged over the locality probes of that base status}}``."""
    out = {}
    for m in res.methods:
        idx = category_index(res, res.final_index(m), LOCALITY)
        out[m] = {s: index_cell(res, idx, f"answer_unchanged_{s}") for s in BASE_STATUSES}
    return out


def no_op_edits(res: StudyResults) -> list[tuple[str, str, str]]:
    """Stored edits whose target the base model already gave, or whose tokens start its answer:
    ``(probe set, prompt, base answer)`` per target probe of the base unit."""
    df = res.frame.df
    idx = res.final_index("base")
    idx = idx[(df.loc[idx, "category"] == "target").to_numpy()]
    if not len(idx):
        return []
    known = res.frame.metric("base_known").loc[idx]
    out = []
    for i in idx:
        if known.loc[i] == 1 or df.at[i, "base_top1"] == 1:
            out.append((df.at[i, "probe_set"], df.at[i, "prompt"], df.at[i, "base_greedy"]))
    return out


__all__ = ["BaseAnswers", "base_answers", "locality_by_status", "no_op_edits"]
