"""The package's structure holds: no import circles, no upward imports, no private names across
modules, function-local imports only with a stated reason (scripts/check_layers.py counts them;
docs/architecture.md explains the layers)."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

import editscope

ROOT = Path(__file__).resolve().parents[2]


def _checker():
    spec = importlib.util.spec_from_file_location("check_layers", ROOT / "scripts" / "check_layers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def layers():
    return _checker()


@pytest.fixture(scope="module")
def graph(layers):
    return layers.graph()


def test_every_module_sits_in_a_layer_and_no_import_runs_upward_or_in_a_circle(layers, graph):
    for m in graph.modules:
        layers.layer_of(m)  # KeyError names a module no layer lists
    assert layers.circles(graph) == []
    assert [str(i) for i in layers.upward(layers.imports(graph))] == []


def test_the_checker_finds_a_circle_and_an_upward_import(layers):
    g = grimp.ImportGraph()
    for m in ("editscope.errors", "editscope.scoring", "editscope.report.formats.plots"):
        g.add_module(m)
    g.add_import(importer="editscope.errors", imported="editscope.scoring", line_number=3, line_contents="x")
    g.add_import(importer="editscope.scoring", imported="editscope.errors", line_number=4, line_contents="y")
    g.add_import(importer="editscope.scoring", imported="editscope.report.formats.plots", line_number=5, line_contents="z")
    assert layers.circles(g) == [["editscope.errors", "editscope.scoring"]]
    up = layers.upward(layers.imports(g))
    assert {(i.importer, i.imported) for i in up} == {("editscope.errors", "editscope.scoring"),
                                                      ("editscope.scoring", "editscope.report.formats.plots")}
    with pytest.raises(KeyError, match="no layer"):
        layers.layer_of("elsewhere.module")


def test_no_private_name_crosses_a_module_and_local_imports_say_why(layers):
    assert layers.private_names_across_modules() == []
    assert layers.unexplained_local_imports() == []


def test_the_checker_sees_a_private_name_and_an_unexplained_local_import(layers, tmp_path, monkeypatch):
    pkg = tmp_path / "editscope"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def _hidden():\n    pass\n")
    (pkg / "b.py").write_text("from .a import _hidden\n\n\ndef f():\n    from .a import _hidden as h\n    return h\n")
    monkeypatch.setattr(layers, "SRC", pkg)
    assert layers.private_names_across_modules() == ["editscope.b:1  from editscope.a import _hidden",
                                                     "editscope.b:5  from editscope.a import _hidden"]
    assert layers.unexplained_local_imports() == ["editscope.b:5  from .a import _hidden as h"]


def test_the_version_is_pyprojects_and_docstrings_cite_files_that_exist():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert editscope.__version__ == project["version"]
    cited = set()
    for f in (ROOT / "src" / "editscope").rglob("*.py"):
        cited |= set(re.findall(r"\b((?:docs|examples|benchmarks|scripts)/[\w./-]+\.(?:md|py|yaml))", f.read_text()))
        assert "DESIGN.md" not in f.read_text(), f"{f} cites DESIGN.md, which is not in the repository"
    missing = sorted(c for c in cited if not (ROOT / c).exists() and not (ROOT / (c + ".in")).exists()
                     and "<" not in c and "*" not in c)
    assert missing == []
