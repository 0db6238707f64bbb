"""MQuAKE's accuracies in a study (Zhong et al., 2023), from the probes :func:`load_mquake` writes.

An answer counts when the model's greedy text gives it or one of its aliases
(:func:`editscope.metrics.multihop.answer_matches`, whole-word "contains" on normalised text):

* edit-wise: share of all rewrites whose ``target`` probe is answered with the new object;
* instance-wise: share of cases whose every single hop (``portability-hop``: each hop of the new
  chain asked alone) is answered with its new answer;
* multi-hop: share of cases where ANY of the multi-hop questions (``portability`` probes with a
  ``question`` index) is answered with the new final answer;
* multi-hop (old answer): the same with the pre-edit answer and its aliases: how often the old
  chain still answers.

A case is a record (``meta["case_id"]``) within a unit (single protocol) or on the final model
(sequential). Each figure carries its Wilson interval over rewrites or cases.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ...metrics.edit_metrics import METRICS
from ...metrics.multihop import answer_matches
from ...stats import wilson_interval
from ..data.frame import Cell
from ..data.results import StudyResults

COLUMNS = ("edit-wise", "instance-wise", "multi-hop", "multi-hop (old answer)")


def _said(row: dict[str, Any], answers: list[str]) -> bool:
    return bool(row["greedy"]) and answer_matches(row["greedy"], [a for a in answers if a])


def _rate(flags: list[bool]) -> Cell | None:
    if not flags:
        return None
    iv = wilson_interval(sum(flags), len(flags))
    return Cell(iv.value, iv.low, iv.high, iv.n)


@dataclass
class MquakeRow:
    method: str
    cells: dict[str, Cell | None]  # column -> rate over rewrites (edit-wise) or cases


def mquake_rows(res: StudyResults) -> list[MquakeRow]:
    """One row per method (the base model first); empty when the study has no MQuAKE probes."""
    df = res.frame.df
    hop_cats = df["category"].isin(["portability", "portability-hop"])
    if not hop_cats.any():
        return []
    out = []
    for m in ["base", *res.edit_methods]:
        idx = res.final_index(m)
        rows = res.frame.to_rows(idx[df.loc[idx, "category"].isin(["target", "portability", "portability-hop"])
                                     .to_numpy()])
        edits: list[bool] = []
        hops: dict[tuple, list[bool]] = defaultdict(list)
        multi: dict[tuple, list[bool]] = defaultdict(list)
        old: dict[tuple, list[bool]] = defaultdict(list)
        for r in rows:
            meta = r["meta"]
            case = (r["unit"] if res.protocol == "single" else "", meta.get("case_id"))
            if r["category"] == "target" and "rewrite" in meta:
                edits.append(bool(METRICS["answer_hit"].fn(r)))
            elif r["category"] == "portability-hop":
                hops[case].append(_said(r, [r["target"], *meta.get("aliases", [])]))
            elif r["category"] == "portability" and "question" in meta:
                multi[case].append(_said(r, [r["target"], *meta.get("aliases", [])]))
                if meta.get("old_answer"):
                    old[case].append(_said(r, [meta["old_answer"], *meta.get("answer_alias", [])]))
        if not multi and not hops:
            continue
        out.append(MquakeRow(m, {
            "edit-wise": _rate(edits),
            "instance-wise": _rate([all(v) for v in hops.values()]),
            "multi-hop": _rate([any(v) for v in multi.values()]),
            "multi-hop (old answer)": _rate([any(v) for v in old.values()]),
        }))
    return out


__all__ = ["COLUMNS", "MquakeRow", "mquake_rows"]
