"""The documentation site: it builds strictly and offline, and its reference pages are complete.

The site is built once (``mkdocs build --strict``: a broken link, a missing page or an unresolvable
API reference fails it) into a temporary folder; the generated reference pages are checked against
the code they describe: every command and option, study-file key, metric, method, store column and
public API name must appear.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the packages whose ``__all__`` the Python API page documents
API_PACKAGES = ("editscope", "editscope.runner", "editscope.report", "editscope.methods", "editscope.models",
                "editscope.probes", "editscope.metrics", "editscope.evaluation", "editscope.stats",
                "editscope.scoring", "editscope.editors", "editscope.analysis", "editscope.paper", "editscope.explorer")


def _hook():
    spec = importlib.util.spec_from_file_location("reference_pages", ROOT / "docs" / "hooks" / "reference_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_the_site_builds_strictly_and_fetches_nothing_from_elsewhere(site):
    pages = list(site.rglob("*.html"))
    assert (site / "index.html").is_file() and len(pages) > 15
    remote = re.compile(r"""(?:src|href)=["'](?:https?:)?//[^"']+\.(?:js|css|woff2?|ttf)\b|@import\s+url\(\s*["']?https?:"""
                        r"""|fonts\.googleapis|fonts\.gstatic""")
    for page in pages:
        hits = remote.findall(page.read_text(errors="replace"))
        assert not hits, f"{page.relative_to(site)} loads {hits[:3]} from elsewhere"
    for css in site.rglob("*.css"):
        assert not re.search(r"url\(\s*[\"']?https?:", css.read_text(errors="replace")), css
    # every study write-up is a page, with its figures
    for md in sorted((ROOT / "docs" / "studies").glob("*.md")):
        assert (site / "studies" / f"{md.stem}.html").is_file(), md.name


def test_every_command_and_option_is_in_the_cli_reference():
    hook = _hook()
    page = hook.cli_page()
    commands = list(hook.cli_commands())
    assert {"editscope run", "editscope report", "editscope serve", "editscope data fetch"} <= {p for p, _ in commands}
    for path, cmd in commands:
        section = page.split(f"## `{path}`\n", 1)
        assert len(section) == 2, f"{path} has no section"
        body = section[1].split("\n## ", 1)[0]
        for p in cmd.params:
            if p.name == "help":
                continue
            names = p.opts if p.param_type_name == "option" else [p.name.upper()]
            assert any(n in body for n in names), f"{path}: {names} missing"


def test_every_study_key_is_in_the_yaml_reference_with_its_meaning():
    hook = _hook()
    page = hook.study_yaml_page()
    from editscope.runner.config import InlineEdit, ProtocolSpec, StudyConfig

    models = hook.study_models()
    assert models[0] is StudyConfig and {InlineEdit, ProtocolSpec} <= set(models)
    for m in models:
        body = page.split(f"## {m.__name__}\n", 1)[1].split("\n## ", 1)[0]
        for name, field in m.model_fields.items():
            assert f"| `{field.alias or name}` |" in body, f"{m.__name__}.{name} missing"
            assert field.description, f"{m.__name__}.{name} has no description (Field(description=...))"


def test_every_metric_method_and_store_column_is_in_its_reference():
    hook = _hook()
    from editscope.methods import list_methods
    from editscope.metrics.edit_metrics import METRICS

    metrics = hook.metrics_page()
    assert all(f"| `{name}` (v{m.version}) |" in metrics for name, m in METRICS.items())
    methods = hook.methods_page()
    assert all(f"| `{info['name']}` |" in methods for info in list_methods())
    store = hook.store_page()
    tables = hook.store_tables()
    assert {"meta", "units", "rows", "probes", "measures", "scalars", "events"} <= set(tables)
    for table, columns in tables.items():
        body = store.split(f"## `{table}`\n", 1)[1].split("\n## ", 1)[0]
        assert all(f"| `{c}` |" in body for c, _ in columns), table


def _documented_ids(obj: object, package: str, name: str) -> set[str]:
    """The anchors under which the API page may show ``package.name``: its public path, or where it
    is defined (a function re-exported under its submodule's name, a name loaded on first use)."""
    ids = {f"{package}.{name}"}
    if isinstance(obj, types.ModuleType):
        ids.add(obj.__name__)
    elif hasattr(obj, "__qualname__") and hasattr(obj, "__module__"):
        ids.add(f"{obj.__module__}.{obj.__qualname__}")
    return ids


def test_every_public_name_is_on_the_api_page(site):
    html = (site / "reference" / "api.html").read_text()
    anchors = set(re.findall(r'id="([^"]+)"', html))
    missing = []
    for package in API_PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            if not _documented_ids(getattr(module, name), package, name) & anchors:
                missing.append(f"{package}.{name}")
    assert not missing, f"not on the API page (docs/reference/api.md): {missing}"
    # a new public package is documented too
    src = ROOT / "src" / "editscope"
    packages = {f"editscope.{p.name}" for p in src.iterdir() if (p / "__init__.py").is_file()}
    with_all = {p for p in packages if "__all__" in vars(importlib.import_module(p))}
    assert with_all <= set(API_PACKAGES), sorted(with_all - set(API_PACKAGES))


def test_every_command_help_ends_with_an_example_that_parses():
    import shlex

    from typer.testing import CliRunner

    from editscope.cli import app

    hook = _hook()
    for path, cmd in hook.cli_commands():
        words = path.split()[1:]
        result = CliRunner().invoke(app, [*words, "--help"])
        assert result.exit_code == 0, (path, result.output)
        tail = " ".join(result.output.rsplit("Example:", 1)[-1].split())  # the help wraps long lines
        assert cmd.epilog and tail == cmd.epilog.removeprefix("Example: "), f"{path} --help ends with {tail!r}"
        example = shlex.split(cmd.epilog.removeprefix("Example: "))
        assert example[0] == "editscope"
        if not hasattr(cmd, "commands"):  # a command, not a group: the example runs this command
            assert example[: len(words) + 1] == ["editscope", *words], (path, example)
            # the example's arguments are accepted by the command's parser (nothing runs)
            cmd.make_context(words[-1], example[len(words) + 1:])


def test_the_committed_reference_pages_are_current():
    hook = _hook()
    stale = [path for path, build in hook.PAGES.items() if (ROOT / "docs" / path).read_text() != build()]
    assert not stale, f"stale reference pages {stale}: run `python docs/hooks/reference_pages.py` and commit them"
