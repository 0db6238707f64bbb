"""The paper's summary of many causal traces (Meng et al., 2022, figure 2): the indirect effect
averaged over prompts per token category (first / middle / last subject token, first subsequent,
further, last token) and block, with Student-t intervals over prompts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..stats import mean_interval
from .tracing import TraceError, TraceResult


#: the paper's token categories for the average indirect effect
TOKEN_CATEGORIES = ("first subject token", "middle subject tokens", "last subject token", "first subsequent token",
                    "further tokens", "last token")


def token_category(r: TraceResult, t: int) -> str | None:
    """The paper's category of token ``t`` in ``r``'s prompt (the last token wins over the others)."""
    s, e = r.subject_range
    if t == len(r.tokens) - 1:
        return "last token"
    if t == e - 1:
        return "last subject token"
    if t == s:
        return "first subject token"
    if s < t < e - 1:
        return "middle subject tokens"
    if t == e:
        return "first subsequent token"
    if t > e:
        return "further tokens"
    return None  # before the subject


@dataclass
class AverageEffect:
    """Average indirect effect over traced prompts: ``[category, block]`` means with 95% intervals
    (Student-t over prompts) and the number of prompts contributing to each category."""

    kind: str
    categories: tuple[str, ...]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: list[int]


def average_indirect_effect(results: Sequence[TraceResult], kind: str) -> AverageEffect:
    """The paper's summary: the indirect effect averaged over prompts per token category and block
    (a prompt with several tokens in one category contributes their mean)."""
    if not results:
        raise TraceError("no traces to average")
    n_layers = len(results[0].scores[kind][0])
    per: dict[str, list[np.ndarray]] = {c: [] for c in TOKEN_CATEGORIES}
    for r in results:
        ie = r.indirect_effect(kind)
        groups: dict[str, list[int]] = {}
        for t in range(len(r.tokens)):
            c = token_category(r, t)
            if c is not None:
                groups.setdefault(c, []).append(t)
        for c, ts in groups.items():
            per[c].append(ie[ts].mean(axis=0))
    mean = np.full((len(TOKEN_CATEGORIES), n_layers), math.nan)
    low, high = mean.copy(), mean.copy()
    for i, c in enumerate(TOKEN_CATEGORIES):
        if per[c]:
            arr = np.stack(per[c])
            for layer in range(n_layers):
                iv = mean_interval(list(arr[:, layer])) if len(arr) > 1 else None
                mean[i, layer] = arr[:, layer].mean()
                low[i, layer] = iv.low if iv else mean[i, layer]
                high[i, layer] = iv.high if iv else mean[i, layer]
    return AverageEffect(kind, TOKEN_CATEGORIES, mean, low, high, [len(per[c]) for c in TOKEN_CATEGORIES])


__all__ = ["AverageEffect", "TOKEN_CATEGORIES", "average_indirect_effect", "token_category"]
