"""Regenerate every write-up under docs/studies and the paper drafts under docs/papers from their
committed archives (what tests/unit/test_studies.py checks byte for byte).

    .venv/bin/python scripts/regenerate_docs.py [NAME ...] [--no-papers]

NAME: write-ups to regenerate (default: all, trace write-ups included). Archives are unpacked once
into a temporary runs/ folder, so companion studies ({{from:STUDY:...}}) are found beside each
other. Papers are rendered and compiled (needs pdflatex).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from editscope.analysis.trace_report import is_trace_template, referenced_sets, write_trace_document
from editscope.analysis.trace_study import unpack_traces
from editscope.paper import compile_paper, write_paper
from editscope.report.documents.document import referenced_studies, write_document
from editscope.report.data.results import load_results
from editscope.runner import unpack_archive

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "docs" / "studies"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--no-papers", action="store_true")
    args = ap.parse_args()
    templates = sorted(STUDIES.glob("*.md.in"))
    if args.names:
        templates = [t for t in templates if t.name[: -len(".md.in")] in args.names]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"

        def run(name: str) -> Path:
            folder = runs / name
            if not folder.exists():
                unpack_archive(STUDIES / "runs" / f"{name}.sqlite.xz", folder)
            return folder

        for t in templates:
            name = t.name[: -len(".md.in")]
            text = t.read_text()
            if is_trace_template(text):
                sets = {s: unpack_traces(STUDIES / "traces" / f"{s}.traces.tar.xz", Path(tmp) / "traces" / s)
                        for s in referenced_sets(text)}
                write_trace_document(t, STUDIES / f"{name}.md", sets)
            else:
                for other in referenced_studies(text):
                    run(other)
                write_document(run(name), t, STUDIES / f"{name}.md")
            print(f"docs/studies/{name}.md")
        if args.no_papers:
            return
        for paper in sorted(p for p in (ROOT / "docs" / "papers").glob("*") if (p / "sections").is_dir()):
            text = "\n".join(p.read_text() for p in paper.rglob("*.tex") if "paper_draft" not in p.parts)
            for other in referenced_studies(text):
                run(other)
            draft = write_paper(run(paper.name), paper, paper / "paper_draft", force=True,
                                results=load_results(run(paper.name)))
            built = compile_paper(draft.main)
            print(f"{draft.main} (clean: {built.clean})")


if __name__ == "__main__":
    main()
