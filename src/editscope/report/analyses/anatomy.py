"""Weight-change anatomy in a stored run: update sizes per method, against perplexity and edit index.

Reads the ``delta:*`` and ``cumulative:fro`` unit scalars the runner stores for weight edits (see
:mod:`editscope.metrics.weight_change`). Single/batch runs: per method the median update norm,
relative norm and effective rank, the median norm of the edits that doubled perplexity against the
others, the same for the top decile of edits by perplexity against the rest (with a one-sided
Mann-Whitney U test that the top decile's updates are larger: the comparison that still works when
no edit doubles perplexity), and Spearman's rank correlation of the update norm with perplexity. Sequential runs: the
same scalars against the number of edits applied.
"""

from __future__ import annotations

import statistics
import math
from collections import defaultdict
from dataclasses import dataclass

from scipy import stats as sps

from .collapse import DEFAULT_RATIO
from ..data.results import StudyResults


@dataclass(frozen=True)
class AnatomyRow:
    method: str
    n: int
    fro: float                    # median ||dW||_F over units
    relative: float | None        # median ||dW||_F / ||W||_F
    effective_rank: float | None  # median effective rank of the largest update
    fro_doubled: float | None     # median ||dW||_F of the units whose perplexity doubled (None: none did)
    fro_stable: float | None      # ... of the others
    spearman: float | None        # rank correlation of ||dW||_F with perplexity over units
    spearman_p: float | None
    corpus: str | None
    fro_top: float | None = None  # median ||dW||_F of the top decile of units by perplexity (None: < 10 units)
    fro_rest: float | None = None # ... of the other units
    top_p: float | None = None    # one-sided Mann-Whitney U p-value: top-decile norms larger than the rest's


def unit_scalars(res: StudyResults, method: str) -> dict[str, dict[str, float]]:
    """``unit -> {scalar name: value}`` for one method (every stored scalar of its units)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (m, unit, _), values in res.scalar_values().items():
        if m == method:
            out[unit].update(values)
    return out


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def anatomy_table(res: StudyResults, ratio: float = DEFAULT_RATIO) -> list[AnatomyRow]:
    """Per method with weight-change scalars (interventions have none)."""
    base = res.base_scalars()
    out = []
    for m in res.methods:
        units = [u for u in unit_scalars(res, m).values() if "delta:fro" in u]
        if not units:
            continue
        corpus = next((k for k in sorted(units[0]) if k.startswith("ppl:")), None)
        fro = [u["delta:fro"] for u in units]
        doubled = stable = rho = p = None
        top = _top_decile([(u["delta:fro"], u[corpus]) for u in units if corpus in u]) if corpus else None
        if corpus and corpus in base:
            pairs = [(u["delta:fro"], u[corpus]) for u in units if corpus in u]
            doubled = _median([f for f, v in pairs if v >= ratio * base[corpus]])
            stable = _median([f for f, v in pairs if v < ratio * base[corpus]])
            if len(pairs) >= 3 and len({f for f, _ in pairs}) > 1 and len({v for _, v in pairs}) > 1:
                r = sps.spearmanr([f for f, _ in pairs], [v for _, v in pairs])
                rho, p = float(r.statistic), float(r.pvalue)
        out.append(AnatomyRow(m, len(units), statistics.median(fro),
                              _median([u["delta:relative"] for u in units if "delta:relative" in u]),
                              _median([u["delta:effective_rank"] for u in units if "delta:effective_rank" in u]),
                              doubled, stable, rho, p, corpus, *(top or (None, None, None))))
    return out


TOP_SHARE = 0.1


def _top_decile(pairs: list[tuple[float, float]]) -> tuple[float, float, float] | None:
    """``(median norm of the top TOP_SHARE of (norm, perplexity) pairs by perplexity, median norm of
    the rest, one-sided Mann-Whitney U p-value that the top's norms are larger)``; None under 10 pairs."""
    if len(pairs) < 10:
        return None
    ranked = sorted(pairs, key=lambda fv: fv[1], reverse=True)
    k = math.ceil(len(ranked) * TOP_SHARE)
    hi, lo = [f for f, _ in ranked[:k]], [f for f, _ in ranked[k:]]
    p = float(sps.mannwhitneyu(hi, lo, alternative="greater").pvalue)
    return statistics.median(hi), statistics.median(lo), p


def anatomy_curves(res: StudyResults) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Sequential: per method, ``{"delta:fro": [(step, value)], "cumulative:fro": [...]}``."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for m in res.methods:
        curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for s in res.scalars:
            if s["method"] == m and s["value"] is not None and s["name"] in ("delta:fro", "cumulative:fro"):
                curves[s["name"]].append((s["step"], float(s["value"])))
        if curves:
            out[m] = {k: sorted(v) for k, v in curves.items()}
    return out
