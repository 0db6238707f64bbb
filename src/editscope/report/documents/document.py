"""Write-ups whose numbers come from a run: a Markdown template with prose and placeholders, filled
from the results store, so that no number in the published text is typed by hand.

Placeholders (``{{kind:args}}``):

* ``{{table:main}}``, ``{{table:criterion}}``, ``{{table:mcnemar}}``, ``{{table:downstream}}``,
  ``{{table:events}}``, ``{{table:detail}}``: the report's tables (Markdown);
* ``{{breakdown:CATEGORY:META_KEY}}`` or ``{{breakdown:CATEGORY:META_KEY:METRIC}}``: methods x values
  of a probe meta field (e.g. ``near:relation``, ``locality:op``), the category's headline metric by
  default; ``{{slice:METHOD:CATEGORY:META_KEY:VALUE}}``: one cell of it (``value [low, high]``);
* ``{{where:METHOD:CATEGORY:KEY=VALUE[,KEY=VALUE...]}}`` or ``...:METRIC}}``: a method's rate over
  the probes whose meta matches every condition, ``value [low, high] (n=N)`` (e.g.
  ``{{where:rome:leak:op=+,b=2}}``: how often "a+2=" now answers the edit target);
  ``{{rate:METHOD:CATEGORY[:METRIC]}}``: the same over the whole category (any metric, e.g.
  ``{{rate:rome:general:answer_unchanged}}``);
* ``{{cell:METHOD:COLUMN}}``: one cell, ``value [low, high]`` (``COLUMN`` as in the report, e.g.
  ``near/unchanged``, ``ppl:me_ppl_1k``); ``{{value:METHOD:COLUMN}}``: the value alone; ``{{n:METHOD:COLUMN}}``;
* ``{{test:METHOD:COLUMN}}``: the McNemar result against the reference, ``difference, p (Holm)``;
* ``{{table:excess-placebo}}``, ``{{table:excess-unrelated}}``, ``{{table:excess-unrelated_other}}``,
  ``{{table:excess-unrelated-own}}``, ``{{table:excess-unrelated_other-own}}`` (each unrelated edit on its own
  neighbourhood, unpaired), each also as ``{{table:excess-KIND-known}}`` (only the probes the base model
  answers correctly),
  ``{{table:margin}}``, ``{{table:identity}}``, ``{{table:pairwise}}``, ``{{table:seed38}}``,
  ``{{table:strength}}``: the attribution tables (see :mod:`editscope.report.analyses.attribution`);
* ``{{excess:METHOD:KIND[:CATEGORY]}}``: a method's excess of changed answers over its control
  (``placebo``, ``unrelated``, ``unrelated_other``) on a category (default all locality probes;
  ``far+known``, ``locality+known``: only the probes whose base answer is right), ``+value [low, high]``; ``{{excess_verdict:METHOD:KIND[:CATEGORY]}}``: equivalent / different /
  inconclusive, with the bootstrap p-values; ``{{excess_rates:METHOD:KIND[:CATEGORY]}}``: ``method rate vs control
  rate (D draws)``; ``{{identity}}``: ``kept of n`` for the identity control;
  ``{{margin:METHOD:BIN}}``: answer-level locality in a base-margin bin (``<0.1``, ``0.1-1``,
  ``1-3``, ``>3``);
* ``{{strength:METHOD:LEVEL}}``: a swept method's answer-level locality interpolated at
  P(target) = LEVEL (see :mod:`editscope.report.analyses.strength`), ``value [low, high]`` or ``-`` where
  its sweep does not reach that strength; ``{{seed38:METHOD:COLUMN}}``: a method's published-protocol
  metric on the ``seed38`` suite (``target``, ``paraphrase``, ``near``, ``far``, ``general``,
  ``all`` = the "5" rate over all 38), exact interval; ``{{seed38:published:SETTING:COLUMN}}``: the
  published figure (``naive FT``, ``constrained FT``, ``low-rank FT``);
* ``{{figure:NAME}}``: the figure as a Markdown image (PNG copied to ``figures/<study>_<NAME>.png``
  next to the document);
* ``{{table:base-answers}}``, ``{{table:locality-by-answer}}``, ``{{table:no-op}}``: the base model's
  answers on the locality probes, locality split by them, stored no-op edits;
* ``{{table:collapse}}``, ``{{table:collapse-worst}}``, ``{{table:collapse-points}}``,
  ``{{table:anatomy}}``, ``{{table:ppl-downstream}}``: the collapse study's tables;
  ``{{table:knowedit}}``: KnowEdit's Edit Succ. / Portability / Locality / Fluency;
  ``{{table:mquake}}``: MQuAKE's edit-wise, instance-wise and multi-hop accuracy;
  ``{{collapse:METHOD:FIELD}}``: one figure of a method's collapse accounting (``units``,
  ``collapsed``, ``doubled``: ``count (share [low, high])``; ``median``, ``p90``, ``max``, ``base``:
  perplexity); in a sequential run, its chain's collapse point (``steps``, ``final``,
  ``collapsed_at`` and ``doubled_at``: the first step at the line, or ``never``; ``base``);
* ``{{meta:KEY}}``: run metadata (``config_hash``, ``name``, ``model_name``, ``created``, ...);
* ``{{run_dir}}``: the run folder as given;
* ``{{from:STUDY:PLACEHOLDER}}``: any placeholder above, filled from another stored study (e.g.
  ``{{from:two-plus-two-controls:excess:rome:placebo}}``; a figure is drawn into that run's folder
  and copied under that study's name), so that a write-up can lead with a companion study's numbers.
  ``STUDY`` is that study's name; its run folder is given to :func:`write_document` (``editscope
  report --with STUDY=DIR``) or else found beside this run's folder (``runs/two-plus-two-controls``
  next to ``runs/two-plus-two``), and its stored name must match.
* ``{{models:STUDY,STUDY[,...]}}``: the cross-model table of one study run on several models
  (``editscope run CONFIG --model NAME``): per model efficacy, paraphrase, answer-level locality and
  perplexity; the studies are found as for ``from``.
* ``{{derived:FIELD}}``: the derived model the study ran on, as recorded in its store: ``held_out:OP``
  (held-out greedy exact match of an operation, ``accuracy (correct/n)``), ``wording:NAME``,
  ``build_minutes``, ``name``, ``base``, ``train_pairs``, ``held_out_pairs``, ``final_loss``,
  ``recipe:KEY`` (``recipe:KEY:SUBKEY`` for a nested setting);
* ``{{leaderboard:STUDY,STUDY[,...]}}``: every editor of each study (one dataset, one model each) as a
  row per model with efficacy, generalisation, specificity and portability read teacher-forced and
  generated, fluency, edits made, seconds and peak memory per edit
  (:mod:`editscope.report.analyses.leaderboard`); ``this`` is the study itself;
  ``{{leaderboard_top:COLUMN:STUDY,...}}``: the best row of one column (``efficacy_tf``,
  ``efficacy_gen``, ``generalisation_*``, ``specificity_*``, ``portability_*``, ``fluency``).

An unknown placeholder, method or column is an error that names it. Placeholders are registered in
:data:`editscope.report.documents.placeholders.STUDY` next to the data they read (this module holds the
ones that read the results frame); the same engine fills paper drafts and trace write-ups.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...metrics.edit_metrics import METRICS
from ...runner.store import FILENAME
# attribution, collapse, lifelong, replication and strength register their placeholders and tables on import
from ..analyses import attribution, collapse, lifelong, replication, strength  # noqa: F401
from ..analyses.attribution import EXCESS_KINDS
from .placeholders import (STUDY, TABLES, DocumentError, Raw, Sink, StudyContext, Tab, placeholders_in,
                           register_table)
from ..formats.plots import all_figures
from ..formats.render import (anatomy_table_, base_answers_table, breakdown_table, collapse_tables, correlation_table,
                     criterion_table, detail_table, downstream_table, events_table, excess_table, identity_table,
                     knowedit_table, locality_status_table, main_table, margin_table, markdown_table, models_table,
                     mquake_table, no_op_table, pairwise_table, seed38_table, strength_table, strength_units_table,
                     tests_table)
from ..analyses.leaderboard import column_leader, leaderboard_table
from ..data.results import LOCALITY, StudyResults, breakdown, load_results, paired_test, rate_cell
from ..formats.table import Table, fmt_cell, fmt_p

@dataclass
class MarkdownSink:
    """Markdown: tables as pipe tables, figures as images copied to ``figure_dir`` (PNG)."""

    figure_dir: Path | None = None

    def text(self, s: str) -> str:
        return s

    def table(self, t: Table | None, res: StudyResults) -> str:
        return markdown_table(t) if t is not None else "(none)"

    def figure(self, name: str, paths: list[Path], res: StudyResults) -> str:
        png = next(p for p in paths if p.suffix == ".png")
        if self.figure_dir is None:
            return f"![{name}]({png})"
        self.figure_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{res.meta.get('name', 'run')}_{png.name}"  # several write-ups may share the folder
        shutil.copy(png, self.figure_dir / stem)
        return f"![{name}]({self.figure_dir.name}/{stem})"


def _column(res: StudyResults, method: str, key: str):
    col = next((c for c in res.columns if c.key == key), None)
    if col is None and "/" in key:  # any CATEGORY/METRIC, not only the report's columns
        cat, metric = key.split("/", 1)
        if metric in METRICS and (cat in (LOCALITY, "leak") or (res.frame.df["category"] == cat).any()):
            if method != "base" and method not in res.methods:
                raise DocumentError(f"no method {method!r} in this run; have {res.methods}")
            return rate_cell(res, method, cat, metric)
    if col is None:
        raise DocumentError(f"no column {key!r} in this run; have {[c.key for c in res.columns]}")
    if method not in col.cells:
        raise DocumentError(f"no method {method!r} in this run; have {list(col.cells)}")
    return col.cells[method]


def _named(tables: list[Table], name: str) -> Table | None:
    return next((t for t in tables if t.name == name), None)


def _study_list(args: str) -> list[str]:
    """The study names of ``{{models:STUDY,STUDY,...}}``."""
    return [n.strip() for n in args.split(",") if n.strip()]


def referenced_studies(template: str) -> list[str]:
    """The other studies a template's ``{{from:STUDY:...}}`` and ``{{models:STUDY,...}}`` placeholders
    read, in order of first use."""
    names: list[str] = []
    for kind, args in placeholders_in(template):
        if kind == "from":
            names.append(args.split(":", 1)[0])
        elif kind == "models":
            names += _study_list(args)
        elif kind in ("leaderboard", "leaderboard_top"):  # "this": the study itself
            names += [n for n in _study_list(args if kind == "leaderboard" else args.partition(":")[2]) if n != "this"]
    return list(dict.fromkeys(names))


for _name, _maker in {"main": main_table, "criterion": criterion_table, "mcnemar": tests_table,
                      "downstream": downstream_table, "events": events_table, "detail": detail_table,
                      "margin": margin_table, "identity": identity_table, "pairwise": pairwise_table,
                      "seed38": seed38_table, "strength": strength_table,
                      "anatomy": anatomy_table_, "ppl-downstream": correlation_table,
                      "knowedit": knowedit_table, "mquake": mquake_table, "base-answers": base_answers_table,
                      "locality-by-answer": locality_status_table, "no-op": no_op_table,
                      "strength-units": strength_units_table,
                      **{name: (lambda r, name=name: _named(collapse_tables(r), name))
                         for name in ("collapse", "collapse-worst", "collapse-points")},
                      **{f"excess-{k}": (lambda r, k=k: excess_table(r, k)) for k in EXCESS_KINDS},
                      **{f"excess-{k}-known": (lambda r, k=k: excess_table(r, k, known=True)) for k in EXCESS_KINDS}}.items():
    register_table(_name)(_maker)


# ---- the write-up placeholders that read the run's results (the others are registered where their data lives)

@STUDY.register("from", "{{from:STUDY:PLACEHOLDER}}")
def _from(ctx: StudyContext, args: str) -> Raw:
    study, _, inner = args.partition(":")
    if not inner:
        raise DocumentError(f"{{{{from:{args}}}}}: write {{{{from:STUDY:PLACEHOLDER}}}}, e.g. "
                            "{{from:two-plus-two-controls:identity}}")
    if study not in ctx.others:
        raise DocumentError(f"{{{{from:{args}}}}}: no stored study {study!r} was given; have "
                            f"{sorted(ctx.others)} (editscope report --with {study}=RUN_DIR)")
    ikind, _, name = inner.partition(":")
    if ikind == "from":
        raise DocumentError(f"{{{{from:{args}}}}}: a from placeholder cannot nest another")
    other = ctx.others[study]
    if ikind == "figure":  # drawn into the companion's own run folder, named after it when copied
        paths = all_figures(other, Path(other.run_dir) / "figures", {name}).get(name)
        if not paths:
            raise DocumentError(f"{{{{from:{args}}}}}: the stored study {study!r} has no figure {name!r}; "
                                f"it has {sorted(all_figures(other, Path(other.run_dir) / 'figures'))}")
        return Raw(ctx.sink.figure(name, paths, other))
    try:
        return Raw(fill("{{" + inner + "}}", other, str(other.run_dir), sink=ctx.sink))
    except DocumentError as e:
        raise DocumentError(f"from the stored study {study!r}: {e}") from None


def _studies(ctx: StudyContext, kind: str, args: str, names: list[str]) -> list[StudyResults]:
    """This study and the named companions (``this`` or this study's own name: the study itself)."""
    own = str(ctx.res.meta.get("name"))
    out = []
    for n in names:
        if n in ("this", own):
            out.append(ctx.res)
        elif n in ctx.others:
            out.append(ctx.others[n])
        else:
            raise DocumentError(f"{{{{{kind}:{args}}}}}: no stored study {n!r} was given; have {sorted(ctx.others)}")
    return out


@STUDY.register("derived", "{{derived:FIELD}}")
def _derived(ctx: StudyContext, args: str) -> str:
    d = ctx.res.meta.get("derived_model")
    if not d:
        raise DocumentError(f"{{{{derived:{args}}}}}: the study did not run on a derived model (no derived_model in "
                            "its store)")
    kind, _, key = args.partition(":")
    if kind in ("held_out", "wording"):
        table = d["held_out_accuracy"] if kind == "held_out" else (d.get("held_out_wordings") or {})
        if key not in table:
            raise DocumentError(f"{{{{derived:{args}}}}}: no {kind} entry {key!r}; have {sorted(table)}")
        r = table[key]
        return f"{r['accuracy']:.3f} ({r['correct']}/{r['n']})"
    if kind == "build_minutes":
        return f"{d['build_seconds'] / 60:.0f}"
    if kind in ("name", "base", "train_pairs", "held_out_pairs", "final_loss", "recipe_digest"):
        return str(d[kind])
    if kind == "recipe":  # recipe:KEY, or recipe:KEY:SUBKEY for a nested setting (recipe:lora:rank)
        value: Any = d["recipe"]
        for part in key.split(":"):
            if not isinstance(value, dict) or part not in value:
                have = sorted(value) if isinstance(value, dict) else []
                raise DocumentError(f"{{{{derived:{args}}}}}: the recipe has no {key!r}; have {have}")
            value = value[part]
        return str(value)
    raise DocumentError(f"{{{{derived:{args}}}}}: unknown field; use held_out:OP, wording:NAME, build_minutes, name, "
                        "base, train_pairs, held_out_pairs, final_loss, recipe_digest or recipe:KEY")


@STUDY.register("leaderboard", "{{leaderboard:STUDY,STUDY[,...]}}")
def _leaderboard(ctx: StudyContext, args: str) -> Tab:
    names = _study_list(args)
    if not names:
        raise DocumentError("{{leaderboard:}}: name the studies, e.g. {{leaderboard:this,leaderboard-counterfact-gemma3-270m}}")
    try:
        return Tab(leaderboard_table(_studies(ctx, "leaderboard", args, names)))
    except ValueError as e:
        raise DocumentError(f"{{{{leaderboard:{args}}}}}: {e}") from None


@STUDY.register("leaderboard_top", "{{leaderboard_top:COLUMN:STUDY,STUDY[,...]}}")
def _leaderboard_top(ctx: StudyContext, args: str) -> str:
    column, _, rest = args.partition(":")
    try:
        return column_leader(_studies(ctx, "leaderboard_top", args, _study_list(rest) or ["this"]), column)
    except (KeyError, ValueError) as e:
        raise DocumentError(f"{{{{leaderboard_top:{args}}}}}: {e.args[0]}") from None


@STUDY.register("models", "{{models:STUDY,STUDY[,...]}}")
def _models(ctx: StudyContext, args: str) -> Tab:
    names = _study_list(args)
    if len(names) < 2:
        raise DocumentError(f"{{{{models:{args}}}}}: write {{{{models:STUDY,STUDY[,...]}}}} with the same "
                            "study run on two or more models (editscope run CONFIG --model NAME)")
    missing = [n for n in names if n not in ctx.others]
    if missing:
        raise DocumentError(f"{{{{models:{args}}}}}: no stored study {missing[0]!r} was given; have {sorted(ctx.others)}")
    try:
        return Tab(models_table([ctx.others[n] for n in names]))
    except ValueError as e:
        raise DocumentError(f"{{{{models:{args}}}}}: {e}") from None


@STUDY.register("table", "{{table:NAME}}")
def _table(ctx: StudyContext, args: str) -> Tab:
    if args not in TABLES:
        raise DocumentError(f"unknown table {args!r}; use {', '.join(TABLES)}")
    return Tab(TABLES[args](ctx.res))  # None (nothing to show in this run) fills as nothing


@STUDY.register("slice", "{{slice:METHOD:CATEGORY:META_KEY:VALUE}}")
def _slice(ctx: StudyContext, args: str) -> str:
    bits = args.split(":", 3)
    if len(bits) != 4:
        raise STUDY.usage_error("slice", args)
    method, cat, key, value = bits
    ctx.method("slice", args, method)
    c = rate_cell(ctx.res, method, cat, where={key: value})
    if c is None:  # the whole breakdown only when this method has no such probe
        have = breakdown(ctx.res, cat, key)
        if value not in have:
            raise DocumentError(f"{{{{slice:{args}}}}}: no {cat!r} probe has {key}={value!r}; have {sorted(have)}")
    return fmt_cell(c)


def _rate_where(ctx: StudyContext, kind: str, args: str) -> str:
    bits = args.split(":")
    if kind == "rate":  # the same without conditions
        if len(bits) not in (2, 3):
            raise STUDY.usage_error(kind, args)
        bits.insert(2, "")
    elif len(bits) not in (3, 4) or not all("=" in c for c in bits[2].split(",")):
        raise STUDY.usage_error(kind, args)
    method, cat, conds = bits[:3]
    ctx.method(kind, args, method)
    where = dict(c.split("=", 1) for c in conds.split(",")) if conds else None
    try:
        c = rate_cell(ctx.res, method, cat, bits[3] if len(bits) == 4 else None, where)
    except KeyError as e:
        raise DocumentError(f"{{{{{kind}:{args}}}}}: {e}") from None
    if c is None:
        raise DocumentError(f"{{{{{kind}:{args}}}}}: no {cat!r} probe of {method!r} matches {where or 'any'}")
    return f"{fmt_cell(c)} (n={c.n})"


STUDY.register("where", "{{where:METHOD:CATEGORY:KEY=VALUE[,KEY=VALUE...][:METRIC]}}")(
    lambda ctx, args: _rate_where(ctx, "where", args))
STUDY.register("rate", "{{rate:METHOD:CATEGORY[:METRIC]}}")(lambda ctx, args: _rate_where(ctx, "rate", args))


@STUDY.register("breakdown", "{{breakdown:CATEGORY:META_KEY[:METRIC]}}")
def _breakdown(ctx: StudyContext, args: str) -> Tab:
    bits = args.split(":")
    if len(bits) not in (2, 3):
        raise STUDY.usage_error("breakdown", args)
    try:
        return Tab(breakdown_table(ctx.res, *bits))
    except (KeyError, ValueError) as e:
        raise DocumentError(f"{{{{breakdown:{args}}}}}: {e}") from None


def _cell_as(ctx: StudyContext, kind: str, args: str) -> str:
    parts = args.split(":", 1)
    if len(parts) != 2:
        raise STUDY.usage_error(kind, args)
    c = _column(ctx.res, *parts)
    if c is None:
        return "-"
    return fmt_cell(c) if kind == "cell" else (str(c.n) if kind == "n" else fmt_cell(c).split(" [")[0])


for _kind in ("cell", "value", "n"):
    STUDY.register(_kind, f"{{{{{_kind}:METHOD:COLUMN}}}}")(lambda ctx, args, kind=_kind: _cell_as(ctx, kind, args))


@STUDY.register("test", "{{test:METHOD:COLUMN}}")
def _test(ctx: StudyContext, args: str) -> str:
    res = ctx.res
    parts = args.split(":", 1)
    if len(parts) != 2:
        raise STUDY.usage_error("test", args)
    t = next((t for t in res.tests if t.method == parts[0] and t.column == parts[1]), None)
    if t is None and res.reference is not None and "/" in parts[1] and parts[0] in res.methods:
        t = paired_test(res, parts[0], res.reference, *parts[1].split("/", 1))
    if t is None:
        raise DocumentError(f"no McNemar test of {parts[0]!r} on {parts[1]!r} against {res.reference!r}")
    adjusted = any(t is x for x in res.tests)
    which = "p (Holm)" if adjusted else "p (single test, unadjusted)"
    return (f"difference {t.diff:+.3f}, {which} {fmt_p(t.p_holm)}, {t.verdict} "
            f"(TOST within +-{t.margin:g}{', Holm' if adjusted else ''}: p {fmt_p(t.p_tost_holm)})")


@STUDY.register("figure", "{{figure:NAME}}")
def _figure(ctx: StudyContext, args: str) -> Raw:
    paths = ctx.figures.get(args)
    if not paths:
        raise DocumentError(f"no figure {args!r} in this run; have {sorted(ctx.figures)}")
    return Raw(ctx.sink.figure(args, paths, ctx.res))


@STUDY.register("meta", "{{meta:KEY}}")
def _meta(ctx: StudyContext, args: str) -> str:
    if args not in ctx.res.meta:
        raise DocumentError(f"no run metadata {args!r}; have {sorted(ctx.res.meta)}")
    return str(ctx.res.meta[args])


STUDY.register("run_dir", "{{run_dir}}")(lambda ctx, args: ctx.run_dir)


def fill(template: str, res: StudyResults, run_dir: str, figure_dir: Path | None = None,
         figures: dict[str, list[Path]] | None = None, others: Mapping[str, StudyResults] | None = None,
         sink: Sink | None = None) -> str:
    """Replace every placeholder in ``template`` with the run's numbers (see the module docstring).
    ``others``: the loaded companion studies that ``{{from:STUDY:...}}`` placeholders read, by name;
    ``sink``: the output format (default Markdown, figures copied to ``figure_dir``)."""
    ctx = StudyContext(res, run_dir, sink if sink is not None else MarkdownSink(figure_dir), figures or {}, others or {})
    return STUDY.fill(template, ctx, ctx.write)


def load_companions(template: str, run_dir: str | Path,
                    runs: Mapping[str, str | Path] | None = None) -> dict[str, StudyResults]:
    """Load every study the template's ``{{from:STUDY:...}}`` placeholders read: from ``runs``
    (name -> run folder) or else the folder ``STUDY`` beside ``run_dir``. A missing folder or a
    folder holding another study is an error naming the study and the fix."""
    runs = dict(runs or {})
    out: dict[str, StudyResults] = {}
    for name in referenced_studies(template):
        where = Path(runs.get(name) or Path(run_dir).resolve().parent / name)
        if not (where / FILENAME).is_file():
            raise DocumentError(f"the template reads the stored study {name!r} ({{{{from:{name}:...}}}}) but {where} "
                                f"holds no run; pass its folder with --with {name}=RUN_DIR")
        other = load_results(where)
        if other.meta.get("name") != name:
            raise DocumentError(f"{where} holds the study {other.meta.get('name')!r}, not {name!r}; pass the right "
                                f"folder with --with {name}=RUN_DIR")
        out[name] = other
    unused = sorted(set(runs) - set(out))
    if unused:
        raise DocumentError(f"--with {', '.join(unused)}: the template has no {{{{from:NAME:...}}}} placeholder for "
                            f"{'it' if len(unused) == 1 else 'them'}; it reads {sorted(out) or 'no other study'}")
    return out


def shown_figures(template: str, res: StudyResults, run_dir: str | Path) -> dict[str, list[Path]]:
    """Draw the figures a template's ``{{figure:NAME}}`` placeholders show (only those), into the run's
    ``figures/`` folder: name -> [PNG, PDF]."""
    wanted = {args for kind, args in placeholders_in(template) if kind == "figure"}
    return all_figures(res, Path(run_dir) / "figures", wanted)


def write_document(run_dir: str | Path, template: str | Path, out: str | Path, reference: str | None = None,
                   runs: Mapping[str, str | Path] | None = None, results: StudyResults | None = None) -> Path:
    """Fill ``template`` from ``run_dir`` into ``out``; figures go to ``<out dir>/figures``.
    ``runs``: companion studies' run folders by study name (see ``{{from:STUDY:...}}``);
    ``results``: the run already loaded with :func:`load_results`."""
    res = results if results is not None else load_results(run_dir, reference)
    out = Path(out)
    text = Path(template).read_text()
    others = load_companions(text, run_dir, runs)
    figures = shown_figures(text, res, run_dir)
    text = fill(text, res, str(run_dir), out.parent / "figures", figures, others)
    out.parent.mkdir(parents=True, exist_ok=True)  # a write-up without figures creates no figure folder
    out.write_text(text)
    return out


__all__ = ["DocumentError", "MarkdownSink", "Sink", "fill", "shown_figures", "load_companions", "referenced_studies", "write_document"]
