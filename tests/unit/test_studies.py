"""The committed write-ups under docs/studies: every number in them comes from their stored run.

Each ``docs/studies/<name>.md`` is produced by ``editscope report RUN --doc <name>.md.in`` from a run
whose results store is committed as ``docs/studies/runs/<name>.sqlite.xz``. Re-filling the template
from that archive must give the committed text exactly: a hand-edited number, a stale table or a
write-up whose run was replaced fails here.
"""

from pathlib import Path

import pytest

from editscope.report.document import referenced_studies, write_document
from editscope.report.results import load_results
from editscope.runner import unpack_archive

STUDIES = Path(__file__).resolve().parents[2] / "docs" / "studies"
TEMPLATES = sorted(STUDIES.glob("*.md.in"))


def test_every_write_up_has_its_template_and_archive():
    docs = sorted(p for p in STUDIES.glob("*.md"))
    assert docs, "docs/studies has no write-up"
    for doc in docs:
        name = doc.name[:-3]
        assert (STUDIES / f"{name}.md.in").is_file(), f"{doc} has no template {name}.md.in"
        assert (STUDIES / "runs" / f"{name}.sqlite.xz").is_file(), f"{doc} has no stored run runs/{name}.sqlite.xz"


@pytest.mark.parametrize("template", TEMPLATES, ids=[t.name for t in TEMPLATES])
def test_write_up_numbers_match_the_stored_run(template, tmp_path):
    name = template.name[: -len(".md.in")]
    run = unpack_archive(STUDIES / "runs" / f"{name}.sqlite.xz", tmp_path / "runs" / name)
    res = load_results(run)
    assert not res.partial, f"{name}: the stored run is partial"
    assert res.meta["name"] == name
    for other in referenced_studies(template.read_text()):  # {{from:STUDY:...}}: found beside the run
        assert load_results(unpack_archive(STUDIES / "runs" / f"{other}.sqlite.xz", tmp_path / "runs" / other)).meta["name"] == other
    out = write_document(run, template, tmp_path / "doc" / f"{name}.md")
    committed = (STUDIES / f"{name}.md").read_text()
    assert out.read_text() == committed, (
        f"docs/studies/{name}.md differs from its template filled from runs/{name}.sqlite.xz; regenerate it "
        f"with `editscope report runs/{name} --doc docs/studies/{name}.md.in` (never edit numbers by hand)")
    for fig in (tmp_path / "doc" / "figures").glob("*.png"):
        assert (STUDIES / "figures" / fig.name).is_file(), f"figure {fig.name} is not committed"
