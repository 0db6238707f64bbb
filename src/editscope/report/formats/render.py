"""Write a run's report: ``report.md``, a self-contained ``report.html`` (images embedded) and a
LaTeX folder in a modular paper layout (``latex/main.tex``, ``sections/results.tex``,
``tables/*.tex`` with booktabs and no vertical rules, ``figures/*.pdf``, ``commands/macros.tex``).
"""

from __future__ import annotations

import base64
import html
import shutil
import textwrap
from pathlib import Path

from .plots import all_figures, caption
from ...metrics.edit_metrics import BASE_STATUSES, METRICS
from ...stats import holm
from ..analyses.answers import base_answers, locality_by_status, no_op_edits
from .table import Table, count_with_rate, fmt_cell, fmt_p
from .latex_build import compile_paper
from .tex import table_float, tex_escape
from ..analyses.attribution import (
    failed_controls,
    EXCESS_KINDS,
    OWN_SUFFIX,
    KIND_LABEL,
    MARGIN_BINS,
    excess_rows,
    identity_exceptions,
    locality_categories,
    margin_locality,
    pairwise_tests,
    strength_level,
)
from ..analyses.replication import COLUMNS as SEED38_COLUMNS
from ..analyses.replication import has_seed38, replication_rows
from ..analyses.anatomy import anatomy_table
from ..analyses.correlation import ppl_downstream_correlations
from ..analyses.knowedit import knowedit_rows
from ..analyses.mquake import COLUMNS as MQUAKE_COLUMNS
from ..analyses.mquake import mquake_rows
from ..analyses.collapse import collapse_lines, collapse_points, collapse_table
from ..data.results import EFFICACY, LEAK, LOCALITY, Cell, Column, StudyResults, breakdown, criterion_rows, load_results
from ..analyses.strength import at_level, LEVELS, points, sweep_groups


def _grouped(labels: list[tuple[str, str]]) -> tuple[list[tuple[str, int]], list[str]]:
    """(group, short header) per column -> merged group spans and the short headers."""
    spans: list[tuple[str, int]] = []
    for g, _ in labels:
        if spans and spans[-1][0] == g and g:
            spans[-1] = (g, spans[-1][1] + 1)
        else:
            spans.append((g, 1))
    return spans, [s for _, s in labels]


def _main_group(c: Column) -> tuple[str, str]:
    """A main-table column's group and short header (for typeset tables)."""
    if c.key.startswith("ppl:"):
        return "perplexity", c.key.removeprefix("ppl:")
    if ":" in c.key:
        return "downstream", c.key.replace(":", " ")
    cat, metric = c.key.split("/", 1)
    if cat == LOCALITY:
        return "all non-target", "answer" if metric == "answer_unchanged" else "output"
    if cat == LEAK:
        return "all non-target", "says target"
    if cat in EFFICACY:
        return f"efficacy ({metric})", cat
    return "answer unchanged", cat


def _method_rows(res: StudyResults, cols: list, interval: bool = True) -> list[list[tuple[str, bool]]]:
    rows = []
    for m in ["base", *res.methods]:
        row = [(m, False)]
        for c in cols:
            row.append((fmt_cell(c.cells.get(m), interval), m == c.best(res.edit_methods) and c.cells.get(m) is not None))
        rows.append(row)
    return rows


def main_table(res: StudyResults, interval: bool = True, short: bool = False) -> Table:
    """The headline table; ``short`` (the terminal summary) leaves out the pooled locality columns,
    which the per-category ones already show, so that it fits 80 columns."""
    cols = [c for c in res.columns if c.headline and not (short and c.key.startswith(f"{LOCALITY}/"))]
    header = ["method", *[(c.short or c.label) if short else c.label for c in cols]]
    groups, sub = _grouped([_main_group(c) for c in cols])
    return Table("main", "Headline metrics per method (value [95% interval]; a single measurement has none); best "
                         "edited method in bold. Efficacy categories: the answer read by the probe's rule (first "
                         "integer; normalised text) is the target; locality categories: that answer unchanged from "
                         "the base model's; pooled locality also at "
                         "output level (whole greedy output); target output rate over locality probes (lower is "
                         f"better); perplexity (lower is better); downstream accuracy. {res.interval_note}.", header,
                 _method_rows(res, cols, interval), groups, sub)


#: the cross-model table's columns per study: (column key or "ppl:" for the study's perplexity, header)
MODELS_COLUMNS = (("target/answer_hit", "target"), ("paraphrase/answer_hit", "paraphrase"),
                  (f"{LOCALITY}/answer_unchanged", "locality"), ("ppl:", "ppl"))


def models_table(studies: list[StudyResults]) -> Table:
    """The same study on several models, side by side: per model (a study run with ``--model``)
    efficacy, paraphrase answer, answer-level locality and perplexity, each with its 95% interval.
    Rows: the base model and every method of any of the studies, in the order they first appear;
    "-" where a study lacks the method or the column."""
    if len({s.meta.get("model_name") for s in studies}) != len(studies):
        raise ValueError(f"models_table: the studies must be on different models; got "
                         f"{[s.meta.get('model_name') for s in studies]}")
    methods = list(dict.fromkeys(m for s in studies for m in s.methods))
    header, picked, labels = ["method"], [], []
    for s in studies:
        for key, label in MODELS_COLUMNS:
            col = next((c for c in s.columns if (c.key.startswith(key) if key.endswith(":") else c.key == key)), None)
            header.append(f"{s.meta.get('model_name')} {label}")
            labels.append((str(s.meta.get("model_name")), label))
            picked.append(col)
    rows = [[(m, False), *[(fmt_cell(c.cells.get(m)) if c is not None else "-", False) for c in picked]]
            for m in ["base", *methods]]
    return Table("models", "The same study on each model (value [95% interval]): target and paraphrase answer (by the rule), "
                           "locality = the answer unchanged from that model's own base output over every non-target "
                           "probe, perplexity (lower is better).", header, rows, *_grouped(labels))


def downstream_table(res: StudyResults) -> Table | None:
    cols = [c for c in res.columns if ":" in c.key and not c.key.startswith("ppl:")]
    if not cols:
        return None
    return Table("downstream", "Downstream tasks, every metric (lm-evaluation-harness scoring), per method.",
                 ["method", *[c.label for c in cols]], _method_rows(res, cols))


DETAIL_METRICS = ("answer_hit", "top1", "prob", "ns", "answer_unchanged", "unchanged", "changed_kl", "kl", "says_target",
                  "delta_logprob")


def detail_table(res: StudyResults) -> Table:
    """Every method x category with the study's ``metrics`` (default :data:`DETAIL_METRICS`)."""
    names = list(res.config.get("metrics") or DETAIL_METRICS)
    rows = []
    for m in ["base", *res.methods]:
        for cat, cell in res.summary(m).items():
            if cat == "all":
                continue
            vals = [(fmt_cell(Cell(c["value"], c["low"], c["high"], int(c["n"]))) if (c := cell.get(n)) else "-", False)
                    for n in names]
            n = max((int(c["n"]) for c in cell.values()), default=0)
            rows.append([(m, False), (cat, False), (str(n), False), *vals])
    return Table("detail", "Every category and metric (value [95% interval]); metrics as defined in "
                           "editscope.metrics.METRICS, each with the protocol it reads the model by "
                           "(teacher-forced: the target's probability; greedy: the decoded answer; next-token: "
                           "the distribution after the prompt).",
                 ["method", "category", "n", *[f"{n} ({METRICS[n].protocol})" for n in names]], rows)


def tests_table(res: StudyResults) -> Table | None:
    if not res.tests:
        return None
    rows = []
    for t in res.tests:
        sig = t.p_holm < 0.05
        rows.append([(t.method, False), (t.column, False), (str(t.n), False), (f"{t.n01}/{t.n10}", False),
                     (f"{t.diff:+.3f}", False), (TEST_NAMES[t.kind], False), (fmt_p(t.p), False),
                     (fmt_p(t.p_holm), sig), ("-" if t.p_cmh is None else fmt_p(t.p_cmh), False),
                     (fmt_p(t.p_tost_holm), t.p_tost_holm < 0.05), (t.verdict, False)])
    over = (f"t-test over the {res.tests[0].n_edits} edits' mean paired differences (each edit one observation; "
            "p CMH: the within-edit comparison combined by Cochran-Mantel-Haenszel, which treats probes as "
            "independent); TOST over the edits' mean differences" if res.tests[0].kind == "edits" else
            "exact McNemar over the probes of the one edit (conditional on these probes: nothing about other "
            "edits); TOST over probes")
    return Table("mcnemar", f"Paired test of each method against {res.reference} on the same probes, {over}; "
                            "n01/n10: probes only the method / only the reference got right; p adjusted by Holm "
                            f"over all tests in the table (bold: < 0.05); equivalence: TOST within "
                            f"+-{res.tests[0].margin:g}, Holm-adjusted; verdict: equivalent / different / "
                            "inconclusive.",
                 ["method", "metric", "n", "n01/n10", "difference", "test", "p", "p (Holm)", "p CMH",
                  "p equiv. (Holm)", "verdict"], rows)


#: how each paired test kind is named in tables
TEST_NAMES = {"mcnemar": "McNemar", "edits": "t over edits"}


def breakdown_table(res: StudyResults, cat: str, key: str, metric: str | None = None) -> Table:
    """Methods (rows) x values of ``meta[key]`` (columns) over category ``cat``; see
    :func:`editscope.report.data.results.breakdown`."""
    b = breakdown(res, cat, key, metric)
    if not b:
        raise ValueError(f"no {cat!r} probe has meta key {key!r}")
    methods = ["base", *res.methods]
    rows = [[(m, False), *[(fmt_cell(b[x][m]), False) for x in b]] for m in methods]
    n = {x: next((c.n for c in b[x].values() if c is not None), 0) for x in b}
    what = metric or "headline metric"
    return Table(f"breakdown-{cat}-{key}", f"{cat} probes by {key}: {what} per method (value [95% interval]); "
                                           "n probes per column in the header.",
                 ["method", *[f"{x} (n={n[x]})" for x in b]], rows)


def criterion_table(res: StudyResults) -> Table | None:
    """Which methods clear the study's ``criterion`` (None when it sets none)."""
    rows = criterion_rows(res)
    if not rows:
        return None
    c = res.config["criterion"]
    yes = lambda b: ("yes" if b else "no", b)  # noqa: E731
    body = [[(r.method, False), (fmt_cell(r.efficacy), False), (fmt_cell(r.paraphrase), False), (fmt_cell(r.locality), False),
             yes(r.meets), yes(r.meets_lower)] for r in rows]
    return Table("criterion", f"Isolation criterion: target top-1 >= {c['efficacy']:g}, paraphrase top-1 >= "
                              f"{c['paraphrase']:g}, answer unchanged over all non-target probes >= {c['locality']:g} "
                              "(meets: point estimates; with confidence: also the locality interval's lower bound).",
                 ["method", "target answer", "paraphrase answer", "locality answer unchanged", "meets", "meets (95% lower bound)"],
                 body)


def _clip(text: str, width: int) -> str:
    """``text`` cut at a word boundary to at most ``width`` characters, marked with an ellipsis when cut."""
    return text if len(text) <= width else textwrap.shorten(text, width, placeholder=" ...")


def events_table(res: StudyResults) -> Table | None:
    if not res.events:
        return None
    rows = [[(e["method"] or "", False), (e["unit"] or "", False), (e["kind"], False),
             (_clip(", ".join(f"{k}={v}" for k, v in e["detail"].items()), 160), False)] for e in res.events]
    return Table("events", "Rolled-back edits and collapse-guard actions.", ["method", "unit", "event", "detail"], rows)


def _excess_fmt(e) -> str:
    if e is None:
        return "-"
    return f"{e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"


def excess_table(res: StudyResults, kind: str = "placebo", known: bool = False) -> Table | None:
    """Each edit method's ``excess_changed`` over its control of ``kind`` (None without one). Bold:
    the excess differs from 0 (bootstrap p, Holm over every cell of the table); "=": equivalent to 0
    within the margin (bootstrap TOST, Holm). ``known``: on the probes the base model answers
    correctly only (table ``excess-<kind>-known``; None where it answers none correctly)."""
    if known and not (res.frame.metric("base_known") == 1).any():
        return None
    rows = excess_rows(res, kind, known)
    if not rows:
        return None
    cats = locality_categories(res, known)
    cells = [r.cells.get(c) for r in rows for c in cats]
    shown = [e for e in cells if e is not None]
    p_diff = dict(zip(map(id, shown), holm([e.pvalue for e in shown]))) if shown else {}
    p_eq = dict(zip(map(id, shown), holm([e.p_equivalence for e in shown]))) if shown else {}

    def cell(e) -> tuple[str, bool]:
        if e is None:
            return "-", False
        text = _excess_fmt(e) + (" =" if p_eq[id(e)] < 0.05 else "")
        return text, p_diff[id(e)] < 0.05

    body = []
    for r in rows:
        pooled = r.cells.get(cats[0])
        draws = pooled.draws if pooled else 0
        body.append([(r.method, False), (f"{r.control} ({draws})", False),
                     (f"{pooled.method_rate:.3f}" if pooled else "-", False),
                     (f"{pooled.control_rate:.3f}" if pooled else "-", False), *[cell(r.cells.get(c)) for c in cats]])
    unit = "edits as clusters" if res.clustered else "probes (conditional on these probes)"
    margin = shown[0].margin if shown else 0.02
    few = min((e.draws for e in shown), default=0)
    few_note = (f" Only {few} control draw(s) per edit: the interval's draw level rests on few draws (10 or more "
                "recommended)." if kind != "placebo" and 0 < few < 10 else "")
    failed = {r.control: failed_controls(res, r.control) for r in rows}
    n_failed = sum(len(v) for v in failed.values())
    left_out = (f" {n_failed} control edit(s) did not take (rolled back, or their own prompt does not give their "
                f"target: {', '.join(f'{c} {u}' for c, us in failed.items() for u in sorted(us))}); the draws "
                "holding them are left out." if n_failed else "")
    if kind.endswith(OWN_SUFFIX):
        what = ("share of the study edit's own locality probes whose answer changed under the method minus the share "
                "of each unrelated edit's own probes of the same category (its own near and far neighbourhood, "
                "built as the study edit's are) that changed under it (mean over the control's edits; unpaired: in "
                "brackets the 95% bootstrap interval over edits and draws, or, with one edit, over both sides' "
                "probes and the draws)")
    else:
        what = ("share of locality probes whose answer changed under the method minus under its control (mean over "
                f"the control's draws; in brackets the 95% two-level bootstrap interval over {unit} and draws)")
    if known:
        what += "; only the probes the base model answers correctly (does the model still compute them?)"
    return Table(f"excess-{kind}" + ("-known" if known else ""), f"Excess over {KIND_LABEL[kind]}: {what}. Bold: the "
                                   f"excess differs from 0; '=': it is equivalent to 0 within +-{margin:g}; both by "
                                   "bootstrap tests, Holm-adjusted over every cell of the table; neither: "
                                   f"inconclusive.{left_out}{few_note} Columns: {', '.join(cats)}.",
                 ["method", "control (draws)", f"changed ({cats[0]})", "control changed",
                  *[f"excess {c}" for c in cats]], body)


def margin_table(res: StudyResults) -> Table | None:
    """Locality (answer unchanged, all locality probes) per bin of the base model's margin."""
    per = {m: margin_locality(res, m) for m in res.methods}
    if not any(per.values()):
        return None
    n = {label: next((c.n for m in res.edit_methods if (c := per[m].get(label)) is not None), 0)
         for label, _, _ in MARGIN_BINS}
    body = [[(m, False), *[(fmt_cell(per[m].get(label)), False) for label, _, _ in MARGIN_BINS]]
            for m in res.methods if per[m]]
    return Table("margin", "Locality by the base model's margin (top-1 minus top-2 next-token log-probability after "
                           "the prompt, nats): answer unchanged per bin. Near-ties (small margins) flip under any "
                           "perturbation; a method that leaks beyond noise changes large-margin answers too.",
                 ["method", *[f"margin {label} (n={n[label]})" for label, _, _ in MARGIN_BINS]], body)


def base_answers_table(res: StudyResults) -> Table | None:
    """The base model's answers on the locality probes: known (right), wrong, none, top answers."""
    rows_ = base_answers(res)
    if not rows_:
        return None
    rows = [[(b.category, False), (str(b.n), False), *[(f"{b.share[s]:.3f}", False) for s in BASE_STATUSES],
             (", ".join(f"{a} ({v:.3f})" for a, v in b.top), False)] for b in rows_]
    return Table("base-answers", "The base model's answers on the locality probes, read by each probe's answer rule: "
                                 "known = its answer is the probe's target (the ground truth), wrong = another "
                                 "answer, none = no answer the rule can read; with its most frequent answers. "
                                 "Locality over wrong answers measures whether they stay wrong.",
                 ["category", "n", "known", "wrong", "none", "most frequent answers"], rows)


def locality_status_table(res: StudyResults) -> Table | None:
    """Answer-level locality per method, split by how the base model answers."""
    per = locality_by_status(res)
    if not per or not any(c is not None for cells in per.values() for c in cells.values()):
        return None
    n = {s: next((c.n for m in res.methods if (c := per[m][s]) is not None), 0) for s in BASE_STATUSES}
    body = [[(m, False), *[(fmt_cell(per[m][s]), False) for s in BASE_STATUSES]] for m in ["base", *res.methods]
            if m in per]
    return Table("locality-by-answer", "Answer unchanged over the locality probes, by the base model's answer: "
                                       "known (right: the headline where the suite has ground truth), wrong, none.",
                 ["method", *[f"{s} (n={n[s]})" for s in BASE_STATUSES]], body)


def strength_units_table(res: StudyResults) -> Table | None:
    """Units run at matched strength: the level, what each reached, its scale and update norm."""
    units = res.strength_units
    if not units:
        return None
    rows = [[(u.method, False), (u.unit, False), (f"{u.info['strength_p']:g}", False),
             (f"{u.info['p_target']:.3f}", False), (f"{u.info['strength_scale']:.3f}", False),
             (f"{u.info['update_norm']:.3g}", False), ("yes" if u.info["strength_reached"] else "NO", not
                                                        u.info["strength_reached"])] for u in units]
    missed = sum(1 for u in units if not u.info["strength_reached"])
    return Table("strength-units", f"Units run at matched strength: the method's delta scaled to the wanted "
                                   f"P(target | prompt); {missed} of {len(units)} did not reach it and are left out "
                                   "of every other table.",
                 ["method", "unit", "wanted P", "reached P", "scale", "update norm", "reached"], rows)


def no_op_table(res: StudyResults) -> Table | None:
    """Stored edits that were no-ops for the base model (refused by apply_edit since)."""
    rows_ = no_op_edits(res)
    if not rows_:
        return None
    return Table("no-op", f"{len(rows_)} stored edit(s) whose target the base model already gave, or whose tokens "
                          "start its answer (token-level efficacy counts them as reached before any edit; editscope "
                          "now refuses such edits): read their efficacy with care.",
                 ["probe set", "prompt", "base answer"], [[(a, False), (b, False), (repr(c), False)]
                                                          for a, b, c in rows_])


def identity_table(res: StudyResults) -> Table | None:
    """The identity control: its locality (should be exactly 1) and every exception."""
    bad, n, shown = identity_exceptions(res)
    if n == 0:
        return None
    rows = [[(r["prompt"], False), (r["base_greedy"], False), (r["greedy"], False),
             (f"{r['base_margin']:.3g}" if r.get("base_margin") is not None else "-", False)] for r in shown]
    head = (f"Identity control (no change, evaluated as an edit): {n - bad} of {n} locality probes keep their answer"
            f"{' -- the evaluation reproduces the base exactly' if bad == 0 else ''}.")
    if bad:
        head += (f" The {bad} exception(s) (first {len(shown)} listed) are probes the edited-model path does not "
                 "reproduce: near-ties whose argmax depends on batch composition and padding.")
    return Table("identity", head, ["prompt", "base output", "identity output", "base margin"], rows)


def pairwise_table(res: StudyResults) -> Table | None:
    """Every two edit methods on pooled answer-level locality, paired (Holm), with equivalence."""
    tests = pairwise_tests(res)
    if not tests:
        return None
    rows = [[(t.method, False), (str(t.n), False), (f"{t.n01}/{t.n10}", False), (f"{t.diff:+.3f}", False),
             (TEST_NAMES[t.kind], False), (fmt_p(t.p_holm), t.p_holm < 0.05), (fmt_p(t.p_tost_holm), False),
             (t.verdict, t.p_holm < 0.05)] for t in tests]
    return Table("pairwise", "Every pair of edit methods on pooled answer-level locality (same probes; McNemar over "
                             "one edit's probes, or a t-test over several edits' mean differences); difference = second minus first; p "
                             f"adjusted by Holm over all pairs; equivalence: TOST within +-{tests[0].margin:g}, Holm."
                 f"{_matched_note(res)}",
                 ["pair", "n", "n01/n10", "difference", "test", "p (Holm)", "p equiv. (Holm)", "verdict"], rows)


def _matched_note(res: StudyResults) -> str:
    levels = sorted({lv for m in res.edit_methods if (lv := strength_level(res, m)) is not None})
    if not levels:
        return ""
    return (f" Methods run at matched strength (P(target) = {', '.join(f'{lv:g}' for lv in levels)}) are paired only "
            "with methods run to the same level.")


def seed38_table(res: StudyResults) -> Table | None:
    """The published 2+2=5 study next to editscope's run of its protocol (when the study has the
    ``seed38`` suite)."""
    if not has_seed38(res):
        return None
    body = []
    for label, source, cells in replication_rows(res):
        row = [(label, False)]
        for cat, _, _ in SEED38_COLUMNS:
            v = cells.get(cat)
            row.append(("-" if v is None else f"{v:.3f}" if source == "published" else fmt_cell(v), False))
        body.append(row)
    return Table("seed38", "The published 2+2=5 study (GPT-2 Medium, its 38 probes) next to editscope's run of the "
                           "same protocol on this model (the seed38 suite: published probes verbatim, the rest "
                           "reconstructed). Target: P(5) > P(4); paraphrase: answers 5; near/far/general: accuracy "
                           "against the true answer (not locality against the base); last column: share of all 38 "
                           "probes answering 5. editscope rows: exact Clopper-Pearson 95% intervals.",
                 ["setting", *[h for _, _, h in SEED38_COLUMNS]], body)


def strength_table(res: StudyResults) -> Table | None:
    """Swept methods compared at equal efficacy (see :mod:`editscope.report.analyses.strength`)."""
    groups = sweep_groups(res)
    if not groups:
        return None
    rows = []
    for m, (key, labels) in groups.items():
        pts = points(res, labels)
        span = f"{pts[0].p_target:.2f}-{pts[-1].p_target:.2f}" if pts else "-"
        rows.append([(m, False), (key, False), (str(len(pts)), False), (span, False),
                     *[(fmt_cell(at_level(pts, lv)), False) for lv in LEVELS]])
    return Table("strength", "Methods at matched edit strength: each swept method's answer-level locality (all "
                             "locality probes) interpolated at equal P(target | prompt), between the two settings "
                             "that bracket it; '-' where no setting reaches that strength.",
                 ["method", "swept", "settings", "P(target) range", *[f"locality at P={lv:g}" for lv in LEVELS]],
                 rows)


def collapse_tables(res: StudyResults) -> list[Table]:
    """Collapse accounting (single/batch: per-unit perplexity as a distribution, the worst edits;
    sequential: collapse points). Empty without perplexity; the study's protocol thresholds."""
    threshold, ratio = collapse_lines(res)
    out = []
    points = collapse_points(res, threshold, ratio)
    if points:
        rows = [[(p.method, False), (p.corpus.removeprefix("ppl:"), False), (f"{p.base:.2f}" if p.base else "-", False),
                 (str(p.steps), False), (f"{p.final:.2f}", False), (str(p.collapsed_at or "never"), False),
                 (str(p.doubled_at or "never"), False)] for p in points]
        return [Table("collapse-points", f"Sequential collapse points: edits applied when perplexity first reached "
                                         f"{threshold:g} (collapsed) or {ratio:g}x the base model's (doubled).",
                      ["method", "corpus", "base", "edits", "final ppl", "collapsed at", "doubled at"], rows)]
    table = collapse_table(res, threshold, ratio)
    if not table:
        return out
    rows = [[(r.method, False), (r.corpus.removeprefix("ppl:"), False), (str(r.n), False),
             (count_with_rate(r.collapsed, r.collapsed_iv), r.collapsed > 0), (count_with_rate(r.doubled, r.doubled_iv), bool(r.doubled)),
             (f"{r.median:.2f}", False), (f"{r.p90:.2f}", False), (f"{r.maximum:.2f}", False)] for r in table]
    out.append(Table("collapse", f"Collapse accounting per method: units with perplexity >= {threshold:g} (collapsed) "
                                 f"and >= {ratio:g}x the base model's (doubled), count (share [exact 95% interval]), "
                                 "and the distribution over units.",
                     ["method", "corpus", "units", "collapsed", "doubled", "median", "p90", "max"], rows))
    worst = [[(r.method, False), (r.corpus.removeprefix("ppl:"), False), (u.unit, False), (f"{u.value:.2f}", False),
              (_clip("; ".join(u.requests), 120) or "-", False)] for r in table for u in r.worst]
    out.append(Table("collapse-worst", "The highest-perplexity edits per method and corpus.",
                     ["method", "corpus", "unit", "perplexity", "edit"], worst))
    return out


def anatomy_table_(res: StudyResults) -> Table | None:
    """Weight-change anatomy per method (weight edits only; None without any)."""
    _, ratio = collapse_lines(res)
    rows = anatomy_table(res, ratio)
    if not rows:
        return None
    f = lambda v, fmt="{:.3g}": "-" if v is None else fmt.format(v)  # noqa: E731
    body = [[(r.method, False), (str(r.n), False), (f(r.fro), False), (f(r.relative), False), (f(r.effective_rank, "{:.2f}"), False),
             (f(r.fro_doubled), False), (f(r.fro_stable), False),
             ("-" if r.fro_top is None else f"{f(r.fro_top)} vs {f(r.fro_rest)} (p={fmt_p(r.top_p)})", False),
             ("-" if r.spearman is None else f"{r.spearman:+.2f} (p={fmt_p(r.spearman_p)})", False)] for r in rows]
    return Table("anatomy", "Weight-change anatomy (medians over units): Frobenius norm of the update, relative to the "
                            "touched weights, effective rank of the largest update; the norm of the edits that "
                            f"{ratio:g}x'd perplexity against the others; the norm of the top 10% of edits by "
                            "perplexity against the rest (one-sided Mann-Whitney U: top larger); Spearman's rho of "
                            "norm with perplexity.",
                 ["method", "units", "||dW||", "||dW||/||W||", "eff. rank", "||dW|| (ppl doubled)", "||dW|| (others)",
                  "||dW|| top 10% ppl vs rest", "rho(||dW||, ppl)"], body)


def correlation_table(res: StudyResults) -> Table | None:
    """Perplexity vs downstream accuracy over a sequential run's evaluated steps (None otherwise)."""
    rows = ppl_downstream_correlations(res)
    if not rows:
        return None
    body = [[(c.method, c.method == "all"), (c.task, False), (str(c.n), False),
             (f"{c.pearson:+.2f} [{c.pearson_low:+.2f}, {c.pearson_high:+.2f}]", False), (fmt_p(c.pearson_p), False),
             (f"{c.spearman:+.2f} [{c.spearman_low:+.2f}, {c.spearman_high:+.2f}]", False), (fmt_p(c.spearman_p), False)]
            for c in rows]
    return Table("ppl-downstream", f"Perplexity ({rows[0].corpus}) against downstream accuracy over the evaluated steps: "
                                   "Pearson's r of log-perplexity and Spearman's rho, 95% intervals (Fisher z); "
                                   "negative: accuracy falls as perplexity rises.",
                 ["method", "task", "steps", "Pearson r (log ppl)", "p", "Spearman rho", "p"], body)


def knowedit_table(res: StudyResults) -> Table | None:
    """KnowEdit's Edit Succ. / Portability / Locality / Fluency (x 100), or None without token metrics."""
    rows = knowedit_rows(res)
    if not rows:
        return None
    labels = ["Edit Succ.", "Portability", "Locality", "Fluency"]

    def fmt(c: Cell | None) -> str:
        if c is None:
            return "-"
        if c.n < 2:
            return f"{100 * c.value:.2f}"
        return f"{100 * c.value:.2f} [{100 * c.low:.2f}, {100 * c.high:.2f}]"

    body = [[(r.method, False), *((fmt(r.cells[k]), False) for k in labels)] for r in rows]
    return Table("knowedit", "KnowEdit's summary (EasyEdit's token definitions, x 100): Edit Succ. = teacher-forced "
                             "argmax accuracy over the new target's tokens; Portability = the same on portability "
                             "probes; Locality = share of each locality answer's tokens whose argmax the edit left "
                             "as it was; Fluency = weighted 2/3-gram entropy of text generated from the edit prompts "
                             "(the study's `fluency:` key). Each averaged within an edit, then over edits (95% "
                             "t-interval over edits).", ["method", *labels], body)


def mquake_table(res: StudyResults) -> Table | None:
    """MQuAKE's edit-wise, instance-wise and multi-hop accuracy, or None without MQuAKE probes."""
    rows = mquake_rows(res)
    if not rows:
        return None
    body = [[(r.method, False), *((fmt_cell(r.cells[k]) if r.cells[k] is not None else "-", False)
                                  for k in MQUAKE_COLUMNS)] for r in rows]
    return Table("mquake", "MQuAKE (answers matched with their aliases in the greedy text): edit-wise = rewrites "
                           "recalled; instance-wise = cases whose every single hop gives the new answer; multi-hop = "
                           "cases where any of the multi-hop questions gives the new final answer; old answer = the "
                           "same with the pre-edit answer. 95% Wilson intervals over rewrites or cases.",
                 ["method", *MQUAKE_COLUMNS], body)


def typed_probe_tables(res: StudyResults) -> list[Table]:
    """Portability by sub-type (token accuracy) and locality by type (token agreement), where the
    probes carry their type (KnowEdit and the survey's portability set)."""
    out = []
    for cat, key, metric in (("portability", "portability_type", "token_acc"),
                             (LOCALITY, "locality_type", "locality_token_agreement")):
        try:
            t = breakdown_table(res, cat, key, metric)
        except ValueError:  # no probe of the category carries the key
            continue
        if any(x != "-" for row in t.rows for x, _ in row[1:]):
            out.append(t)
    return out


def tables(res: StudyResults) -> list[Table]:
    lead = [excess_table(res, k) for k in EXCESS_KINDS] + [seed38_table(res)]
    return [t for t in (*lead, main_table(res), strength_units_table(res), no_op_table(res), base_answers_table(res),
                        locality_status_table(res), strength_table(res), identity_table(res), margin_table(res),
                        criterion_table(res), knowedit_table(res), *typed_probe_tables(res), mquake_table(res),
                        *collapse_tables(res), anatomy_table_(res), correlation_table(res),
                        tests_table(res), pairwise_table(res), downstream_table(res), events_table(res),
                        detail_table(res))
            if t is not None]


def _status_line(res: StudyResults) -> str:
    done = len(res.units)
    if res.partial:
        return (f"PARTIAL RUN: {done} units stored, run status '{res.meta.get('status')}'; numbers cover only "
                "the completed units (`editscope run ... --resume` continues it).")
    return f"Complete run: {done} units."


def _provenance(res: StudyResults) -> list[str]:
    m = res.meta
    return [f"study `{m.get('name')}`, config hash `{m.get('config_hash')}`, protocol {res.protocol}",
            f"model `{m.get('model_name')}` (base fingerprint `{str(m.get('model_fingerprint'))[:16]}`), seed {m.get('seed')}",
            f"editscope {m.get('editscope_version')}, torch {m.get('torch_version')}, transformers "
            f"{m.get('transformers_version')}; created {m.get('created')}, finished {m.get('finished', '-')}"]


# ---- Markdown

def markdown_table(t: Table) -> str:
    lines = ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
    for row in t.rows:
        lines.append("| " + " | ".join(f"**{x}**" if b else x for x, b in row) + " |")
    return "\n".join(lines)


def render_markdown(res: StudyResults, figures: dict[str, list[Path]], out: Path) -> Path:
    parts = [f"# {res.meta.get('name')}: edit report", "", f"> {_status_line(res)}", ""]
    parts += [f"- {x}" for x in _provenance(res)] + [""]
    for t in tables(res):
        parts += [f"## {t.name}", "", t.caption, "", markdown_table(t), ""]
    for name, paths in figures.items():
        png = next(p for p in paths if p.suffix == ".png")
        parts += [f"## figure: {name}", "", f"![{name}]({png.relative_to(out.parent)})", ""]
    out.write_text("\n".join(parts))
    return out


# ---- HTML

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{padding:4px 8px;text-align:left}
thead th{border-bottom:2px solid #333}tbody tr:last-child td{border-bottom:2px solid #333}
.partial{background:#fff3cd;border:1px solid #e0c060;padding:8px}.complete{color:#2d6a4f}
img{max-width:100%;border:1px solid #eee}caption{caption-side:top;text-align:left;font-size:12px;color:#555}"""


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{'<b>' if b else ''}{html.escape(x)}{'</b>' if b else ''}</td>" for x, b in row)
                   + "</tr>" for row in t.rows)
    return (f'<table id="table-{t.name}"><caption>{html.escape(t.caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def render_html(res: StudyResults, figures: dict[str, list[Path]], out: Path) -> Path:
    status = f'<p class="{"partial" if res.partial else "complete"}">{html.escape(_status_line(res))}</p>'
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(str(res.meta.get('name')))}</title>"
             f"<style>{_CSS}</style></head><body><h1>{html.escape(str(res.meta.get('name')))}: edit report</h1>", status,
             "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in _provenance(res)) + "</ul>"]
    for t in tables(res):
        parts.append(f"<h2>{html.escape(t.name)}</h2>{_html_table(t)}")
    for name, paths in figures.items():
        png = next(p for p in paths if p.suffix == ".png")
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<h2>figure: {html.escape(name)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    out.write_text("\n".join(parts))
    return out


# ---- LaTeX

def render_latex(res: StudyResults, figures: dict[str, list[Path]], out: Path) -> Path:
    for d in ("sections", "tables", "figures", "commands"):
        (out / d).mkdir(parents=True, exist_ok=True)
    name = tex_escape(str(res.meta.get("name")))
    (out / "commands" / "macros.tex").write_text(
        "% editscope report macros\n"
        rf"\newcommand{{\studyname}}{{{name}}}" "\n"
        rf"\newcommand{{\confighash}}{{\texttt{{{tex_escape(str(res.meta.get('config_hash')))}}}}}" "\n"
        rf"\newcommand{{\modelname}}{{\texttt{{{tex_escape(str(res.meta.get('model_name')))}}}}}" "\n")
    inputs = []
    for t in tables(res):
        (out / "tables" / f"{t.name}.tex").write_text(table_float(t, f"tab:{t.name}"))
        inputs.append(rf"\input{{tables/{t.name}}}")
    figs = []
    for fname, paths in figures.items():
        pdf = next(p for p in paths if p.suffix == ".pdf")
        shutil.copy(pdf, out / "figures" / pdf.name)
        figs.append("\n".join([r"\begin{figure}[t]", r"\centering",
                               rf"\includegraphics[width=\linewidth,height=0.85\textheight,keepaspectratio]{{figures/{pdf.stem}}}",
                               rf"\caption{{{tex_escape(caption(res, fname))}}}", rf"\label{{fig:{pdf.stem}}}",
                               r"\end{figure}"]))
    status = tex_escape(_status_line(res))
    prov = " ".join(tex_escape(x.replace("`", "")) + "." for x in _provenance(res))
    (out / "sections" / "results.tex").write_text("\n".join([
        r"\section{Results}", r"\label{sec:results}", status, "", prov, "", *inputs, *figs, ""]))
    (out / "main.tex").write_text("\n".join([
        r"\documentclass[10pt]{article}", r"\usepackage[margin=2cm]{geometry}", r"\usepackage{booktabs}",
        r"\usepackage{graphicx}", r"\usepackage[T1]{fontenc}", r"\input{commands/macros}",
        r"\title{\studyname: edit report}", r"\date{}", r"\begin{document}", r"\maketitle",
        r"\input{sections/results}", r"\end{document}", ""]))
    return out / "main.tex"


def compile_latex(main: Path) -> Path:
    """Run pdflatex twice in ``main``'s folder (the report bundle has no bibliography); returns the
    PDF. Raises :class:`~editscope.report.formats.latex_build.PaperBuildError` (a RuntimeError) with the file, line and
    log excerpt."""

    return compile_paper(main, bibtex=False).pdf


FORMATS = ("md", "html", "latex")


def write_report(run_dir: str | Path, formats: tuple[str, ...] = FORMATS, reference: str | None = None,
                 compile_pdf: bool = False, results: StudyResults | None = None) -> dict[str, Path]:
    """Write the report of ``run_dir`` (see the module docstring); returns format -> path.
    ``results``: the run already loaded with :func:`load_results` (``reference`` is then its own)."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown report format(s) {bad}; use {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    res = results if results is not None else load_results(run_dir, reference)
    figures = all_figures(res, run_dir / "figures")
    out: dict[str, Path] = {}
    if "md" in formats:
        out["md"] = render_markdown(res, figures, run_dir / "report.md")
    if "html" in formats:
        out["html"] = render_html(res, figures, run_dir / "report.html")
    if "latex" in formats:
        out["latex"] = render_latex(res, figures, run_dir / "latex")
        if compile_pdf:
            out["pdf"] = compile_latex(out["latex"])
    return out



__all__ = ["FORMATS", "Table", "compile_latex", "main_table", "render_html", "render_latex", "render_markdown",
           "tables", "tex_escape", "write_report"]
