"""The two readouts of a lifelong run (sequential protocol, ``score_on: batch``; the AlphaEdit
protocol): every edit scored *right after* the step that applied it (on that step's edits only),
and *after all edits* (the last step, on every edit). The field often reports one under the name of
the other; here each cell says which it is.

Cells are rates over the per-edit probes of a category (target: efficacy; paraphrase:
generalisation; near: specificity) with a 95% cluster-bootstrap interval over edits.
"""

from __future__ import annotations

import pandas as pd

from ..data.frame import Cell, values_cell
from ..formats.table import fmt_cell
from ..data.results import StudyResults, headline_metric
from ..documents.placeholders import register_table
from ..formats.table import Table

#: readout name -> what a cell of it means
READOUTS = {"after-batch": "right after its batch", "after-all": "after all edits"}
#: categories shown, with the name the lifelong literature gives them
CATEGORIES = {"target": "efficacy", "paraphrase": "generalisation", "near": "specificity"}


def is_lifelong(res: StudyResults) -> bool:
    """A sequential run that scored each step's own edits (``score_on: batch``)."""
    proto = (res.config or {}).get("protocol") or {}
    return res.protocol == "sequential" and proto.get("score_on") == "batch"


def readout_index(res: StudyResults, method: str, readout: str) -> pd.Index:
    """Frame labels of ``method``'s per-edit rows in one readout: ``after-batch`` (each edit's rows
    from the step that applied it) or ``after-all`` (the rows of the last evaluated step)."""
    if readout not in READOUTS:
        raise ValueError(f"readout {readout!r}: use one of {', '.join(READOUTS)}")
    df = res.frame.df
    idx = df.index[(df["method"] == method) & df["edit_index"].notna()]
    if readout == "after-all":
        return idx.intersection(res.final_index(method))
    applied = {u.unit: set(u.edits) for u in res.units if u.method == method}
    keep = [int(e) in applied.get(u, ()) for u, e in zip(df.loc[idx, "unit"], df.loc[idx, "edit_index"])]
    return idx[keep]


def readout_cell(res: StudyResults, method: str, readout: str, category: str) -> Cell | None:
    """The category's headline rate in one readout, with its interval over edits."""
    idx = readout_index(res, method, readout)
    idx = idx[(res.frame.df.loc[idx, "category"] == category).to_numpy()]
    metric = headline_metric(category)
    return values_cell(res.frame.metric(metric).loc[idx], res.frame.df.loc[idx, "edit_index"], "rate")


@register_table("lifelong")
def lifelong_table(res: StudyResults) -> Table | None:
    """Method x (efficacy, generalisation, specificity) x (right after its batch, after all edits)."""
    if not is_lifelong(res):
        return None
    head = ["method"] + [f"{name}: {READOUTS[r]}" for name in CATEGORIES.values() for r in READOUTS]
    rows = []
    for m in res.methods:
        cells = [readout_cell(res, m, r, cat) for cat in CATEGORIES for r in READOUTS]
        if all(c is None for c in cells):
            continue
        rows.append([(m, False)] + [(fmt_cell(c), False) for c in cells])
    if not rows:
        return None
    return Table("lifelong", "Each edit scored right after the step that applied it (on that step's edits) and after "
                 "all edits (the last step, on every edit); rates over per-edit probes, 95% intervals over edits.",
                 head, rows)


__all__ = ["CATEGORIES", "READOUTS", "is_lifelong", "lifelong_table", "readout_cell", "readout_index"]
