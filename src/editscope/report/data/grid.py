"""A study's arithmetic operand grid as data: which grid probe of the first arithmetic edit
changed, per method and op. The report's blast-radius figure and the explorer's heatmaps both
read it from here.

Cell codes (:data:`BLAST_LABELS`): 0 the answer is the base model's (greedy output unchanged), 1
changed, 2 the model now says the edit's target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .results import StudyResults

BLAST_LABELS = ("unchanged", "changed", "now says the target")
#: the order ops are shown in
OPS = "+-*"


@dataclass
class OperandGrid:
    """One method's blast radius: ``cells[op]`` is an ``(n, n)`` int array of cell codes indexed
    ``[a, b]`` (first operand, second operand), ``target`` the edited cell ``(op, a, b)`` or None
    when the edit is not on the grid, ``rows`` the grid rows behind it (dicts as
    :meth:`RowFrame.to_rows` gives, meta parsed)."""

    method: str
    n: int
    cells: dict[str, np.ndarray]
    target: tuple[str, int, int] | None
    rows: list[dict[str, Any]]

    @property
    def ops(self) -> list[str]:
        return sorted(self.cells, key=OPS.index)

    def changed(self, op: str) -> int:
        """Cells of ``op`` whose output differs from the base model's."""
        return int((self.cells[op] > 0).sum())


def cell_code(row: dict[str, Any]) -> int:
    """A grid row's :data:`BLAST_LABELS` code."""
    return 2 if row.get("says_target") else (0 if row["unchanged"] else 1)


def grid_rows(res: StudyResults, method: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The grid probes (one per (op, a, b)) of the first edit of ``method`` that has arithmetic
    probes, and its target row (None when the edit has none); computed once per method."""
    return res.cached(("grid_rows", method), lambda: _find_grid_rows(res, method))


def _find_grid_rows(res: StudyResults, method: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    frame, df = res.frame, res.frame.df
    idx = res.final_index(method)
    grid = {i for i in df.loc[idx, "meta_id"].unique() if frame.metas[i].get("template") == "grid" and "a" in frame.metas[i]}
    idx = idx[df.loc[idx, "meta_id"].isin(grid).to_numpy()]
    if not len(idx):
        return [], None
    edit = df.loc[idx, "edit_index"]
    idx = idx[(edit == edit.min()).fillna(False).to_numpy(dtype=bool) if edit.notna().any() else edit.isna().to_numpy()]
    if res.protocol == "single":
        idx = idx[(df.loc[idx, "unit"] == df.at[idx[0], "unit"]).to_numpy()]
    rows = frame.to_rows(idx)
    target = next((r for r in rows if r["category"] == "target"), None)
    return rows, target


def operand_grid(res: StudyResults, method: str) -> OperandGrid | None:
    """``method``'s blast radius on the operand grid; None when the study has no grid probes
    (computed once per method)."""
    return res.cached(("operand_grid", method), lambda: _operand_grid(res, method))


def _operand_grid(res: StudyResults, method: str) -> OperandGrid | None:
    return grid_of(method, grid_rows(res, method)[0])


def grid_of(method: str, rows: list[dict[str, Any]]) -> OperandGrid | None:
    """The blast radius drawn from row dicts (stored rows or :attr:`EvalResult.rows`): the grid
    rows among them (``meta`` template ``grid``), one cell each; None when there are none."""
    rows = [r for r in rows if r["meta"].get("template") == "grid" and "a" in r["meta"]]
    if not rows:
        return None
    n = max(max(r["meta"]["a"], r["meta"]["b"]) for r in rows) + 1
    cells: dict[str, np.ndarray] = {}
    for r in rows:
        m = r["meta"]
        cells.setdefault(m["op"], np.zeros((n, n), dtype=np.int8))[m["a"], m["b"]] = cell_code(r)
    target = next((r["meta"] for r in rows if r["category"] == "target"), None)
    where = None if target is None else (target["op"], target["a"], target["b"])
    return OperandGrid(method, n, cells, where, rows)


__all__ = ["BLAST_LABELS", "OperandGrid", "cell_code", "grid_of", "grid_rows", "operand_grid"]
