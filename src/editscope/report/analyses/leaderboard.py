"""One leaderboard over editors and models: the same single-edit study (one dataset) run on several
models (``editscope run CONFIG --model NAME``), every method a row per model.

Columns (each ``value [95% interval]``, intervals over edits: one probe per category per record):
efficacy, generalisation, specificity and portability, each read two ways, teacher forced
(EasyEdit's token metrics: ``token_acc`` on the target/paraphrase/portability answer, and
``locality_token_agreement``, the share of the locality answer's tokens whose argmax is the base's)
and from the generated answer (``answer_hit``; ``answer_unchanged`` for specificity); KnowEdit's
fluency (n-gram entropy of generations from the edit prompts) where the study measured it; the
edits made of those attempted (no-ops refused and left out); median seconds per edit and median
peak resident memory during the edit (MiB, the model included).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ...metrics.edit_metrics import aggregate
from ...methods.base import is_no_op
from ..data.results import Cell, StudyResults, rate_cell
from ..formats.table import Table, fmt_cell

#: (key, label, category, metric)
COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("efficacy_tf", "efficacy (teacher-forced)", "target", "token_acc"),
    ("efficacy_gen", "efficacy (generated)", "target", "answer_hit"),
    ("generalisation_tf", "generalisation (teacher-forced)", "paraphrase", "token_acc"),
    ("generalisation_gen", "generalisation (generated)", "paraphrase", "answer_hit"),
    ("specificity_tf", "specificity (teacher-forced)", "near", "locality_token_agreement"),
    ("specificity_gen", "specificity (generated)", "near", "answer_unchanged"),
    ("portability_tf", "portability (teacher-forced)", "portability", "token_acc"),
    ("portability_gen", "portability (generated)", "portability", "answer_hit"),
)
HIGHER_IS_BETTER = {k for k, *_ in COLUMNS} | {"fluency"}


@dataclass
class LeaderRow:
    method: str
    model: str
    cells: dict[str, Cell | None] = field(default_factory=dict)
    made: int = 0
    attempted: int = 0
    seconds: float | None = None
    peak_mb: float | None = None
    peak_gpu: bool = False  # the peak is GPU memory (a run on a GPU), else the process's resident memory


def _fluency(res: StudyResults, method: str) -> Cell | None:
    vals = [v["fluency:ngram_entropy"] for (m, _, _), v in res.scalar_values().items()
            if m == method and v.get("fluency:ngram_entropy") is not None]
    agg = aggregate(vals, "mean")
    return None if agg is None else Cell(**{k: agg[k] for k in ("value", "low", "high", "n")})


def _category(res: StudyResults, method: str, cat: str, metric: str) -> Cell | None:
    if cat == "near" and not any(c.startswith("near") for c in res.summary(method)) and "far" in res.summary(method):
        cat = "far"  # zsRE's locality questions are unrelated (far) probes
    try:
        return rate_cell(res, method, cat, metric)
    except (KeyError, ValueError):
        return None


def leaderboard_rows(studies: list[StudyResults]) -> list[LeaderRow]:
    """A row per (method, model), methods in order of first appearance, then the base model of each.
    The studies must be one study on different models (ValueError naming the clash otherwise)."""
    models = [str(s.meta.get("model_name")) for s in studies]
    if len(set(models)) != len(models):
        clash = sorted({m for m in models if models.count(m) > 1})
        raise ValueError(f"the leaderboard's studies must be on different models; {clash} appear more than once "
                         f"({', '.join(str(s.meta.get('name')) for s in studies)}): give one dataset's studies per table")
    rows = []
    for res in studies:
        model = str(res.meta.get("model_name"))
        for method in ["base", *res.edit_methods]:
            row = LeaderRow(method, model)
            for key, _, cat, metric in COLUMNS:
                row.cells[key] = _category(res, method, cat, metric)
            row.cells["fluency"] = _fluency(res, method)
            if method != "base":
                units = [u for u in res.units if u.method == method and not is_no_op(u.info.get("error"))]
                row.attempted = len(units)
                done = [u for u in units if u.status == "done"]
                row.made = len(done)
                secs = [u.seconds_edit for u in done if u.seconds_edit is not None]
                key = "peak_gpu_mb" if any(u.info.get("peak_gpu_mb") is not None for u in done) else "peak_rss_mb"
                peaks = [u.info[key] for u in done if u.info.get(key) is not None]
                row.peak_gpu = key == "peak_gpu_mb"
                row.seconds = statistics.median(secs) if secs else None
                row.peak_mb = statistics.median(peaks) if peaks else None
            rows.append(row)
    order = {m: i for i, m in enumerate(dict.fromkeys(r.method for r in rows))}
    return sorted(rows, key=lambda r: (order[r.method], models.index(r.model)))


def leaderboard_table(studies: list[StudyResults]) -> Table:
    rows = leaderboard_rows(studies)
    shown = [(k, label) for k, label, *_ in COLUMNS if any(r.cells.get(k) is not None for r in rows)]
    if any(r.cells.get("fluency") is not None for r in rows):
        shown.append(("fluency", "fluency (n-gram entropy)"))
    best = {k: max((r.cells[k].value for r in rows if r.method != "base" and r.cells.get(k) is not None), default=None)
            for k, _ in shown}
    body = []
    for r in rows:
        line = [(r.method, False), (r.model, False)]
        for k, _ in shown:
            c = r.cells.get(k)
            line.append((fmt_cell(c), c is not None and r.method != "base" and c.value == best[k]))
        line.append(("-" if r.method == "base" else f"{r.made}/{r.attempted}", False))
        line.append(("-" if r.seconds is None else f"{r.seconds:.2f}", False))
        line.append(("-" if r.peak_mb is None else f"{r.peak_mb:,.0f}{' (GPU)' if r.peak_gpu else ''}", False))
        body.append(line)
    header = ["method", "model", *[label for _, label in shown], "edits made", "s/edit (median)", "peak MiB (median)"]
    return Table("leaderboard", "Every editor on every model, single edits (value [95% interval], intervals over edits; "
                                "bold: the best edited value of a column). Teacher-forced: EasyEdit's token metrics; "
                                "generated: the answer the edited model writes. Edits made: those that passed the guard "
                                "of those attempted (no-ops refused and left out).", header, body)


def column_leader(studies: list[StudyResults], key: str) -> str:
    """``method (model) value [low, high]`` with the best value of column ``key`` (ties: first)."""
    if key not in HIGHER_IS_BETTER:
        raise KeyError(f"unknown leaderboard column {key!r}; known: {sorted(HIGHER_IS_BETTER)}")
    rows = [r for r in leaderboard_rows(studies) if r.method != "base" and r.cells.get(key) is not None]
    if not rows:
        return "-"
    top = max(rows, key=lambda r: r.cells[key].value)
    return f"{top.method} ({top.model}) {fmt_cell(top.cells[key])}"


__all__ = ["COLUMNS", "LeaderRow", "column_leader", "leaderboard_rows", "leaderboard_table"]
