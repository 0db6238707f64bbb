"""`editscope paper`: LaTeX section templates filled from a stored study into the paper brief's
layout, the bibliography, the style fallback, and the build (pdflatex + bibtex), on a tiny study."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from editscope.paper import PaperBuildError, PaperError, compile_paper, write_paper
from editscope.paper.draft import SECTIONS
from editscope.report.data.results import load_results
from editscope.report.formats.table import Table
from editscope.report.formats.tex import table_float, tex_escape
from editscope.runner import ResultsStore, parse_config, run_study

pytestmark = pytest.mark.usefixtures("tmp_cache")

EDITS = [{"prompt": f"{a}+{b}=", "target_new": str(a + b + 1), "subject": f"{a}+{b}"} for a, b in [(2, 2), (3, 1), (1, 2)]]


def _need_latex() -> None:
    if shutil.which("pdflatex") is None or shutil.which("bibtex") is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex/bibtex missing in CI (.ci/run installs texlive-latex-recommended)")
        pytest.skip("pdflatex not installed")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    os.environ["EDITSCOPE_CACHE"] = str(root / "cache")
    cfg = {"name": "tiny", "model": "tiny:llama", "seed": 0, "reference": "ft-m",
           "methods": ["ft-m", {"method": "ft-m", "label": "ft-m-strong", "hparams": {"lr": 0.05, "steps": 30}}],
           "edits": EDITS, "probes": [{"suite": "arithmetic", "args": {"n": 3}}],
           "perplexity": {"corpus": "me_ppl_50", "limit": 5}, "downstream": [{"task": "piqa", "limit": 4}]}
    return run_study(parse_config(cfg), root / "runs" / "tiny", progress=False)


def _template(root: Path, results: str | None = None, **overrides: str) -> Path:
    """A template folder: one short section per name, the results section given, ``overrides``
    replacing any section."""
    (root / "sections").mkdir(parents=True, exist_ok=True)
    for s in SECTIONS:
        if s == "abstract":
            text = "% the abstract\n\\begin{abstract}\nWe edit with \\ftm: efficacy {{cell:ft-m:target/top1}}.\n\\end{abstract}\n"
        elif s == "results":
            text = results or "\\section{Results}\\label{sec:results}\n{{table:main}}\n"
        else:
            text = f"\\section{{{s.replace('_', ' ').title()}}}\\label{{sec:{s}}}\nSee \\secref{{sec:results}} and \\citet{{meng2022locating}}.\n"
        (root / "sections" / f"{s}.tex").write_text(overrides.get(s, text))
    return root


RESULTS = r"""\section{Results}\label{sec:results}
{\bf Does the strong setting help?} Efficacy {{cell:ft-m-strong:target/top1}} (n={{n:ft-m-strong:target/top1}}),
far {{value:ft-m:far/answer_unchanged}}; {{test:ft-m-strong:far/answer_unchanged}};
where {{where:ft-m:locality:op=+}}; rate {{rate:ft-m:far:answer_unchanged}}; slice {{slice:ft-m:locality:op:+}};
companion {{from:tiny-copy:cell:ft-m:far/answer_unchanged}}; run {{meta:name}} at \texttt{{{run_dir}}}.

{{table:main}}

{{breakdown:locality:op}}

{{models:tiny,tiny-other}}

{{table:detail}}

\begin{figure}[t]
\centering
\includegraphics[width=0.6\linewidth,height=0.3\textheight,keepaspectratio]{{{figure:frontier}}}
\caption{Efficacy against locality: the strong setting trades locality for efficacy.}
\label{fig:frontier}
\end{figure}
\Figref{fig:frontier} shows the trade-off.
"""


@pytest.fixture(scope="module")
def companions(tiny_run):
    """The tiny run beside two copies: the same study under another name and on another model."""
    runs = tiny_run.parent
    for name, meta in (("tiny-copy", {"name": "tiny-copy"}), ("tiny-other", {"name": "tiny-other", "model_name": "tiny:gpt2"})):
        if not (runs / name).exists():
            shutil.copytree(tiny_run, runs / name)
            s = ResultsStore(runs / name / "results.sqlite")
            s.set_meta(**meta)
            s.close()
    return runs


def test_every_placeholder_kind_fills_as_latex_into_the_brief_layout(tiny_run, companions, tmp_path, monkeypatch):
    import editscope.paper.draft as draft

    monkeypatch.setattr(draft, "LONG_ROWS", 6)  # the detail table (3 methods x categories) leaves the text
    out = tmp_path / "paper_draft"
    d = write_paper(tiny_run, _template(tmp_path / "tpl", RESULTS), out)
    for rel in ["main.tex", "references.bib", "title.tex", "esneurips.sty", "commands/math.tex", "commands/general.tex",
                "commands/macros.tex", "appendix/tables.tex", "appendix/config.tex", "appendix/environment.tex",
                "tables/main.tex", "figures/tiny_frontier.pdf", "figures/tiny_frontier.png",
                *(f"sections/{s}.tex" for s in SECTIONS)]:
        assert (out / rel).is_file(), rel
    main = (out / "main.tex").read_text()
    order = [r"\documentclass{article}", r"\usepackage[final]{esneurips}", r"\usepackage[hidelinks]{hyperref}",
             r"\usepackage{booktabs}", r"\usepackage{graphicx}", r"\usepackage{amsmath,amssymb}", r"\input{commands/math}",
             r"\input{commands/general}", r"\input{commands/macros}", r"\begin{document}",
             *(rf"\input{{sections/{s}}}" for s in SECTIONS), r"\bibliographystyle{plainnat}", r"\bibliography{references}",
             r"\appendix", r"\input{appendix/tables}"]
    pos = [main.index(x) for x in order]
    assert pos == sorted(pos)
    res = load_results(tiny_run)
    from editscope.report.formats.table import fmt_cell
    from editscope.report.data.results import rate_cell

    text = (out / "sections" / "results.tex").read_text()
    assert "{{" not in text
    far = rate_cell(res, "ft-m", "far", "answer_unchanged")
    assert f"far {far.value:.3f};" in text and f"rate {fmt_cell(far)} (n={far.n});" in text
    assert f"companion {fmt_cell(far)}; run tiny at" in text
    assert re.search(r"difference [-+][\d.]+, p \(Holm\) [\d.e-]+, (equivalent|different|inconclusive)[^;]*\(TOST within \+-0.02, Holm: p [\d.e-]+\);", text)
    assert r"\input{tables/main}" in text and r"\input{tables/breakdown-locality-op}" in text
    assert r"\input{tables/tiny-other-models}" not in text and r"\input{tables/models}" in text
    assert r"The full table is \tabref{tab:detail} in \appref{app:tables}." in text and "detail" in d.moved_tables
    assert r"\includegraphics[width=0.6\linewidth,height=0.3\textheight,keepaspectratio]{figures/tiny_frontier}" in text
    assert rf"\texttt{{{tex_escape(str(tiny_run))}}}" in text  # run_dir escaped
    table = (out / "tables" / "main.tex").read_text()
    assert r"\begin{tabular}{@{}l" in table and table.count("@{}") >= 2 and "|" not in table.split(r"\begin{tabular}")[1].split("\n")[0]
    assert r"\toprule" in table and r"\bottomrule" in table and r"\textsc{method}" in table and r"{\bf " in table
    assert r"\cmidrule(lr){2-3}" in table and r"\multicolumn{2}{c}{\textsc{efficacy (answer\_hit)}}" in table
    models = (out / "tables" / "models.tex").read_text()
    for model in (res.meta["model_name"], "tiny:gpt2"):
        assert r"\multicolumn{4}{c}{\textsc{" + model + "}}" in models
    appendix = (out / "appendix" / "tables.tex").read_text()
    assert r"\label{app:tables}" in appendix and r"\input{tables/detail}" in appendix and r"\input{tables/mcnemar}" in appendix
    assert r"\input{tables/breakdown-locality-op}" not in appendix  # shown in the text already
    assert "name: tiny" in (out / "appendix" / "config.tex").read_text()
    env = (out / "appendix" / "environment.tex").read_text()
    assert res.meta["config_hash"] in env and "torch" in env
    bib = (out / "references.bib").read_text()
    for key in ("zhang2024comprehensive", "bisk2020piqa", "yang2024butterfly", "gao2023harness", "wolf2020transformers",
                "meng2022locating", "mcnemar1947note"):
        assert f"{{{key}," in bib, key
    assert bib.count("@inproceedings{meng2022locating,") == 1
    macros = (out / "commands" / "macros.tex").read_text()
    assert r"\newcommand{\ftm}{\textsc{ft-m}\xspace}" in macros and r"\newcommand{\ftmstrong}" in macros
    assert r"\newcommand{\counterfact}{\textsc{CounterFact}\xspace}" in macros
    math = (out / "commands" / "math.tex").read_text()
    assert r"\newcommand{\figref}[1]{figure~\ref{#1}}" in math and r"\newcommand{\Figref}[1]{Figure~\ref{#1}}" in math
    general = (out / "commands" / "general.tex").read_text()
    assert r"\newcommand{\para}" in general and r"\newcommand{\increase}" in general and r"\newcommand{\decrease}" in general
    assert d.style == "esneurips" and "using editscope's look-alike esneurips.sty" in (out / "paper.log").read_text()
    _need_latex()
    built = compile_paper(d.main)
    assert built.pdf.read_bytes()[:4] == b"%PDF"
    assert built.clean, (built.undefined_references, built.undefined_citations, built.overfull_tables, built.too_large_floats)
    # re-rendering into the folder editscope wrote replaces it; another folder is refused unless --force
    write_paper(tiny_run, tmp_path / "tpl", out)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(PaperError, match="was not written by `editscope paper`.*--force"):
        write_paper(tiny_run, tmp_path / "tpl", other)
    write_paper(tiny_run, tmp_path / "tpl", other, force=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_special_characters_in_prompts_are_escaped_and_compile(tmp_path):
    nasty = r"50% of a_b & c #1 costs $5 {x} \n ^2 ~ok <a>"
    escaped = tex_escape(nasty)
    assert escaped == (r"50\% of a\_b \& c \#1 costs \$5 \{x\} \textbackslash{}n \textasciicircum{}2 "
                       r"\textasciitilde{}ok \textless{}a\textgreater{}")
    t = Table("prompts", f"Prompts such as {nasty}", ["method", "prompt", "value"],
              [[("rome_2", False), (nasty, False), ("0.500 [0.100, 0.900]", True)]])
    body = table_float(t, "tab:prompts")
    assert r"{\bf 0.500}" in body and r"{\tiny [0.100, 0.900]}" in body and r"rome\_2" in body
    _need_latex()
    (tmp_path / "t.tex").write_text("\n".join([r"\documentclass{article}", r"\usepackage[T1]{fontenc}",
                                              r"\usepackage{booktabs,graphicx}", r"\begin{document}", body,
                                              r"\end{document}", ""]))
    p = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout[-1500:]


def test_the_official_style_is_used_when_the_template_has_it(tiny_run, tmp_path):
    tpl = _template(tmp_path / "tpl")
    (tpl / "neurips_2025.sty").write_text("\\ProvidesPackage{neurips_2025}\n\\DeclareOption{final}{}\\ProcessOptions\\relax\n"
                                         "\\RequirePackage{natbib}\n\\RequirePackage[margin=1in]{geometry}\n")
    d = write_paper(tiny_run, tpl, tmp_path / "out")
    assert d.style == "neurips_2025" and (tmp_path / "out" / "neurips_2025.sty").is_file()
    assert r"\usepackage[final]{neurips_2025}" in d.main.read_text() and not (tmp_path / "out" / "esneurips.sty").exists()


def test_bad_templates_runs_and_latex_are_refused_with_the_place_and_the_fix(tiny_run, tmp_path):
    tpl = _template(tmp_path / "tpl")
    (tpl / "sections" / "discussion.tex").unlink()
    with pytest.raises(PaperError, match=r"missing sections/discussion\.tex"):
        write_paper(tiny_run, tpl, tmp_path / "o1")
    with pytest.raises(PaperError, match="no such folder"):
        write_paper(tiny_run, tmp_path / "nowhere", tmp_path / "o1")
    cases = [({"results": "\\section{Results}\n{{cell:rome:target/top1}}\n"}, r"results\.tex: .*no method 'rome'"),
             ({"results": "\\section{Results}\n{{value:ft-m:far/top9}}\n"}, r"results\.tex: no column 'far/top9'"),
             ({"introduction": "Intro without a section.\n"}, r"introduction\.tex: must start with \\section"),
             ({"abstract": "\\section{Abstract}\n"}, r"abstract\.tex: must start with \\begin\{abstract\}"),
             ({"conclusion": "\\section{Conclusion}\nAs \\citet{nobody2031} said.\n"}, r"cites nobody2031 with no BibTeX entry")]
    for i, (over, match) in enumerate(cases):
        with pytest.raises(PaperError, match=match):
            write_paper(tiny_run, _template(tmp_path / f"t{i}", **over), tmp_path / f"o{i}")
    # a citation the template's own references.bib provides is fine
    tpl = _template(tmp_path / "ok", conclusion="\\section{Conclusion}\nAs \\citet{nobody2031} said.\n")
    (tpl / "references.bib").write_text("@misc{nobody2031,\n  title = {A Future Paper},\n  author = {Nobody, A.},\n  year = {2031}\n}\n")
    write_paper(tiny_run, tpl, tmp_path / "ok-out")
    assert "@misc{nobody2031," in (tmp_path / "ok-out" / "references.bib").read_text()
    _need_latex()
    # a LaTeX error names the file and line
    broken = _template(tmp_path / "broken", methodology="\\section{Method}\n\nFine line.\n\\undefinedmacro{x}\n")
    d = write_paper(tiny_run, broken, tmp_path / "broken-out")
    with pytest.raises(PaperBuildError, match=r"sections/methodology\.tex:4: Undefined control sequence"):
        compile_paper(d.main)


def test_a_partial_run_says_so_on_the_title_page(tiny_run, tmp_path):
    part = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_run, part)
    s = ResultsStore(part / "results.sqlite")
    s.set_meta(status="interrupted")
    s.close()
    res = load_results(part)
    assert res.partial
    d = write_paper(part, _template(tmp_path / "tpl"), tmp_path / "out")
    assert r"\textbf{Partial run.}" in d.main.read_text() and "partial" in (tmp_path / "out" / "paper.log").read_text()


def test_cli_paper_writes_and_compiles(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from editscope.cli import app

    _need_latex()
    r = CliRunner().invoke(app, ["paper", str(tiny_run), "--template", str(_template(tmp_path / "tpl")),
                                 "--out", str(tmp_path / "draft"), "--pdf"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "draft" / "main.pdf").is_file() and "warning" not in r.output
    r = CliRunner().invoke(app, ["paper", str(tiny_run), "--template", str(tmp_path / "none"), "--out", str(tmp_path / "d2")])
    assert r.exit_code == 2 and "no such folder" in r.output
