"""The report's figures (matplotlib, Agg), each written as PNG and PDF.

* :func:`blast_radius`: for an arithmetic edit, the ``a x b`` grid per op coloured unchanged /
  changed / now says the target, one row of panels per method;
* :func:`sequential_curves_plot`: perplexity and retention against the number of edits;
* :func:`category_bars`: the headline metric per category and method with 95% interval whiskers;
* :func:`frontier`: efficacy against locality, one point per method, with the Pareto frontier and the
  study's criterion.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..analyses.anatomy import anatomy_curves, unit_scalars  # noqa: E402
from ..analyses.correlation import ppl_downstream_correlations  # noqa: E402
from ..analyses.collapse import collapse_lines, collapse_table  # noqa: E402
from ..data.grid import BLAST_LABELS, operand_grid  # noqa: E402
from ..data.results import LOCALITY, StudyResults, rate_cell, sequential_curves  # noqa: E402
from ..analyses.attribution import CONTROL_KINDS, control_of, KIND_LABEL
from ..analyses.strength import LEVELS, points, sweep_groups

BLAST_COLOURS = ("#d9d9d9", "#f4a261", "#c1121f")  # unchanged, changed, says the target (BLAST_LABELS)


def save_figure(fig, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = out / f"{stem}.{ext}"
        # no creation date: the same run draws the same bytes (committed figures stay comparable)
        meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
        fig.savefig(p, dpi=130 if ext == "png" else None, bbox_inches="tight", metadata=meta)
        paths.append(p)
    plt.close(fig)
    return paths


def _finish(fig, ax, out: Path, stem: str, xlabel: str, ylabel: str, *, logx: bool = False,
            logy: bool = False) -> list[Path]:
    """Label one-panel figure ``ax`` (log axes as asked), add the legend, save it as ``stem``."""
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, stem)


def blast_radius(res: StudyResults, out: Path) -> list[Path]:
    """One panel per (method, op); empty list when the study has no arithmetic grid."""
    grids = [g for m in res.edit_methods if (g := operand_grid(res, m)) is not None]
    if not grids:
        return []
    ops = grids[0].ops
    fig, axes = plt.subplots(len(grids), len(ops), figsize=(3.0 * len(ops), 2.7 * len(grids)), squeeze=False)
    cmap = ListedColormap(BLAST_COLOURS)
    for i, g in enumerate(grids):
        for j, op in enumerate(ops):
            ax = axes[i][j]
            ax.imshow(g.cells.get(op, np.zeros((g.n, g.n))), cmap=cmap, vmin=0, vmax=2, origin="lower",
                      interpolation="nearest")
            if g.target is not None and g.target[0] == op:
                ax.add_patch(plt.Rectangle((g.target[2] - 0.5, g.target[1] - 0.5), 1, 1,
                                           fill=False, edgecolor="black", lw=1.5))
            changed = g.changed(op) if op in g.cells else 0
            ax.set_title(f"{g.method}: a {op} b  ({changed}/{g.n * g.n} changed)", fontsize=8)
            ax.set_xlabel("b", fontsize=7)
            ax.set_ylabel("a", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.legend(handles=[Patch(color=c, label=lab) for c, lab in zip(BLAST_COLOURS, BLAST_LABELS)],
               loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save_figure(fig, out, "blast_radius")


def sequential_curves_plot(res: StudyResults, out: Path) -> list[Path]:
    curves = sequential_curves(res)
    if res.protocol != "sequential" or not any(c["ppl"] or c["retention"] for c in curves.values()):
        return []
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.3))
    for m, c in curves.items():
        if c["ppl"]:
            a1.plot(*zip(*c["ppl"]), marker=".", label=m)
        if c["retention"]:
            a2.plot(*zip(*c["retention"]), marker=".", label=m)
    thr = res.config.get("protocol", {}).get("threshold")
    if thr and not res.config.get("protocol", {}).get("ratio"):
        a1.axhline(thr, color="grey", ls="--", lw=0.8, label="collapse threshold")
    a1.set_yscale("log")
    a1.set_xlabel("edits applied")
    a1.set_ylabel("perplexity")
    a2.set_xlabel("edits applied")
    a2.set_ylabel("retention (answers of earlier edits kept)")
    a2.set_ylim(-0.02, 1.02)
    a1.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, "sequential")


def category_bars(res: StudyResults, out: Path) -> list[Path]:
    cols = [c for c in res.columns if "/" in c.key]
    if not cols:
        return []
    methods = ["base", *res.methods]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cols) * max(1, len(methods)) / 2.5), 3.4))
    width = 0.8 / len(methods)
    x = np.arange(len(cols))
    for i, m in enumerate(methods):
        vals, lo, hi = [], [], []
        for c in cols:
            cell = c.cells.get(m)
            vals.append(cell.value if cell else np.nan)
            lo.append(cell.value - cell.low if cell else 0)
            hi.append(cell.high - cell.value if cell else 0)
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=2, label=m)
    ax.set_xticks(x, [c.label for c in cols], rotation=20, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (95% interval)")
    ax.legend(fontsize=7, ncol=min(5, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.35), frameon=False)
    fig.tight_layout()
    return save_figure(fig, out, "categories")


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats on both coordinates (higher is better on both),
    ordered by the first coordinate."""
    front = [k for k, (x, y) in points.items()
             if not any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for x2, y2 in points.values())]
    return sorted(front, key=lambda k: points[k])


def frontier_points(res: StudyResults) -> tuple[list[str], dict[str, tuple[float, float]], float]:
    """The frontier plot's data: the edit methods with locality and paraphrase rates, the
    (locality, paraphrase answer) points of those that clear the efficacy bar (the study's
    criterion, default 1: target answer), and that bar."""
    methods = [m for m in res.edit_methods if rate_cell(res, m, LOCALITY) is not None
               and rate_cell(res, m, "paraphrase") is not None]
    bar = (res.config.get("criterion") or {}).get("efficacy", 1.0)
    pts = {}
    for m in methods:
        tgt = rate_cell(res, m, "target")
        if tgt is not None and tgt.value >= bar - 1e-12:
            pts[m] = (rate_cell(res, m, LOCALITY).value, rate_cell(res, m, "paraphrase").value)
    return methods, pts, bar


def frontier(res: StudyResults, out: Path) -> list[Path]:
    """Paraphrase answer rate against locality (share of all non-target probes unchanged), one point per
    method with 95% intervals as whiskers; grey points miss the efficacy bar (target answer); the
    Pareto frontier over the others; the study's criterion as dashed lines. With more than 12
    methods only the frontier's points are named."""
    methods, pts, bar = frontier_points(res)
    if len(methods) < 2:
        return []
    crit = res.config.get("criterion") or {}
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for m in methods:
        loc, par = rate_cell(res, m, LOCALITY), rate_cell(res, m, "paraphrase")
        ax.errorbar(loc.value, par.value, xerr=[[loc.value - loc.low], [loc.high - loc.value]],
                    yerr=[[par.value - par.low], [par.high - par.value]], fmt="o", ms=4, capsize=2, lw=0.8,
                    color="#1d3557" if m in pts else "#adb5bd")
    front = pareto_front(pts)
    crowded = len(methods) > 12  # a search: name only the frontier, the tables have the rest
    for i, m in enumerate(methods):
        if crowded and m not in front:
            continue
        x, y = rate_cell(res, m, LOCALITY).value, rate_cell(res, m, "paraphrase").value
        ax.annotate(m, (x, y), fontsize=7 if crowded else 6, xytext=(4, 4 if i % 2 else -9), textcoords="offset points")
    if len(front) > 1:
        ax.plot([pts[m][0] for m in front], [pts[m][1] for m in front], color="#c1121f", lw=1, label="Pareto frontier")
    if crit:
        ax.axvline(crit["locality"], color="grey", ls="--", lw=0.8, label=f"locality bar {crit['locality']:g}")
        ax.axhline(crit["paraphrase"], color="grey", ls=":", lw=0.8, label=f"paraphrase bar {crit['paraphrase']:g}")
    ax.set_xlabel("locality: share of all non-target probes whose answer is unchanged")
    ax.set_ylabel("paraphrase answer = target")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"Efficacy against locality (grey: target answer rate below {bar:g})", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, out, "frontier")


def excess_plot(res: StudyResults, out: Path) -> list[Path]:
    """Per edit method: the share of locality probes whose answer changed under the method and
    under each of its controls (placebo, unrelated edits), with 95% intervals; what a method
    changes beyond its controls is the gap between its bar and theirs."""
    methods = [m for m in res.edit_methods if any(control_of(res, m, k) for k in CONTROL_KINDS)]
    if not methods:
        return []
    series = [("method", None)] + [(KIND_LABEL[k], k) for k in CONTROL_KINDS
                                   if any(control_of(res, m, k) for m in methods)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(methods) + 2), 3.6))
    width = 0.8 / len(series)
    x = np.arange(len(methods))
    colors = ["#1d3557", "#e76f51", "#f4a261", "#2a9d8f"]
    for i, (label, kind) in enumerate(series):
        vals, lo, hi = [], [], []
        for m in methods:
            who = m if kind is None else control_of(res, m, kind)
            cell = rate_cell(res, who, LOCALITY, "answer_unchanged") if who else None
            v = 1 - cell.value if cell else np.nan  # changed = 1 - unchanged
            vals.append(v)
            lo.append((cell.high - cell.value) if cell else 0)
            hi.append((cell.value - cell.low) if cell else 0)
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, yerr=[lo, hi], capsize=2, label=label,
               color=colors[i % len(colors)])
    ax.set_xticks(x, methods, fontsize=8)
    ax.set_ylabel("locality probes whose answer changed")
    ax.set_title("What each edit changes, and what its controls change", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out, "excess")


def strength_plot(res: StudyResults, out: Path) -> list[Path]:
    """Locality against P(target | prompt), one line per swept method (its settings in order of
    strength), 95% intervals as whiskers, the matched levels as dotted lines."""
    groups = sweep_groups(res)
    if not groups:
        return []
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for m, (key, labels) in groups.items():
        pts = points(res, labels)
        if not pts:
            continue
        xs, ys = [p.p_target for p in pts], [p.locality.value for p in pts]
        err = [[p.locality.value - p.locality.low for p in pts], [p.locality.high - p.locality.value for p in pts]]
        ax.errorbar(xs, ys, yerr=err, fmt="o-", ms=4, capsize=2, lw=1, label=f"{m} ({key})")
    for lv in LEVELS:
        ax.axvline(lv, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("edit strength: P(target | prompt)")
    ax.set_ylabel("locality: answers unchanged (all locality probes)")
    ax.set_xlim(0, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, "strength")


def collapse_plot(res: StudyResults, out: Path) -> list[Path]:
    """Per-edit perplexity of every method on a log scale (one point per unit, jittered), with the
    base model's perplexity, ``ratio`` x it and the absolute collapse line: single/batch runs with
    at least two units of some method (a mean hides the outliers this shows)."""
    if res.protocol == "sequential":
        return []
    threshold, ratio = collapse_lines(res)
    table = [r for r in collapse_table(res, threshold, ratio) if r.n >= 2]
    corpora = sorted({r.corpus for r in table})
    if not corpora:
        return []
    corpus = corpora[0]
    rows = [r for r in table if r.corpus == corpus]
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 2), 3.4))
    for i, r in enumerate(rows):
        ys = [u.value for u in r.values]
        ax.scatter(i + rng.uniform(-0.25, 0.25, len(ys)), ys, s=8, alpha=0.6)
    base = rows[0].base
    if base:
        ax.axhline(base, color="grey", lw=1, label=f"base {base:.1f}")
        ax.axhline(ratio * base, color="#f4a261", lw=1, ls="--", label=f"{ratio:g}x base")
    ax.axhline(threshold, color="#c1121f", lw=1, ls=":", label=f"collapse ({threshold:g})")
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), [r.method for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"perplexity ({corpus.removeprefix('ppl:')}), per edit")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, "collapse")


def anatomy_plot(res: StudyResults, out: Path) -> list[Path]:
    """Sequential: each method's update norm (and cumulative distance from the base) against the
    edits applied; single/batch: perplexity against update norm, one point per edit (log-log)."""
    if res.protocol == "sequential":
        curves = anatomy_curves(res)
        if not curves:
            return []
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for m, c in curves.items():
            line = ax.plot(*zip(*c["delta:fro"]), lw=1, label=f"{m} (step)")[0] if "delta:fro" in c else None
            if "cumulative:fro" in c:
                ax.plot(*zip(*c["cumulative:fro"]), lw=1, ls="--", color=line.get_color() if line else None,
                        label=f"{m} (from base)")
        return _finish(fig, ax, out, "anatomy", "edits applied", "||dW||_F", logy=True)
    points = {}
    for m in res.methods:
        units = unit_scalars(res, m).values()
        xy = [(u["delta:fro"], v) for u in units if "delta:fro" in u
              for k, v in u.items() if k.startswith("ppl:")]
        if len(xy) >= 2:
            points[m] = xy
    if not points:
        return []
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    for m, xy in points.items():
        ax.scatter(*zip(*xy), s=10, alpha=0.6, label=m)
    return _finish(fig, ax, out, "anatomy", "update norm ||dW||_F", "perplexity after the edit", logx=True, logy=True)


def ppl_downstream_plot(res: StudyResults, out: Path) -> list[Path]:
    """Sequential: each downstream task's accuracy against perplexity (log) at the evaluated steps,
    one colour per method, with the pooled Spearman rho in the panel title."""
    cors = ppl_downstream_correlations(res)
    tasks = sorted({c.task for c in cors})
    if not tasks:
        return []
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for c in cors:
            if c.task == task and c.method != "all":
                ax.scatter(*zip(*c.points), s=12, alpha=0.7, label=c.method)
        pooled = next((c for c in cors if c.task == task and c.method == "all"), None)
        ax.set_title(f"{task}" + (f" (pooled rho {pooled.spearman:+.2f})" if pooled else ""), fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel(f"perplexity ({cors[0].corpus.removeprefix('ppl:')})")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out, "ppl_downstream")


FIGURES = {"blast_radius": blast_radius, "excess": excess_plot, "strength": strength_plot, "sequential": sequential_curves_plot, "categories": category_bars,
           "frontier": frontier, "collapse": collapse_plot, "anatomy": anatomy_plot,
           "ppl_downstream": ppl_downstream_plot}


#: what each figure shows, for captions where no author wrote one (``editscope report --format latex``)
CAPTIONS = {
    "blast_radius": "Blast radius of each edit over the arithmetic grid (first operand down, second across): grey "
                    "unchanged, orange changed, red now answers the edit target; the box marks the edited query.",
    "excess": "Changed answers of each method against its controls (matched placebo, unrelated edits), 95% intervals: "
              "the excess over a control is what the edit itself adds.",
    "strength": "Answer-level locality against edit strength (mean P(target)) for each swept method; methods are "
                "compared at equal strength along these curves.",
    "sequential": "Efficacy, retention of earlier edits and locality as sequential edits accumulate.",
    "categories": "Share of unchanged answers per probe category and method, 95% intervals.",
    "frontier": "Paraphrase answer rate against answer-level locality per method, 95% intervals; grey points miss the "
                "efficacy bar, the line joins the Pareto frontier.",
    "collapse": "Perplexity of each edit (log scale) against the collapse threshold and the base model's perplexity.",
    "anatomy": "Weight-change norm of each edit against perplexity (single edits) or the edit index (sequential).",
    "ppl_downstream": "Perplexity against downstream accuracy over a sequential run's evaluated steps.",
}


def caption(res: StudyResults, name: str) -> str:
    """A figure's default caption: what it shows, and for the frontier which methods are on it."""
    text = CAPTIONS.get(name, name.replace("_", " ") + ".")
    if name == "frontier":
        front = pareto_front(frontier_points(res)[1])  # the same points the figure joins
        if front:
            text = f"The Pareto frontier holds {', '.join(front)}. " + text
    return text


def all_figures(res: StudyResults, out: Path, names: Iterable[str] | None = None) -> dict[str, list[Path]]:
    """Draw the figures ``names`` (default all of :data:`FIGURES`) that apply to this run."""
    # drawn once per loaded run and folder: a write-up and a paper of the same run share them
    figs = {k: res.cached(("figure", k, str(out)), lambda k=k: FIGURES[k](res, out))
            for k in (FIGURES if names is None else names) if k in FIGURES}
    return {k: v for k, v in figs.items() if v}


__all__ = ["CAPTIONS", "FIGURES", "all_figures", "caption", "blast_radius", "category_bars", "collapse_plot", "anatomy_plot", "ppl_downstream_plot", "excess_plot", "frontier", "pareto_front", "sequential_curves_plot"]
