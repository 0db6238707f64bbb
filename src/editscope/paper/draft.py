r"""A paper draft from a stored study: LaTeX section templates with the write-ups' placeholders
(:mod:`editscope.report.documents.document`), filled from the results store into the layout of
``../shared/reference/paper-brief.md``::

    OUT/main.tex            preamble, title, \input of every section, bibliography, appendix
    OUT/references.bib      every method, dataset, model, tool and statistic the study used + cited
    OUT/sections/           abstract introduction related_work methodology results discussion conclusion
    OUT/tables/             one file per table (booktabs); long ones go to the appendix
    OUT/figures/            PDF (for LaTeX) and PNG (for the web) of every figure the text shows
    OUT/appendix/           the template's own appendix sections, then the full tables (detail,
                            McNemar, breakdowns, moved long tables), the study config, the environment
    OUT/commands/           math.tex, general.tex, macros.tex

A template folder holds ``sections/<name>.tex`` for the seven sections (required; each starts with
its ``\section``, the abstract with ``\begin{abstract}``) and optionally ``title.tex`` (``\title``
and ``\author``), ``appendix/*.tex``, ``macros.tex`` (extra project macros), ``references.bib``
(extra entries) and ``neurips_2025.sty``. Without the official style (in the template or the output
folder) the draft uses editscope's look-alike ``esneurips.sty`` and says so in ``paper.log``.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from ..report.documents.document import DocumentError, fill, load_companions, shown_figures
from ..report.formats.render import breakdown_table, tables
from ..report.data.results import StudyResults, is_locality, load_results
from ..report.formats.table import Table
from ..report.formats.tex import table_float, tex_escape
from .bibliography import ENTRIES, bib_keys, bibliography, cited_keys, study_keys
from .commands import GENERAL, MATH, project_macros

SECTIONS = ("abstract", "introduction", "related_work", "methodology", "results", "discussion", "conclusion")
OFFICIAL_STYLE = "neurips_2025"
FALLBACK_STYLE = "esneurips"
MARKER = ".editscope-paper"   # an output folder editscope wrote (re-rendered in place)
LONG_ROWS = 24                # a table with more rows leaves the text for the appendix
CHUNK_ROWS = 30               # rows per appendix float (a longer table continues in the next)
GENERATED = ("sections", "tables", "figures", "appendix", "commands")


class PaperError(DocumentError):
    """A template folder, placeholder or output folder the paper cannot be written from."""


@dataclass
class PaperDraft:
    """A written draft: its folder, main.tex, the style used and what the log says."""

    out: Path
    main: Path
    style: str
    notes: list[str] = field(default_factory=list)
    moved_tables: list[str] = field(default_factory=list)


class LatexSink:
    r"""Writes filled placeholders as LaTeX: text escaped, each table to ``tables/<stem>.tex``
    (``\input`` in the text; longer than :data:`LONG_ROWS` rows: sent to the appendix with a
    reference left in the text), figures copied to ``figures/`` (the placeholder gives the path for
    ``\includegraphics``, so the template writes the caption that states the observation)."""

    def __init__(self, out: Path, study: str):
        self.out, self.study = out, study
        self.placed: set[str] = set()                  # own-study table names shown in the text
        self.moved: dict[str, Table] = {}              # stem -> long table for the appendix

    def _stem(self, t: Table, res: StudyResults) -> str:
        name = str(res.meta.get("name"))
        return t.name if name == self.study else f"{name}-{t.name}"

    def text(self, s: str) -> str:
        return tex_escape(s)

    def table(self, t: Table | None, res: StudyResults) -> str:
        if t is None:
            return r"\emph{(none)}"
        stem = self._stem(t, res)
        if res.meta.get("name") == self.study:
            self.placed.add(t.name)
        if len(t.rows) > LONG_ROWS:
            self.moved[stem] = t
            return rf"The full table is \tabref{{tab:{stem}}} in \appref{{app:tables}}."
        (self.out / "tables" / f"{stem}.tex").write_text(table_float(t, f"tab:{stem}"))
        return rf"\input{{tables/{stem}}}"

    def figure(self, name: str, paths: list[Path], res: StudyResults) -> str:
        stem = f"{res.meta.get('name', 'run')}_{name}"
        for p in paths:
            shutil.copy(p, self.out / "figures" / f"{stem}{p.suffix}")
        return f"figures/{stem}"


def _chunks(t: Table, size: int = CHUNK_ROWS) -> list[list[list[tuple[str, bool]]]]:
    return [t.rows[i:i + size] for i in range(0, len(t.rows), size)] or [[]]


def _appendix_table(out: Path, stem: str, t: Table) -> list[str]:
    """Write a table for the appendix, split into floats of :data:`CHUNK_ROWS` rows; the inputs."""
    inputs = []
    for i, rows in enumerate(_chunks(t)):
        name = stem if i == 0 else f"{stem}-{i + 1}"
        cap = t.caption if i == 0 else f"{t.caption} (continued, part {i + 1})"
        (out / "tables" / f"{name}.tex").write_text(table_float(t, f"tab:{name}", caption=cap, rows=rows, placement="p"
                                                                if len(rows) > LONG_ROWS else "h!"))
        inputs.append(rf"\input{{tables/{name}}}")
    return inputs


def breakdown_keys(res: StudyResults, most: int = 12) -> list[tuple[str, str]]:
    """(category, meta key) pairs worth a breakdown table: locality categories whose probes carry
    a scalar meta field with 2..``most`` distinct values (e.g. ``locality:op``, ``near:relation``)."""
    values: dict[tuple[str, str], set[str]] = {}
    for r in res.final_rows("base"):
        cat = r["category"]
        if not is_locality(cat):
            continue
        for k, v in (r.get("meta") or {}).items():
            if isinstance(v, (str, int, bool)) and not isinstance(v, float):
                for key in ((cat, k), ("locality", k)):
                    values.setdefault(key, set()).add(str(v))
    # a key on several categories: its pooled breakdown over all locality probes only
    cats: dict[str, set[str]] = {}
    for cat, k in values:
        if cat != "locality":
            cats.setdefault(k, set()).add(cat)
    out = [(cat, k) for (cat, k), vs in values.items() if 2 <= len(vs) <= most
           and (cat == "locality") == (len(cats.get(k, ())) > 1)]
    return sorted(out, key=lambda ck: (ck[0] != "locality", ck))


def _appendix_tables(out: Path, res: StudyResults, sink: LatexSink) -> tuple[str, list[str]]:
    """appendix/tables.tex: the long tables moved out of the text, then every report table the text
    did not show (detail, McNemar, ...), then the breakdowns; returns the text and the moved stems."""
    parts = [r"\section{Full tables}", r"\label{app:tables}",
             "Every table below is filled from the stored run; intervals are 95\\%.", ""]
    count = 0
    listed: list[tuple[str, Table]] = list(sink.moved.items())
    listed += [(t.name, t) for t in tables(res) if t.name not in sink.placed and t.name not in sink.moved]
    for cat, key in breakdown_keys(res):
        name = f"breakdown-{cat}-{re.sub(r'[^A-Za-z0-9]+', '-', key)}"
        if name not in sink.placed:
            try:
                listed.append((name, breakdown_table(res, cat, key)))
            except (KeyError, ValueError):
                continue
    for stem, t in listed:
        t = Table(stem, t.caption, t.header, t.rows, t.groups, t.sub)
        parts += _appendix_table(out, stem, t)
        count += 1
        if count % 3 == 0 or len(t.rows) > LONG_ROWS:
            parts.append(r"\clearpage")
    return "\n".join(parts) + "\n", list(sink.moved)


def _wrap(line: str, width: int = 88) -> list[str]:
    out = []
    while len(line) > width:
        out.append(line[:width])
        line = "    " + line[width:]
    return [*out, line]


def _config_appendix(res: StudyResults) -> str:
    text = yaml.safe_dump(res.config, sort_keys=False, allow_unicode=True, width=80)
    lines = [w for ln in text.splitlines() for w in _wrap(ln)]
    return "\n".join([r"\section{Study configuration}", r"\label{app:config}",
                      rf"The study as stored with its results (config hash \texttt{{{tex_escape(str(res.meta.get('config_hash')))}}}); "
                      "running it again with \\texttt{editscope run} reproduces every number.", "",
                      r"{\scriptsize", r"\begin{verbatim}", *lines, r"\end{verbatim}", "}", ""])


ENV_KEYS = (("name", "study"), ("config_hash", "config hash"), ("model_name", "model"),
            ("model_fingerprint", "base weights fingerprint"), ("seed", "seed"), ("editscope_version", "editscope"),
            ("torch_version", "torch"), ("transformers_version", "transformers"), ("python_version", "python"),
            ("platform", "platform"), ("device", "device"), ("dtype", "dtype"), ("threads", "threads"),
            ("created", "run created"), ("finished", "run finished"), ("status", "status"))


def _environment_appendix(res: StudyResults) -> str:
    rows = []
    for key, label in ENV_KEYS:
        if key in res.meta and res.meta[key] not in (None, ""):
            v = str(res.meta[key])
            v = v if len(v) <= 64 else v[:64] + "..."
            rows.append(rf"{label} & \texttt{{{tex_escape(v)}}} \\")
    rows.append(rf"units stored & {len(res.units)} \\")
    return "\n".join([r"\section{Environment}", r"\label{app:environment}",
                      "The software and run metadata stored with the results.", "", r"\begin{center}", r"\small",
                      r"\begin{tabular}{@{}ll@{}}", r"\toprule", *rows, r"\bottomrule", r"\end{tabular}",
                      r"\end{center}", ""])


def _check_templates(template: Path) -> dict[str, str]:
    if not template.is_dir():
        raise PaperError(f"--template {template}: no such folder; it must hold sections/<name>.tex for "
                         f"{', '.join(SECTIONS)} (see docs/papers/two-plus-two/ for an example)")
    missing = [f"sections/{s}.tex" for s in SECTIONS if not (template / "sections" / f"{s}.tex").is_file()]
    if missing:
        raise PaperError(f"--template {template}: missing {', '.join(missing)}; a template holds one file per section "
                         f"({', '.join(SECTIONS)})")
    texts = {s: (template / "sections" / f"{s}.tex").read_text() for s in SECTIONS}
    for s, text in texts.items():
        body = "\n".join(ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("%"))
        want = r"\begin{abstract}" if s == "abstract" else r"\section"
        if not body.lstrip().startswith(want):
            raise PaperError(f"{template / 'sections' / (s + '.tex')}: must start with {want} (comments aside)")
    return texts


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists() and not force:
        raise PaperError(f"--out {out}: the folder exists and was not written by `editscope paper`; choose an empty "
                         "or new folder, or pass --force to write into it")
    out.mkdir(parents=True, exist_ok=True)
    for d in GENERATED:
        shutil.rmtree(out / d, ignore_errors=True)
        (out / d).mkdir()
    (out / MARKER).write_text("written by editscope paper; re-rendered in place\n")


def _style(template: Path, out: Path, notes: list[str]) -> str:
    official = f"{OFFICIAL_STYLE}.sty"
    if (template / official).is_file():
        shutil.copy(template / official, out / official)
        notes.append(f"style: {official} from the template folder")
        return OFFICIAL_STYLE
    if (out / official).is_file():
        notes.append(f"style: {official} from the output folder")
        return OFFICIAL_STYLE
    (out / f"{FALLBACK_STYLE}.sty").write_text(
        (resources.files("editscope.paper") / "style" / f"{FALLBACK_STYLE}.sty").read_text())
    notes.append(f"style: {official} not found in the template or output folder; using editscope's look-alike "
                 f"{FALLBACK_STYLE}.sty (put {official} in either folder to use the conference style)")
    return FALLBACK_STYLE


def _main_tex(style: str, user_appendix: list[str], partial: str | None, nocite: list[str]) -> str:
    lines = [r"\documentclass{article}", rf"\usepackage[final]{{{style}}}", r"\usepackage[hidelinks]{hyperref}",
             r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\usepackage{amsmath,amssymb}",
             r"\input{commands/math}", r"\input{commands/general}", r"\input{commands/macros}", r"\input{title}", "",
             r"\begin{document}", r"\maketitle"]
    if partial:
        lines += [r"\begin{center}", rf"\fbox{{\parbox{{0.9\linewidth}}{{\textbf{{Partial run.}} {partial}}}}}",
                  r"\end{center}"]
    lines += [rf"\input{{sections/{s}}}" for s in SECTIONS]
    lines += ["", rf"\nocite{{{','.join(nocite)}}}" if nocite else "", r"\bibliographystyle{plainnat}",
              r"\bibliography{references}", "", r"\clearpage", r"\appendix"]
    lines += [rf"\input{{appendix/{a}}}" for a in user_appendix]
    lines += [r"\input{appendix/tables}", r"\input{appendix/config}", r"\input{appendix/environment}",
              r"\end{document}", ""]
    return "\n".join(lines)


def write_paper(run_dir: str | Path, template: str | Path, out: str | Path, *, reference: str | None = None,
                runs: dict[str, str | Path] | None = None, force: bool = False,
                results: StudyResults | None = None) -> PaperDraft:
    """Render the paper draft of ``run_dir`` from the section templates in ``template`` into ``out``
    (see the module docstring). ``runs``: companion studies' run folders by name for
    ``{{from:STUDY:...}}`` (default: beside ``run_dir``). Raises :class:`PaperError` for a template
    folder missing a section, a placeholder the run cannot fill (naming the file), a citation with
    no entry, or an output folder that editscope did not write (unless ``force``)."""
    template, out = Path(template), Path(out)
    texts = _check_templates(template)
    title_tpl = (template / "title.tex").read_text() if (template / "title.tex").is_file() else None
    appendix_tpl = {p.stem: p.read_text() for p in sorted((template / "appendix").glob("*.tex"))} \
        if (template / "appendix").is_dir() else {}
    clash = sorted(set(appendix_tpl) & {"tables", "config", "environment"})
    if clash:
        raise PaperError(f"{template / 'appendix'}: {', '.join(c + '.tex' for c in clash)} would overwrite the generated "
                         "appendix; rename it")
    res = results if results is not None else load_results(run_dir, reference)
    everything = "\n".join([*texts.values(), title_tpl or "", *appendix_tpl.values()])
    others = load_companions(everything, run_dir, runs)
    _prepare_out(out, force)
    notes: list[str] = []
    style = _style(template, out, notes)
    study = str(res.meta.get("name"))
    sink = LatexSink(out, study)
    figures = shown_figures(everything, res, run_dir)

    def filled(where: str, text: str) -> str:
        try:
            return fill(text, res, str(run_dir), figures=figures, others=others, sink=sink)
        except DocumentError as e:
            raise PaperError(f"{where}: {e}") from None

    written: dict[str, str] = {}
    for s, text in texts.items():
        written[f"sections/{s}.tex"] = filled(str(template / "sections" / f"{s}.tex"), text)
    for name, text in appendix_tpl.items():
        written[f"appendix/{name}.tex"] = filled(str(template / "appendix" / f"{name}.tex"), text)
    title = filled(str(template / "title.tex"), title_tpl) if title_tpl else \
        rf"\title{{{tex_escape(study)}: what else did the edit change?}}" + "\n"
    if r"\title" not in title:
        raise PaperError(f"{template / 'title.tex'}: has no \\title{{...}}")
    written["title.tex"] = title
    app_tables, moved = _appendix_tables(out, res, sink)
    written["appendix/tables.tex"] = app_tables
    written["appendix/config.tex"] = _config_appendix(res)
    written["appendix/environment.tex"] = _environment_appendix(res)
    # the bibliography: everything the study used, plus what the text cites
    extra_bib = (template / "references.bib").read_text() if (template / "references.bib").is_file() else ""
    used = study_keys(res)
    for o in others.values():
        used += [k for k in study_keys(o) if k not in used]
    cited = cited_keys("\n".join(written.values()))
    unknown = [k for k in cited if k not in ENTRIES and k not in bib_keys(extra_bib)]
    if unknown:
        where = next(f for f, t in written.items() if any(k in cited_keys(t) for k in unknown))
        raise PaperError(f"{where}: cites {', '.join(unknown)} with no BibTeX entry; add them to "
                         f"{template / 'references.bib'} (editscope knows {len(ENTRIES)} keys, e.g. meng2022locating)")
    written["references.bib"] = bibliography([*cited, *used], extra_bib)
    written["commands/math.tex"] = MATH
    written["commands/general.tex"] = GENERAL
    methods = list(dict.fromkeys([*res.methods, *(m for o in others.values() for m in o.methods)]))
    written["commands/macros.tex"] = project_macros(methods, (template / "macros.tex").read_text()
                                                    if (template / "macros.tex").is_file() else "")
    partial = None
    if res.partial:
        partial = tex_escape(f"{len(res.units)} units stored, run status '{res.meta.get('status')}'; every number "
                             "covers only the completed units (editscope run ... --resume continues it).")
        notes.append("the run is partial: the title page says so")
    written["main.tex"] = _main_tex(style, list(appendix_tpl), partial, used)
    for rel, text in written.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    if moved:
        notes.append(f"tables longer than {LONG_ROWS} rows moved to the appendix: {', '.join(moved)}")
    (out / "paper.log").write_text("\n".join(notes) + "\n")
    return PaperDraft(out, out / "main.tex", style, notes, moved)


__all__ = ["LONG_ROWS", "PaperDraft", "PaperError", "SECTIONS", "write_paper"]
