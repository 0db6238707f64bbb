"""The README's finding quotes only numbers that a generated write-up gives: every decimal number
(with its interval, where it has one) in its section "The finding" must occur verbatim in
a document under docs/studies/ generated from a stored run (test_studies checks those against the
archives), so a hand-typed or stale figure fails here."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NUMBER = re.compile(r"[+-]?\d+\.\d+(?: \[[+-]?\d+\.\d+, [+-]?\d+\.\d+\])?")


def opening() -> str:
    """The README's headline finding: the section "## The finding", which its first screen leads to."""
    text = (ROOT / "README.md").read_text()
    _, found, rest = text.partition("\n## The finding\n")
    assert found, "README has no section '## The finding'"
    return rest.partition("\n## ")[0]


def test_every_number_in_the_readme_opening_comes_from_a_generated_document():
    docs = "\n".join(p.read_text() for p in sorted((ROOT / "docs" / "studies").glob("*.md")))
    numbers = NUMBER.findall(opening())
    assert len(numbers) >= 10, "the README opening should lead with measured results"
    missing = [n for n in numbers if n not in docs]
    assert not missing, (f"README opening numbers not found in any generated write-up under docs/studies: {missing}; "
                         "quote them from a regenerated document (scripts/regenerate_docs.py), never by hand")


def test_the_check_catches_a_typed_number():
    docs = "\n".join(p.read_text() for p in sorted((ROOT / "docs" / "studies").glob("*.md")))
    assert "0.9137 [0.9012, 0.9999]" not in docs and NUMBER.findall("keeps 0.9137 [0.9012, 0.9999]") == [
        "0.9137 [0.9012, 0.9999]"]


def test_the_readme_says_where_every_registry_dataset_comes_from():
    from editscope.data.registry import DATASETS

    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Evaluation data"):]
    for ds in DATASETS.values():
        row = next((line for line in section.splitlines() if line.startswith(f"| {ds.name} |")), None)
        assert row is not None, f"README's data table has no row for {ds.name}"
        assert ds.files[0].repo in row, f"{ds.name}: the README names another source than the registry's"
    assert "EDITSCOPE_DATA_URL" in section and "editscope data mirror" in section  # working offline


def section(title: str, page: str = "docs/guide/measured.md") -> str:
    """A section of a documentation page (``## title`` up to the next heading)."""
    text = (ROOT / page).read_text()
    _, found, rest = text.partition(f"\n## {title}")
    assert found, f"{page} has no section '## {title}'"
    return re.split(r"\n#{2,3} ", rest, maxsplit=1)[0]


def test_the_protocol_table_of_the_measured_figures_quotes_its_generated_document():
    """Teacher-forced token accuracy next to generated exact match, for ROME, MEMIT, AlphaEdit and
    FT-M: every number of the measured figures' table is in docs/studies/counterfact-protocols.md."""
    sec = section("Teacher-forced scores against generated answers")
    doc = (ROOT / "docs" / "studies" / "counterfact-protocols.md").read_text()
    numbers = NUMBER.findall(sec)
    assert len(numbers) >= 16 and all(m in sec for m in ("ROME", "MEMIT", "AlphaEdit", "FT-M"))
    missing = [n for n in numbers if n not in doc]
    assert not missing, f"protocol table numbers not in the generated document: {missing}"


def test_the_readme_is_short_and_its_first_screen_has_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README has {len(lines)} lines; the rest belongs in docs/"
    first_screen = "\n".join(lines[:30])
    assert "make demo" in first_screen and "make test" in first_screen
