"""The KnowEdit/EasyEdit summary of a study: Edit Succ., Portability, Locality and Fluency, as the
KnowEdit tables (Zhang et al., 2024) and EasyEdit's ``summary_metrics`` compute them.

* Edit Succ.: ``token_acc`` (teacher-forced argmax accuracy over the new target's tokens) on the
  ``target`` probes;
* Portability: ``token_acc`` on the portability probes (every category that starts with
  ``portability``);
* Locality: ``locality_token_agreement`` (share of the answer's tokens whose post-edit argmax is the
  pre-edit one) on every locality category (near, far, general, ...);
* Fluency: the ``fluency:ngram_entropy`` scalar of the edited units (the study's ``fluency:`` key).

Each is first averaged within an edit (a record: its probes of that kind), then over edits, and
shown x 100 as KnowEdit does, with a 95% t-interval over the edits. In the sequential protocol an
edit's probes are those with its ``edit_index`` on the final model.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ...stats import mean_interval
from ..data.frame import Cell
from ..data.results import StudyResults, locality_mask

#: the KnowEdit columns: (label, metric, which categories)
COLUMNS = (("Edit Succ.", "token_acc", "target"), ("Portability", "token_acc", "portability"),
           ("Locality", "locality_token_agreement", "locality"))


def _categories(cats: pd.Series, kind: str) -> pd.Series:
    if kind == "target":
        return cats == "target"
    if kind == "portability":
        return cats.str.startswith("portability")
    return locality_mask(cats)


def _over_edits(values: list[float]) -> Cell | None:
    if not values:
        return None
    if len(values) == 1:
        return Cell(values[0], values[0], values[0], 1)
    iv = mean_interval(values)
    return Cell(iv.value, iv.low, iv.high, iv.n)


def per_edit_means(res: StudyResults, method: str, metric: str, kind: str) -> list[float]:
    """``metric`` averaged over each edit's probes of ``kind`` (target, portability, locality)."""
    df = res.frame.df
    idx = res.final_index(method)
    idx = idx[_categories(df.loc[idx, "category"], kind).to_numpy()]
    vals = res.frame.metric(metric).loc[idx]
    ok = vals.notna().to_numpy()
    if not ok.any():
        return []
    key = df.loc[idx, "edit_index"] if res.protocol == "sequential" else df.loc[idx, "root"]
    return [float(v) for v in vals[ok].groupby(key[ok].to_numpy()).mean()]


@dataclass
class KnowEditRow:
    method: str
    cells: dict[str, Cell | None]  # column label -> value in [0, 1] (fluency: bits)


def knowedit_rows(res: StudyResults) -> list[KnowEditRow]:
    """One row per method (the base model first) over the study's edits; empty when some scored
    probe has no token metrics (a store written, wholly or partly, before they were measured: an
    average over the re-measured probes alone would stand for all of them)."""
    df = res.frame.df
    scored = df["logprob"].notna()
    if scored.any() and (df.loc[scored, "token_acc"].isna() & df.loc[scored, "token_agree"].isna()).any():
        return []
    out = []
    for m in ["base", *res.edit_methods]:
        cells: dict[str, Cell | None] = {label: _over_edits(per_edit_means(res, m, metric, kind))
                                         for label, metric, kind in COLUMNS}
        flu = [s["value"] for s in res.scalars
               if s["method"] == m and s["name"] == "fluency:ngram_entropy" and s["value"] is not None]
        cells["Fluency"] = _over_edits(flu) if flu else None
        out.append(KnowEditRow(m, cells))
    if not any(c is not None for r in out for label, c in r.cells.items() if label != "Fluency"):
        return []
    return out


__all__ = ["COLUMNS", "KnowEditRow", "knowedit_rows", "per_edit_means"]
