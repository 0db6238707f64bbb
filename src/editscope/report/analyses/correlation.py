"""Does perplexity track downstream decline? Correlations over the evaluated steps of a sequential run.

The collapse study uses perplexity as a cheap surrogate for downstream damage; this checks the
surrogate on a stored run. For every method (and all methods pooled) and downstream task, over the
steps where both were measured: Pearson's r of log-perplexity with the task's accuracy (log,
because perplexity spans orders of magnitude as a model collapses) and Spearman's rho of the raw
values, each with a 95% interval from Fisher's z (Bonett-Wright standard error for rho).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from scipy import stats as sps

from ..data.results import StudyResults

MIN_POINTS = 4  # Fisher's z needs n > 3


@dataclass(frozen=True)
class Correlation:
    method: str          # a method label, or "all" (pooled)
    corpus: str          # perplexity scalar, e.g. "ppl:me_ppl_50" or "guard_ppl"
    task: str            # downstream scalar, e.g. "piqa:acc"
    n: int               # evaluated steps with both
    pearson: float       # of log(perplexity) with accuracy
    pearson_low: float
    pearson_high: float
    pearson_p: float
    spearman: float
    spearman_low: float
    spearman_high: float
    spearman_p: float
    points: tuple[tuple[float, float], ...]  # (perplexity, accuracy)


def _fisher(r: float, n: int, se: float) -> tuple[float, float]:
    z = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12))
    q = sps.norm.ppf(0.975)
    return math.tanh(z - q * se), math.tanh(z + q * se)


def correlate(points: list[tuple[float, float]]) -> tuple[float, float, float, float, float, float, float, float] | None:
    """``(r, low, high, p, rho, low, high, p)`` for ``(perplexity, accuracy)`` points; None when
    fewer than :data:`MIN_POINTS` or either variable is constant."""
    if len(points) < MIN_POINTS or len({p for p, _ in points}) < 2 or len({a for _, a in points}) < 2:
        return None
    x = [math.log(p) for p, _ in points]
    y = [a for _, a in points]
    n = len(points)
    pr = sps.pearsonr(x, y)
    sr = sps.spearmanr([p for p, _ in points], y)
    r, rho = float(pr.statistic), float(sr.statistic)
    r_lo, r_hi = _fisher(r, n, 1 / math.sqrt(n - 3))
    s_lo, s_hi = _fisher(rho, n, math.sqrt((1 + rho ** 2 / 2) / (n - 3)))
    return r, r_lo, r_hi, float(pr.pvalue), rho, s_lo, s_hi, float(sr.pvalue)


def ppl_downstream_correlations(res: StudyResults) -> list[Correlation]:
    """Sequential runs with perplexity and downstream tasks measured at the same steps (else [])."""
    if res.protocol != "sequential":
        return []
    by: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for (m, _, step), values in res.scalar_values().items():
        if m != "base":
            by[(m, step)].update(values)
    names = {k for v in by.values() for k in v}
    corpus = next((c for c in sorted(names) if c.startswith("ppl:")), "guard_ppl" if "guard_ppl" in names else None)
    tasks = sorted(n for n in names if n.endswith(":acc"))
    if corpus is None or not tasks:
        return []
    out = []
    for task in tasks:
        pooled: list[tuple[float, float]] = []
        for m in [*res.methods, "all"]:
            pts = pooled if m == "all" else [(v[corpus], v[task]) for (mm, _), v in sorted(by.items())
                                            if mm == m and corpus in v and task in v]
            if m != "all":
                pooled += pts
            got = correlate(pts)
            if got is not None:
                out.append(Correlation(m, corpus, task, len(pts), *got, tuple(pts)))
    return out
