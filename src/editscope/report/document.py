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
  neighbourhood, unpaired),
  ``{{table:margin}}``, ``{{table:identity}}``, ``{{table:pairwise}}``, ``{{table:seed38}}``,
  ``{{table:strength}}``: the attribution tables (see :mod:`editscope.report.attribution`);
* ``{{excess:METHOD:KIND[:CATEGORY]}}``: a method's excess of changed answers over its control
  (``placebo``, ``unrelated``, ``unrelated_other``) on a category (default all locality probes),
  ``+value [low, high]``; ``{{excess_verdict:METHOD:KIND[:CATEGORY]}}``: equivalent / different /
  inconclusive, with the bootstrap p-values; ``{{excess_rates:METHOD:KIND[:CATEGORY]}}``: ``method rate vs control
  rate (D draws)``; ``{{identity}}``: ``kept of n`` for the identity control;
  ``{{margin:METHOD:BIN}}``: answer-level locality in a base-margin bin (``<0.1``, ``0.1-1``,
  ``1-3``, ``>3``);
* ``{{strength:METHOD:LEVEL}}``: a swept method's answer-level locality interpolated at
  P(target) = LEVEL (see :mod:`editscope.report.strength`), ``value [low, high]`` or ``-`` where
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

An unknown placeholder, method or column is an error that names it.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .plots import all_figures
from ..stats import verdict
from .lifelong import lifelong_table
from .render import (anatomy_table_, base_answers_table, breakdown_table, collapse_tables, correlation_table,
    count_with_rate, criterion_table, detail_table, downstream_table, events_table, excess_table, fmt_cell, fmt_p,
    identity_table, knowedit_table, locality_status_table, main_table, margin_table, markdown_table, models_table,
    mquake_table, no_op_table, pairwise_table, seed38_table, strength_table, strength_units_table, Table,
    tests_table)
from .attribution import EXCESS_KINDS, MARGIN_BINS, excess, identity_exceptions, margin_locality
from ..metrics.edit_metrics import METRICS
from ..runner.store import FILENAME
from .results import LOCALITY, StudyResults, breakdown, load_results, paired_test, rate_cell
from ..errors import InputError
from .collapse import collapse_lines, collapse_points, collapse_table
from .strength import LEVELS, matched_strength
from .replication import COLUMNS, has_seed38, replication_rows, seed38_cells

_PLACEHOLDER = re.compile(r"\{\{([a-z][a-z0-9_]*)(?::([^}]*))?\}\}")


class DocumentError(InputError, ValueError):
    """A template placeholder that the run cannot fill."""


class Sink(Protocol):
    """How a filled placeholder is written in the document's format (Markdown here; LaTeX in
    :mod:`editscope.paper`): scalar text, tables and figures."""

    def text(self, s: str) -> str: ...

    def table(self, t: Table | None, res: StudyResults) -> str: ...

    def figure(self, name: str, paths: list[Path], res: StudyResults) -> str: ...


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


@dataclass
class _Tab:
    table: Table | None


@dataclass
class _Raw:
    text: str  # already written by the sink


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


COLLAPSE_FIELDS = ("units", "collapsed", "doubled", "median", "p90", "max", "base")
#: a sequential chain's collapse point (its first curve: the guard's when it ran)
POINT_FIELDS = ("steps", "final", "collapsed_at", "doubled_at")


def _collapse_value(res: StudyResults, args: str) -> str:
    """``{{collapse:METHOD:FIELD}}`` (the run's first perplexity corpus, its protocol's thresholds)."""

    method, _, field = args.partition(":")
    sequential = res.protocol == "sequential"
    fields = POINT_FIELDS + ("base",) if sequential else COLLAPSE_FIELDS
    if field not in fields:
        raise DocumentError(f"{{{{collapse:{args}}}}}: give {{{{collapse:METHOD:FIELD}}}} with FIELD one of "
                            f"{', '.join(fields)} ({'a sequential' if sequential else 'a single or batch'} run)")
    threshold, ratio = collapse_lines(res)
    if sequential:
        points = collapse_points(res, threshold, ratio)
        point = next((p for p in points if p.method == method), None)
        if point is None:
            raise DocumentError(f"{{{{collapse:{args}}}}}: no perplexity curve for {method!r}; have "
                                f"{sorted({p.method for p in points})}")
        if field in ("collapsed_at", "doubled_at"):
            at = getattr(point, field)
            return "never" if at is None else str(at)
        value = {"steps": point.steps, "final": point.final, "base": point.base}[field]
        return "-" if value is None else (str(value) if field == "steps" else f"{value:.2f}")
    rows = collapse_table(res, threshold, ratio)
    row = next((r for r in rows if r.method == method), None)
    if row is None:
        raise DocumentError(f"{{{{collapse:{args}}}}}: no collapse accounting for {method!r}; have "
                            f"{sorted({r.method for r in rows})} (single or batch units with perplexity)")
    if field == "units":
        return str(row.n)
    if field in ("collapsed", "doubled"):
        return count_with_rate(getattr(row, field), getattr(row, f"{field}_iv"))
    value = {"median": row.median, "p90": row.p90, "max": row.maximum, "base": row.base}[field]
    return "-" if value is None else f"{value:.2f}"


def _study_list(args: str) -> list[str]:
    """The study names of ``{{models:STUDY,STUDY,...}}``."""
    return [n.strip() for n in args.split(",") if n.strip()]


def referenced_studies(template: str) -> list[str]:
    """The other studies a template's ``{{from:STUDY:...}}`` and ``{{models:STUDY,...}}`` placeholders
    read, in order of first use."""
    names: list[str] = []
    for m in _PLACEHOLDER.finditer(template):
        if m.group(1) == "from":
            names.append((m.group(2) or "").split(":", 1)[0])
        elif m.group(1) == "models":
            names += _study_list(m.group(2) or "")
    return list(dict.fromkeys(names))


def fill(template: str, res: StudyResults, run_dir: str, figure_dir: Path | None = None,
         figures: dict[str, list[Path]] | None = None, others: Mapping[str, StudyResults] | None = None,
         sink: Sink | None = None) -> str:
    """Replace every placeholder in ``template`` with the run's numbers (see the module docstring).
    ``others``: the loaded companion studies that ``{{from:STUDY:...}}`` placeholders read, by name;
    ``sink``: the output format (default Markdown, figures copied to ``figure_dir``)."""
    sink = sink if sink is not None else MarkdownSink(figure_dir)

    def one(m: re.Match) -> str | _Tab | _Raw:
        kind, args = m.group(1), (m.group(2) or "")
        if kind == "from":
            study, _, inner = args.partition(":")
            if not inner:
                raise DocumentError(f"{{{{from:{args}}}}}: write {{{{from:STUDY:PLACEHOLDER}}}}, e.g. "
                                    "{{from:two-plus-two-controls:identity}}")
            if study not in (others or {}):
                raise DocumentError(f"{{{{from:{args}}}}}: no stored study {study!r} was given; have "
                                    f"{sorted(others or {})} (editscope report --with {study}=RUN_DIR)")
            ikind, _, name = inner.partition(":")
            if ikind == "from":
                raise DocumentError(f"{{{{from:{args}}}}}: a from placeholder cannot nest another")
            if ikind == "figure":  # drawn into the companion's own run folder, named after it when copied
                other = others[study]
                paths = all_figures(other, Path(other.run_dir) / "figures", {name}).get(name)
                if not paths:
                    raise DocumentError(f"{{{{from:{args}}}}}: the stored study {study!r} has no figure {name!r}; "
                                        f"it has {sorted(all_figures(other, Path(other.run_dir) / 'figures'))}")
                return _Raw(sink.figure(name, paths, other))
            try:
                return _Raw(fill("{{" + inner + "}}", others[study], str(others[study].run_dir), sink=sink))
            except DocumentError as e:
                raise DocumentError(f"from the stored study {study!r}: {e}") from None
        if kind == "models":
            names = _study_list(args)
            if len(names) < 2:
                raise DocumentError(f"{{{{models:{args}}}}}: write {{{{models:STUDY,STUDY[,...]}}}} with the same "
                                    "study run on two or more models (editscope run CONFIG --model NAME)")
            missing = [n for n in names if n not in (others or {})]
            if missing:
                raise DocumentError(f"{{{{models:{args}}}}}: no stored study {missing[0]!r} was given; have {sorted(others or {})}")
            try:
                return _Tab(models_table([others[n] for n in names]))  # type: ignore[index]
            except ValueError as e:
                raise DocumentError(f"{{{{models:{args}}}}}: {e}") from None
        parts = args.split(":", 1) if kind in ("cell", "value", "n", "test") else [args]
        if kind == "table":
            makers = {"main": main_table, "criterion": criterion_table, "mcnemar": tests_table,
                      "downstream": downstream_table, "events": events_table, "detail": detail_table,
                      "margin": margin_table, "identity": identity_table, "pairwise": pairwise_table,
                      "seed38": seed38_table, "strength": strength_table,
                      "anatomy": anatomy_table_, "ppl-downstream": correlation_table,
                      "knowedit": knowedit_table, "mquake": mquake_table, "base-answers": base_answers_table,
                      "locality-by-answer": locality_status_table, "no-op": no_op_table,
                      "strength-units": strength_units_table, "lifelong": lifelong_table,
                      **{name: (lambda r, name=name: _named(collapse_tables(r), name))
                         for name in ("collapse", "collapse-worst", "collapse-points")},
                      **{f"excess-{k}": (lambda r, k=k: excess_table(r, k)) for k in EXCESS_KINDS}}
            if args not in makers:
                raise DocumentError(f"unknown table {args!r}; use {', '.join(makers)}")
            return _Tab(makers[args](res))  # None (nothing to show in this run) fills as nothing
        if kind == "collapse":
            return _collapse_value(res, args)
        if kind == "slice":
            bits = args.split(":", 3)
            if len(bits) != 4:
                raise DocumentError(f"{{{{slice:{args}}}}}: write {{{{slice:METHOD:CATEGORY:META_KEY:VALUE}}}}")
            method, cat, key, value = bits
            if method != "base" and method not in res.methods:
                raise DocumentError(f"{{{{slice:{args}}}}}: no method {method!r} in this run")
            c = rate_cell(res, method, cat, where={key: value})
            if c is None:  # the whole breakdown only when this method has no such probe
                have = breakdown(res, cat, key)
                if value not in have:
                    raise DocumentError(f"{{{{slice:{args}}}}}: no {cat!r} probe has {key}={value!r}; have {sorted(have)}")
            return fmt_cell(c)
        if kind in ("where", "rate"):
            bits = args.split(":")
            if kind == "rate":  # the same without conditions
                if len(bits) not in (2, 3):
                    raise DocumentError(f"{{{{rate:{args}}}}}: write {{{{rate:METHOD:CATEGORY[:METRIC]}}}}")
                bits.insert(2, "")
            elif len(bits) not in (3, 4) or not all("=" in c for c in bits[2].split(",")):
                raise DocumentError(f"{{{{where:{args}}}}}: write {{{{where:METHOD:CATEGORY:KEY=VALUE[,KEY=VALUE...][:METRIC]}}}}")
            method, cat, conds = bits[:3]
            if method != "base" and method not in res.methods:
                raise DocumentError(f"{{{{{kind}:{args}}}}}: no method {method!r} in this run")
            where = dict(c.split("=", 1) for c in conds.split(",")) if conds else None
            try:
                c = rate_cell(res, method, cat, bits[3] if len(bits) == 4 else None, where)
            except KeyError as e:
                raise DocumentError(f"{{{{{kind}:{args}}}}}: {e}") from None
            if c is None:
                raise DocumentError(f"{{{{{kind}:{args}}}}}: no {cat!r} probe of {method!r} matches {where or 'any'}")
            return f"{fmt_cell(c)} (n={c.n})"
        if kind in ("excess", "excess_rates", "excess_verdict"):
            bits = args.split(":")
            if len(bits) not in (2, 3) or bits[1] not in EXCESS_KINDS:
                raise DocumentError(f"{{{{{kind}:{args}}}}}: write {{{{{kind}:METHOD:KIND[:CATEGORY]}}}} with KIND one "
                                    f"of {', '.join(EXCESS_KINDS)}")
            if bits[0] not in res.methods:
                raise DocumentError(f"{{{{{kind}:{args}}}}}: no method {bits[0]!r} in this run")
            e = excess(res, bits[0], bits[1], bits[2] if len(bits) == 3 else LOCALITY)
            if e is None:
                raise DocumentError(f"{{{{{kind}:{args}}}}}: {bits[0]!r} has no {bits[1]} control with paired probes")
            if kind == "excess":
                return f"{e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}]"
            if kind == "excess_verdict":
                return (f"{verdict(e.pvalue, e.p_equivalence)} (bootstrap p {fmt_p(e.pvalue)}; equivalence within "
                        f"+-{e.margin:g}: p {fmt_p(e.p_equivalence)}; one test, unadjusted)")
            return f"{e.method_rate:.3f} vs {e.control_rate:.3f} ({e.draws} draw{'s' if e.draws != 1 else ''})"
        if kind == "identity":
            bad, n, _ = identity_exceptions(res)
            if n == 0:
                raise DocumentError("{{identity}}: this run has no identity control")
            return f"{n - bad} of {n}"
        if kind == "margin":
            bits = args.split(":")
            bins = [b for b, _, _ in MARGIN_BINS]
            if len(bits) != 2 or bits[1] not in bins:
                raise DocumentError(f"{{{{margin:{args}}}}}: write {{{{margin:METHOD:BIN}}}} with BIN one of {bins}")
            if bits[0] != "base" and bits[0] not in res.methods:
                raise DocumentError(f"{{{{margin:{args}}}}}: no method {bits[0]!r} in this run")
            c = margin_locality(res, bits[0]).get(bits[1])
            return f"{fmt_cell(c)} (n={c.n})" if c is not None else "-"
        if kind == "strength":
            bits = args.split(":")
            per = matched_strength(res)
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
        if kind == "seed38":
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
        if kind == "breakdown":
            bits = args.split(":")
            if len(bits) not in (2, 3):
                raise DocumentError(f"{{{{breakdown:{args}}}}}: write {{{{breakdown:CATEGORY:META_KEY[:METRIC]}}}}")
            try:
                return _Tab(breakdown_table(res, *bits))
            except (KeyError, ValueError) as e:
                raise DocumentError(f"{{{{breakdown:{args}}}}}: {e}") from None
        if kind in ("cell", "value", "n"):
            if len(parts) != 2:
                raise DocumentError(f"{{{{{kind}:{args}}}}}: write {{{{{kind}:METHOD:COLUMN}}}}")
            c = _column(res, *parts)
            if c is None:
                return "-"
            return fmt_cell(c) if kind == "cell" else (str(c.n) if kind == "n" else fmt_cell(c).split(" [")[0])
        if kind == "test":
            if len(parts) != 2:
                raise DocumentError(f"{{{{test:{args}}}}}: write {{{{test:METHOD:COLUMN}}}}")
            t = next((t for t in res.tests if t.method == parts[0] and t.column == parts[1]), None)
            if t is None and res.reference is not None and "/" in parts[1] and parts[0] in res.methods:
                t = paired_test(res, parts[0], res.reference, *parts[1].split("/", 1))
            if t is None:
                raise DocumentError(f"no McNemar test of {parts[0]!r} on {parts[1]!r} against {res.reference!r}")
            adjusted = any(t is x for x in res.tests)
            which = "p (Holm)" if adjusted else "p (single test, unadjusted)"
            return (f"difference {t.diff:+.3f}, {which} {fmt_p(t.p_holm)}, {t.verdict} "
                    f"(TOST within +-{t.margin:g}{', Holm' if adjusted else ''}: p {fmt_p(t.p_tost_holm)})")
        if kind == "figure":
            paths = (figures or {}).get(args)
            if not paths:
                raise DocumentError(f"no figure {args!r} in this run; have {sorted(figures or {})}")
            return _Raw(sink.figure(args, paths, res))
        if kind == "meta":
            if args not in res.meta:
                raise DocumentError(f"no run metadata {args!r}; have {sorted(res.meta)}")
            return str(res.meta[args])
        if kind == "run_dir":
            return run_dir
        raise DocumentError(f"unknown placeholder {m.group(0)!r}")

    def written(m: re.Match) -> str:
        out = one(m)
        if isinstance(out, _Tab):
            return sink.table(out.table, res)
        return out.text if isinstance(out, _Raw) else sink.text(out)

    return _PLACEHOLDER.sub(written, template)


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
    wanted = {m.group(2) for m in _PLACEHOLDER.finditer(template) if m.group(1) == "figure"}
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
