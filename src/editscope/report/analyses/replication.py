"""The published "2+2=5" study side by side with editscope's run of its protocol (the ``seed38``
suite, ../shared/reference/two-plus-two-seed.md).

Its metrics, computed on the rows of the ``seed38`` probe set: efficacy = P("5") > P("4") on the
target probe (``prob``); paraphrase = share of paraphrases answering "5" (``answer_hit``: the first
integer of the answer is 5); near, far, general = accuracy against the *true* answer
(``answer_hit``: the suite's targets there are the true results, not the base model's outputs); "5" output rate = share of all 38 probes, target and
paraphrases included, whose answer is "5" (``says_target``). Intervals are exact
(Clopper-Pearson), as published.
"""

from __future__ import annotations

from typing import Any

from ...metrics.edit_metrics import METRICS
from ...probes.seed38 import NAME as SEED38, PUBLISHED, PUBLISHED_MODEL
from ...stats import clopper_pearson
from ..data.results import Cell, StudyResults
from ..documents.placeholders import STUDY, DocumentError, StudyContext
from ..formats.table import fmt_cell

COLUMNS = (("target", "prob", "target P(5)>P(4)"), ("paraphrase", "answer_hit", "paraphrase says 5"),
           ("near", "answer_hit", "near acc."), ("far", "answer_hit", "far acc."),
           ("general", "answer_hit", "general acc."),
           ("all", "says_target", '"5" rate (all 38)'))
#: study labels that run a published setting with its hyperparameters -> the published setting
PUBLISHED_LABELS = {"seed-naive-ft": "naive FT", "seed-constrained-ft": "constrained FT",
                    "seed-lowrank-ft": "low-rank FT"}


def _rows(res: StudyResults, method: str) -> list[dict[str, Any]]:
    return [r for r in res.final_rows(method) if r["probe_set"].split("#")[0] == SEED38]


def seed38_cells(res: StudyResults, method: str) -> dict[str, Cell | None]:
    """A method's six published metrics on the seed38 rows, with exact intervals."""
    rows = _rows(res, method)
    out: dict[str, Cell | None] = {}
    for cat, metric, _ in COLUMNS:
        vals = [v for r in rows if cat == "all" or r["category"] == cat
                if (v := METRICS[metric].fn(r)) is not None]
        if not vals:
            out[cat] = None
            continue
        iv = clopper_pearson(sum(bool(v) for v in vals), len(vals))
        out[cat] = Cell(iv.value, iv.low, iv.high, iv.n)
    return out


def has_seed38(res: StudyResults) -> bool:
    return any(r["probe_set"].split("#")[0] == SEED38 for r in res.final_rows("base"))


def replication_rows(res: StudyResults) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, source, cells)`` rows: each published setting (source ``published``, values
    only) followed by editscope's run of it (``editscope``), then the study's other methods."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    mine = {PUBLISHED_LABELS[m]: m for m in res.methods if m in PUBLISHED_LABELS}
    for setting, pub in PUBLISHED.items():
        vals = {"target": pub["target"], "paraphrase": pub["paraphrase"], "near": pub["near"], "far": pub["far"],
                "general": pub["general"], "all": pub["says5"]["total"]}
        out.append((f"{setting} ({PUBLISHED_MODEL['name']}, published)", "published", vals))
        ours = "base" if setting == "baseline" else mine.get(setting)
        if ours is not None:
            out.append((f"{ours} (editscope)", "editscope", seed38_cells(res, ours)))
    for m in res.methods:
        if m not in PUBLISHED_LABELS:
            out.append((f"{m} (editscope)", "editscope", seed38_cells(res, m)))
    return out


@STUDY.register("seed38", "{{seed38:METHOD:COLUMN}}")
def _seed38_cell(ctx: StudyContext, args: str) -> str:
    """``{{seed38:METHOD:COLUMN}}`` or ``{{seed38:published:SETTING:COLUMN}}``."""
    res = ctx.res
    bits = args.split(":")
    cols = [c for c, _, _ in COLUMNS]
    if not has_seed38(res):
        raise DocumentError(f"{{{{seed38:{args}}}}}: this run has no seed38 probe set")
    if len(bits) not in (2, 3) or bits[-1] not in cols or (len(bits) == 3) != (bits[0] == "published"):
        raise DocumentError(f"{{{{seed38:{args}}}}}: write {{{{seed38:METHOD:COLUMN}}}} or "
                            f"{{{{seed38:published:SETTING:COLUMN}}}} with COLUMN one of {cols}")
    if len(bits) == 3:
        pub = {label.split(" (")[0]: cells for label, source, cells in replication_rows(res)
               if source == "published"}
        if bits[1] not in pub:
            raise DocumentError(f"{{{{seed38:{args}}}}}: no published setting {bits[1]!r}; have {sorted(pub)}")
        v = pub[bits[1]].get(bits[2])
        return "-" if v is None else f"{v:.3f}"
    if bits[0] not in res.methods:
        raise DocumentError(f"{{{{seed38:{args}}}}}: no method {bits[0]!r} in this run")
    return fmt_cell(seed38_cells(res, bits[0])[bits[1]])


__all__ = ["COLUMNS", "PUBLISHED_LABELS", "has_seed38", "replication_rows", "seed38_cells"]
