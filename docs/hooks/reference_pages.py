"""MkDocs hook: the generated reference pages (CLI, study YAML, metrics, methods, results store).

Each page is built from the code it documents (the Typer app, the pydantic study models, the metric
and method registries, an empty results store): at site build time the hook replaces the committed
copy with a fresh one, so the site cannot drift from the code; the committed copies (for readers of
the repository) are rewritten by ``python docs/hooks/reference_pages.py``, and
``tests/unit/test_docs_site.py`` fails when they are stale or when a command, option, YAML field,
metric, method or store column is missing. ``PAGES`` maps each page's path under ``docs/`` to its
builder; the builders are plain functions, called by the tests without MkDocs.
"""

from __future__ import annotations

import inspect
import json
import tempfile
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

GENERATED_NOTE = "*Generated from the code at build time by `docs/hooks/reference_pages.py`; do not edit.*"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


# ---- the command line

def cli_commands() -> Iterator[tuple[str, Any]]:
    """``("editscope run", command)`` for every command and subcommand of the CLI, in help order."""
    import typer.main

    from editscope.cli import app

    def walk(cmd: Any, path: str) -> Iterator[tuple[str, Any]]:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                if not sub.hidden:
                    yield from walk(sub, f"{path} {name}")
        else:
            yield path, cmd

    root = typer.main.get_command(app)
    yield "editscope", root
    yield from walk(root, "editscope")


def _param_row(cmd: Any, p: Any) -> str:
    """One table row of a command's argument or option, as ``--help`` words it."""
    from typer._click.core import Context  # Typer keeps its own copy of click

    record = p.get_help_record(Context(cmd, info_name=cmd.name))
    names, text = record if record else (p.name, "")
    if p.param_type_name == "argument":
        names = names.split(" ")[0].upper()
    return f"| `{_md_cell(names)}` | {p.param_type_name} | {_md_cell(text)} |"


def cli_page() -> str:
    out = ["# Command line", "", GENERATED_NOTE, "",
           "Every command of `editscope`, its arguments and options (`editscope COMMAND --help` prints the same).", ""]
    for path, cmd in cli_commands():
        out += [f"## `{path}`", "", (cmd.help or "").strip(), ""]
        if cmd.epilog:
            out += [f"Example: `{cmd.epilog.removeprefix('Example: ')}`", ""]
        params = [p for p in cmd.params if p.name != "help"]
        if params:
            out += ["| argument / option | kind | what it does |", "|---|---|---|",
                    *[_param_row(cmd, p) for p in params], ""]
    return "\n".join(out) + "\n"


# ---- the study file

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is typing.Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " \\| ".join(repr(a).replace("'", '"') for a in typing.get_args(tp))
    if origin in (list, tuple, set):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        k, v = typing.get_args(tp) or (Any, Any)
        return f"mapping {_type_name(k)} -> {_type_name(v)}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _models_in(tp: Any) -> Iterator[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        yield tp
    for a in typing.get_args(tp):
        yield from _models_in(a)


def study_models() -> list[type[BaseModel]]:
    """The study file's pydantic models, the top-level :class:`StudyConfig` first, each once."""
    from editscope.runner.config import StudyConfig

    seen: list[type[BaseModel]] = []

    def visit(m: type[BaseModel]) -> None:
        if m in seen:
            return
        seen.append(m)
        for f in m.model_fields.values():
            for sub in _models_in(f.annotation):
                visit(sub)

    visit(StudyConfig)
    return seen


def _constraints(field: Any) -> str:
    bits = []
    for c in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "length >="),
                           ("pattern", "matches")):
            v = getattr(c, attr, None)
            if v is not None:
                bits.append(f"{sign} `{v}`" if attr == "pattern" else f"{sign} {v}")
    return ", ".join(bits)


def _default(field: Any) -> str:
    """The default as YAML would write it (``null``, ``false``, ``[]``, ``{}``)."""
    if field.is_required():
        return "required"
    v = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(v, BaseModel):
        return "`{}`"
    try:
        return f"`{json.dumps(v)}`"
    except TypeError:
        return f"`{v!r}`"


def study_yaml_page() -> str:
    from editscope.runner import config as cfg

    out = ["# Study file (YAML)", "", GENERATED_NOTE, "",
           "A study is one YAML document validated by these pydantic models (`editscope run STUDY.yaml`); unknown "
           "keys are refused everywhere, and an error names the key path and the fix.", "",
           "```yaml", inspect.cleandoc((cfg.__doc__ or "").split("\n\n")[1]), "```", ""]
    for m in study_models():
        doc = inspect.getdoc(m) if "__doc__" in vars(m) and m.__doc__ else ""
        out += [f"## {m.__name__}", "", doc, "", "| key | type | default | constraints | what it means |", "|---|---|---|---|---|"]
        for name, f in m.model_fields.items():
            out.append(f"| `{f.alias or name}` | {_type_name(f.annotation)} | {_md_cell(_default(f))} | "
                       f"{_md_cell(_constraints(f))} | {_md_cell(f.description or '')} |")
        out.append("")
    return "\n".join(out) + "\n"


# ---- metrics and methods

def metrics_page() -> str:
    from editscope.metrics.edit_metrics import METRICS

    out = ["# Metrics", "", GENERATED_NOTE, "",
           "Every per-probe metric: its name and version (a stored value carries both), whether it is a rate or a "
           "mean, how the model is read (its protocol: teacher-forced log-probabilities, the greedy continuation, or "
           "the next-token distribution) and its definition. Aggregates carry a 95% interval and n: Wilson for "
           "rates, t for means, a cluster bootstrap over edits where there are several.", "",
           "| metric | kind | protocol | definition |", "|---|---|---|---|"]
    for name, m in METRICS.items():
        out.append(f"| `{name}` (v{m.version}) | {m.kind} | {m.protocol} | {_md_cell(m.description)} |")
    return "\n".join(out) + "\n"


def methods_page() -> str:
    from editscope.methods import list_methods

    out = ["# Edit methods", "", GENERATED_NOTE, "",
           "Every registered method (`method:` in a study file, `--method` on the command line). Hyperparameters "
           "are shown at their registry defaults; `editscope methods --arch ARCH --layers N` resolves the "
           "layer-dependent ones for a model.", "",
           "| method | family | kind | what it does / touches | requests | hyperparameters (defaults) |",
           "|---|---|---|---|---|---|"]
    for info in list_methods():
        hp = ", ".join(f"`{k}={v}`" for k, v in info["hparams"].items())
        if info["required"]:
            hp = "required: " + ", ".join(f"`{k}`" for k in info["required"]) + ("; " + hp if hp else "")
        requests = "one at a time" if info["one_at_a_time"] else "batch"
        if info["needs_subject"]:
            requests += ", needs subject"
        out.append(f"| `{info['name']}` | {_md_cell(info['family'])} | {_md_cell(info['kind'])} | "
                   f"{_md_cell(info['summary'])} | {requests} | {_md_cell(hp)} |")
    return "\n".join(out) + "\n"


# ---- the results store

def store_tables() -> dict[str, list[tuple[str, str]]]:
    """``{table or view: [(column, SQL type), ...]}`` of a new, empty results store."""
    from editscope.runner.store import FILENAME, ResultsStore

    with tempfile.TemporaryDirectory() as tmp:
        store = ResultsStore(Path(tmp) / FILENAME, create=True)
        try:
            names = [r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                                    "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]
            return {n: [(c[1], c[2] or "") for c in store.db.execute(f"PRAGMA table_info({n})")] for n in names}
        finally:
            store.close()


def store_page() -> str:
    from editscope.runner import store

    doc = (store.__doc__ or "").split("\n", 1)[1].strip()
    out = ["# Results store (SQLite)", "", GENERATED_NOTE, "",
           f"Format `{store.STORE_FORMAT}`; `results.sqlite` in every run folder (`editscope export` packs it "
           "as `.sqlite.xz`).", "", doc, ""]
    for name, cols in store_tables().items():
        out += [f"## `{name}`", "", "| column | SQL type |", "|---|---|", *[f"| `{c}` | {t or '-'} |" for c, t in cols], ""]
    return "\n".join(out) + "\n"


PAGES: dict[str, Callable[[], str]] = {
    "reference/cli.md": cli_page,
    "reference/study-yaml.md": study_yaml_page,
    "reference/metrics.md": metrics_page,
    "reference/methods.md": methods_page,
    "reference/store.md": store_page,
}


def on_files(files: Any, config: Any) -> Any:
    """Put freshly generated pages in the site in place of the committed copies (MkDocs >= 1.6)."""
    from mkdocs.structure.files import File

    for path, build in PAGES.items():
        committed = files.get_file_from_path(path)
        if committed is not None:
            files.remove(committed)
        files.append(File.generated(config, path, content=build()))
    return files


def write_pages(docs: Path = Path(__file__).resolve().parents[1]) -> list[Path]:
    """Rewrite the committed copies under ``docs``; returns the paths written."""
    out = []
    for path, build in PAGES.items():
        target = docs / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(build())
        out.append(target)
    return out


if __name__ == "__main__":
    for written in write_pages():
        print(written)
