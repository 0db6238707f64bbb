"""The documentation's examples run: every ``python`` block of the README and of each tutorial.

A page's blocks run in order in one namespace (a tutorial builds on its earlier steps), in a scratch
folder, on a tiny random model in place of the real one (the model's name is swapped for
``tiny:llama`` and ``load_model`` builds it), so they run in seconds: what is checked is that every
call, key and attribute the page shows exists and works together. Blocks fenced ``python slow`` are
left to ``make docs-examples``, which runs every block, slow ones included, on the real model.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from mktestdocs import grab_code_blocks

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "tutorials").glob("*.md"))]
REAL_MODEL = "smollm2-135m"


def python_blocks(page: Path, lang: str = "python") -> list[str]:
    """The page's code blocks fenced exactly ``lang`` (``python slow`` blocks are not ``python``)."""
    return grab_code_blocks(page.read_text(), lang=lang)


def on_tiny_model(code: str) -> str:
    return code.replace(f'"{REAL_MODEL}"', '"tiny:llama"').replace(f"model: {REAL_MODEL}", "model: tiny:llama")


@pytest.fixture
def tiny_load_model(monkeypatch):
    import editscope
    import editscope.models
    from editscope.models import tiny_model

    real = editscope.load_model

    @functools.wraps(real)
    def load_model(name, *args, **kwargs):
        if str(name).startswith("tiny:"):
            return tiny_model(str(name).split(":", 1)[1], num_hidden_layers=4)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(editscope, "load_model", load_model)
    monkeypatch.setattr(editscope.models, "load_model", load_model)


def test_every_block_is_run_here_or_by_make_docs_examples():
    """A block fenced otherwise (``bash``, no language) would be run by neither: refuse it, so that
    no example can rot unseen. Data blocks (``yaml``, ``json``, ``text``) are not examples."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_doc_examples", ROOT / "scripts" / "run_doc_examples.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    for page in PAGES:
        infos = [info for info, _ in runner.blocks(page)]
        assert infos, page.name
        odd = [i for i in infos if i not in runner.RUN and i not in ("yaml", "json", "text")]
        assert not odd, f"{page.name}: blocks fenced {odd}; use python, python slow, sh or sh slow"
        assert [c for i, c in runner.blocks(page) if i == "python"] == python_blocks(page)


def test_the_tutorials_are_in_the_site():
    nav = (ROOT / "mkdocs.yml").read_text()
    tutorials = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
    assert len(tutorials) >= 4
    assert all(f"tutorials/{t.name}" in nav for t in tutorials)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_python_block_of_the_page_runs(page, tmp_path, monkeypatch, tiny_load_model):
    blocks = python_blocks(page)
    assert blocks, f"{page.name} has no python example"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    code = on_tiny_model("\n".join(blocks))
    assert REAL_MODEL not in code, "a block names the real model in a way the swap does not reach"
    exec(compile(code, str(page), "exec"), {"__name__": "__main__"})
