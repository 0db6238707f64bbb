"""The committed write-ups under docs/studies and papers under docs/papers: every number in them
comes from their stored run.

Each ``docs/studies/<name>.md`` is produced by ``editscope report RUN --doc <name>.md.in`` from a run
whose results store is committed as ``docs/studies/runs/<name>.sqlite.xz``. Re-filling the template
from that archive must give the committed text exactly: a hand-edited number, a stale table or a
write-up whose run was replaced fails here. Each ``docs/papers/<study>/`` holds LaTeX section
templates and the draft ``editscope paper`` rendered from them (``paper_draft/``, PDF included):
re-rendering from the archives must give the committed sources byte for byte, and they must compile
with no undefined reference or citation and no overfull table. A write-up filled from causal traces
(``{{aie:SET:...}}`` placeholders) is re-filled the same way from its trace studies, committed as
``docs/studies/traces/<SET>.traces.tar.xz``.
"""

import os
import shutil
from pathlib import Path

import pytest

from editscope.analysis.trace_report import is_trace_template, referenced_sets, write_trace_document
from editscope.analysis.trace_study import unpack_traces
from editscope.paper import compile_paper, write_paper
from editscope.report.documents.document import referenced_studies, write_document
from editscope.report.data.results import StudyResults, load_results
from editscope.runner import unpack_archive

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ROOT / "docs" / "studies"
TRACE_TEMPLATES = sorted(t for t in STUDIES.glob("*.md.in") if is_trace_template(t.read_text()))
TEMPLATES = sorted(t for t in STUDIES.glob("*.md.in") if t not in TRACE_TEMPLATES)
PAPERS = sorted(p for p in (ROOT / "docs" / "papers").glob("*") if (p / "sections").is_dir())
BUILD_FILES = {"main.aux", "main.log", "main.out", "main.bbl", "main.blg", "main.pdf", ".gitignore"}  # not rendered


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Every archive unpacked once into one runs/ folder (companions are found beside each other),
    and each run loaded at most once: ``stored(name) -> (run folder, results)``."""
    runs = tmp_path_factory.mktemp("stored") / "runs"
    loaded: dict[str, StudyResults] = {}

    def get(name: str) -> tuple[Path, StudyResults]:
        run = runs / name
        if not run.exists():
            unpack_archive(STUDIES / "runs" / f"{name}.sqlite.xz", run)
        if name not in loaded:
            loaded[name] = load_results(run)
        return run, loaded[name]

    return get


def test_every_write_up_has_its_template_and_archive():
    docs = sorted(p for p in STUDIES.glob("*.md"))
    assert docs, "docs/studies has no write-up"
    for doc in docs:
        name = doc.name[:-3]
        template = STUDIES / f"{name}.md.in"
        assert template.is_file(), f"{doc} has no template {name}.md.in"
        if template in TRACE_TEMPLATES:
            for s in referenced_sets(template.read_text()):
                assert (STUDIES / "traces" / f"{s}.traces.tar.xz").is_file(), f"{doc} has no stored traces traces/{s}.traces.tar.xz"
        else:
            assert (STUDIES / "runs" / f"{name}.sqlite.xz").is_file(), f"{doc} has no stored run runs/{name}.sqlite.xz"


@pytest.mark.parametrize("template", TRACE_TEMPLATES, ids=[t.name for t in TRACE_TEMPLATES])
def test_trace_write_up_numbers_match_the_stored_traces(template, tmp_path):
    name = template.name[: -len(".md.in")]
    folders = {s: unpack_traces(STUDIES / "traces" / f"{s}.traces.tar.xz", tmp_path / "traces" / s)
               for s in referenced_sets(template.read_text())}
    out = write_trace_document(template, tmp_path / "doc" / f"{name}.md", folders)
    assert out.read_text() == (STUDIES / f"{name}.md").read_text(), (
        f"docs/studies/{name}.md differs from its template filled from its stored traces; regenerate it with "
        f"`editscope trace --doc docs/studies/{name}.md.in --out docs/studies/{name}.md --with SET=FOLDER ...`")
    for fig in (tmp_path / "doc" / "figures").glob("*.png"):
        assert (STUDIES / "figures" / fig.name).is_file(), f"figure {fig.name} is not committed"


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.name for t in TEMPLATES])
def test_write_up_numbers_match_the_stored_run(template, tmp_path, stored):
    name = template.name[: -len(".md.in")]
    run, res = stored(name)
    assert not res.partial, f"{name}: the stored run is partial"
    assert res.meta["name"] == name
    for other in referenced_studies(template.read_text()):  # {{from:STUDY:...}}: found beside the run
        assert stored(other)[1].meta["name"] == other
    out = write_document(run, template, tmp_path / "doc" / f"{name}.md", results=res)
    committed = (STUDIES / f"{name}.md").read_text()
    assert out.read_text() == committed, (
        f"docs/studies/{name}.md differs from its template filled from runs/{name}.sqlite.xz; regenerate it "
        f"with `editscope report runs/{name} --doc docs/studies/{name}.md.in` (never edit numbers by hand)")
    for fig in (tmp_path / "doc" / "figures").glob("*.png"):
        assert (STUDIES / "figures" / fig.name).is_file(), f"figure {fig.name} is not committed"


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("paper", PAPERS, ids=[p.name for p in PAPERS])
def test_paper_draft_is_regenerated_from_the_stored_runs_and_compiles(paper, tmp_path, stored):
    """docs/papers/<study>/paper_draft equals ``editscope paper`` on the study's archive (every source,
    table and figure byte for byte), and the sources compile cleanly."""
    study = paper.name
    run, res = stored(study)
    text = "\n".join(p.read_text() for p in paper.rglob("*.tex") if "paper_draft" not in p.parts)
    for other in referenced_studies(text):
        stored(other)
    out = tmp_path / "paper_draft"
    draft = write_paper(run, paper, out, results=res)
    committed = paper / "paper_draft"
    fresh, kept = _files(out), _files(committed) - BUILD_FILES
    assert fresh == kept, f"re-rendered files differ from the committed: only new {sorted(fresh - kept)}, only committed {sorted(kept - fresh)}"
    for rel in sorted(fresh):
        assert (out / rel).read_bytes() == (committed / rel).read_bytes(), (
            f"docs/papers/{study}/paper_draft/{rel} differs from its re-rendering; regenerate with `editscope paper "
            f"runs/{study} --template docs/papers/{study} --out docs/papers/{study}/paper_draft --pdf`")
    assert (committed / "main.pdf").read_bytes()[:4] == b"%PDF"
    if shutil.which("pdflatex") is None:
        if os.environ.get("CI"):
            pytest.fail("pdflatex missing in CI (.ci/run installs texlive-latex-recommended)")
        pytest.skip("pdflatex not installed")
    built = compile_paper(draft.main)
    assert built.clean, (built.undefined_references, built.undefined_citations, built.overfull_tables, built.too_large_floats)


#: placeholder kinds that need controls, sweeps or the published protocol, quoted from the stored runs
CONTROL_PLACEHOLDERS = [("two-plus-two-controls", "{{excess:rome:placebo}}"), ("two-plus-two-controls", "{{excess:rome:unrelated:near}}"),
                        ("two-plus-two-controls", "{{excess_rates:rome:placebo}}"), ("two-plus-two-controls", "{{identity}}"),
                        ("two-plus-two-controls", "{{margin:rome:1-3}}"), ("two-plus-two-strength", "{{strength:rome:0.5}}"),
                        ("two-plus-two-seed38", "{{seed38:seed-naive-ft:all}}"),
                        ("two-plus-two-seed38", "{{seed38:published:naive FT:all}}")]
CONTROL_TABLES = [("two-plus-two-controls", "excess-placebo"), ("two-plus-two-controls", "excess-unrelated"),
                  ("two-plus-two-controls", "margin"), ("two-plus-two-controls", "identity"),
                  ("two-plus-two-controls", "pairwise"), ("two-plus-two-strength", "strength"), ("two-plus-two-seed38", "seed38")]


def test_control_placeholders_have_their_latex_form(stored, tmp_path):
    """Every placeholder kind a paper can use gives in LaTeX exactly its Markdown text, escaped; table
    kinds become a booktabs file under tables/ with one row per Markdown row."""
    from editscope.paper.draft import LONG_ROWS, LatexSink
    from editscope.report.documents.document import fill
    from editscope.report.formats.tex import tex_escape

    (tmp_path / "tables").mkdir()
    for study, placeholder in CONTROL_PLACEHOLDERS:
        run, res = stored(study)
        md = fill(placeholder, res, str(run))
        assert md not in ("", "-") and "{{" not in md
        assert fill(placeholder, res, str(run), sink=LatexSink(tmp_path, study)) == tex_escape(md), placeholder
    for study, name in CONTROL_TABLES:
        run, res = stored(study)
        md = fill(f"{{{{table:{name}}}}}", res, str(run))
        sink = LatexSink(tmp_path, study)
        tex = fill(f"{{{{table:{name}}}}}", res, str(run), sink=sink)
        if len(md.splitlines()) - 2 > LONG_ROWS:  # long: left for the appendix, a reference in the text
            assert tex == rf"The full table is \tabref{{tab:{name}}} in \appref{{app:tables}}." and name in sink.moved
            continue
        assert tex == rf"\input{{tables/{name}}}", name
        body = (tmp_path / "tables" / f"{name}.tex").read_text()
        rows = body.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
        assert len(rows) == len(md.splitlines()) - 2 and r"\toprule" in body and rf"\label{{tab:{name}}}" in body
