"""Methods compared at matched edit strength.

A method's locality depends on how hard it pushes the edit: a weak edit (P(target) 0.4) changes less
than one that makes the target certain. A study's ``sweep:`` runs a method at several values of one
strength knob (steps, lr, clamp_norm_factor, ...). Here each setting is a point (x: the mean
P(target | prompt) over the target probes, y: answer-level locality over all locality probes with
its 95% interval), and each method's locality is read off its curve at equal efficacy: linearly
interpolated between the two settings whose P(target) brackets 0.5 and 0.9 (the interval's bounds
interpolated the same way, which is approximate: it ignores the correlation of neighbouring
settings). A method whose settings never reach a level has no value there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..data.results import LOCALITY, Cell, StudyResults, rate_cell
from ..documents.placeholders import STUDY, DocumentError, StudyContext
from ..formats.table import fmt_cell

LEVELS = (0.5, 0.9)


@dataclass
class StrengthPoint:
    label: str
    p_target: float  # mean P(target | prompt) over the target probes
    locality: Cell


def sweep_groups(res: StudyResults) -> dict[str, tuple[str, list[str]]]:
    """Swept method -> (hyperparameter, its settings' labels), from the stored config."""
    return res.study.sweeps() if res.study is not None else {}


def p_target(res: StudyResults, method: str) -> float | None:
    lps = [r["logprob"] for r in res.final_rows(method) if r["category"] == "target" and r["logprob"] is not None]
    return sum(math.exp(lp) for lp in lps) / len(lps) if lps else None


def points(res: StudyResults, labels: list[str]) -> list[StrengthPoint]:
    """The sweep's settings that ran, sorted by P(target)."""
    out = []
    for lab in labels:
        if lab not in res.methods:
            continue
        p, loc = p_target(res, lab), rate_cell(res, lab, LOCALITY, "answer_unchanged")
        if p is not None and loc is not None:
            out.append(StrengthPoint(lab, p, loc))
    return sorted(out, key=lambda x: x.p_target)


def at_level(pts: list[StrengthPoint], level: float) -> Cell | None:
    """Locality interpolated at P(target) = ``level`` (None when no two settings bracket it; a
    setting exactly at the level is used as is)."""
    for a, b in zip(pts, pts[1:]):
        if a.p_target <= level <= b.p_target:
            if b.p_target == a.p_target:
                t = 0.0
            else:
                t = (level - a.p_target) / (b.p_target - a.p_target)
            mix = lambda x, y: x + t * (y - x)  # noqa: E731
            return Cell(mix(a.locality.value, b.locality.value), mix(a.locality.low, b.locality.low),
                        mix(a.locality.high, b.locality.high), min(a.locality.n, b.locality.n))
    if len(pts) == 1 and pts[0].p_target == level:
        return pts[0].locality
    return None


def matched_strength(res: StudyResults) -> dict[str, dict[float, Cell | None]]:
    """Swept method -> {level: interpolated locality}."""
    return {m: {lv: at_level(points(res, labels), lv) for lv in LEVELS}
            for m, (_, labels) in sweep_groups(res).items()}


@STUDY.register("strength", "{{strength:METHOD:LEVEL}}")
def _strength_cell(ctx: StudyContext, args: str) -> str:
    """``{{strength:METHOD:LEVEL}}``: a swept method's answer-level locality at P(target) = LEVEL."""
    bits = args.split(":")
    per = matched_strength(ctx.res)
    try:
        level = float(bits[1]) if len(bits) == 2 else None
    except ValueError:
        level = None
    if level not in LEVELS:
        raise DocumentError(f"{{{{strength:{args}}}}}: write {{{{strength:METHOD:LEVEL}}}} with LEVEL one of "
                            f"{', '.join(f'{lv:g}' for lv in LEVELS)}")
    if bits[0] not in per:
        raise DocumentError(f"{{{{strength:{args}}}}}: no swept method {bits[0]!r} in this run; have {sorted(per)}")
    return fmt_cell(per[bits[0]][level])


__all__ = ["LEVELS", "StrengthPoint", "at_level", "matched_strength", "p_target", "points", "sweep_groups"]
