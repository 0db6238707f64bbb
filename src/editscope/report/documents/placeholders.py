"""One template engine for write-ups, paper drafts and trace reports.

A template is text with ``{{kind}}`` or ``{{kind:args}}`` placeholders. A :class:`Placeholders`
set maps each kind to a handler, registered next to the data it reads (study placeholders in
:mod:`editscope.report.documents.document`, :mod:`~editscope.report.analyses.attribution`,
:mod:`~editscope.report.analyses.collapse`, :mod:`~editscope.report.analyses.strength`,
:mod:`~editscope.report.analyses.replication`; trace placeholders in
:mod:`editscope.analysis.trace_report`). A handler returns text, a :class:`Tab` (a table) or a
:class:`Raw` (already written); the caller's ``write`` turns that into the document's format
(Markdown, or LaTeX with escaping, :mod:`editscope.paper.draft`). Parsing, dispatch and the error
for an unknown kind or a malformed placeholder are the same for every template.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from ...errors import InputError
from ..data.results import StudyResults
from ..formats.table import Table

#: ``{{kind}}`` or ``{{kind:args}}``; kinds are lower case
PLACEHOLDER = re.compile(r"\{\{([a-z][a-z0-9_]*)(?::([^}]*))?\}\}")

Ctx = TypeVar("Ctx")


@dataclass(frozen=True)
class Tab:
    """A table to write (None: nothing to show in this run, written as the sink decides)."""

    table: Table | None


@dataclass(frozen=True)
class Raw:
    """Text already in the document's format (a figure reference, a companion study's filling)."""

    text: str


Filled = str | Tab | Raw
Handler = Callable[[Any, str], Filled]


@dataclass
class Placeholders(Generic[Ctx]):
    """The placeholder kinds one kind of template understands.

    ``error``: the exception raised for an unknown or malformed placeholder (an
    :class:`~editscope.errors.InputError`, so the CLI reports it in one line).
    """

    name: str
    error: type[Exception]
    handlers: dict[str, Handler] = field(default_factory=dict)
    usages: dict[str, str] = field(default_factory=dict)

    def register(self, kind: str, usage: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator: ``handler(ctx, args) -> str | Tab | Raw`` fills ``{{kind:args}}``; ``usage`` is
        the placeholder's written form (``{{cell:METHOD:COLUMN}}``) for error messages."""
        if not PLACEHOLDER.fullmatch("{{" + kind + "}}"):
            raise ValueError(f"placeholder kind {kind!r}: use lower case letters, digits and _")

        def add(fn: Handler) -> Handler:
            if kind in self.handlers:
                raise ValueError(f"{self.name} placeholder {kind!r} is registered twice")
            self.handlers[kind] = fn
            if usage is not None:
                self.usages[kind] = usage
            return fn

        return add

    def usage_error(self, kind: str, args: str, usage: str | None = None) -> Exception:
        """``{{kind:args}}: write USAGE`` (the one message for a malformed placeholder)."""
        return self.error(f"{{{{{kind}:{args}}}}}: write {usage or self.usages.get(kind, '{{' + kind + ':...}}')}")

    def fill_one(self, ctx: Ctx, kind: str, args: str) -> Filled:
        handler = self.handlers.get(kind)
        if handler is None:
            raise self.error(f"unknown placeholder {'{{' + kind + (':' + args if args else '') + '}}'!r}")
        return handler(ctx, args)

    def fill(self, template: str, ctx: Ctx, write: Callable[[Filled], str]) -> str:
        """Every placeholder of ``template`` replaced by ``write(handler(ctx, args))``."""
        return PLACEHOLDER.sub(lambda m: write(self.fill_one(ctx, m.group(1), m.group(2) or "")), template)


class DocumentError(InputError, ValueError):
    """A template placeholder that the run cannot fill."""


class Sink(Protocol):
    """How a filled placeholder is written in the document's format (Markdown in
    :mod:`editscope.report.documents.document`; LaTeX in :mod:`editscope.paper.draft`): scalar text, tables
    and figures."""

    def text(self, s: str) -> str: ...

    def table(self, t: Table | None, res: StudyResults) -> str: ...

    def figure(self, name: str, paths: list[Path], res: StudyResults) -> str: ...


@dataclass
class StudyContext:
    """What a study placeholder reads: the stored run, its folder as given, the output format, the
    figures drawn for the template and the companion studies it reads (by name)."""

    res: StudyResults
    run_dir: str
    sink: Sink
    figures: Mapping[str, list[Path]]
    others: Mapping[str, StudyResults]

    def write(self, out: Filled) -> str:
        if isinstance(out, Tab):
            return self.sink.table(out.table, self.res)
        return out.text if isinstance(out, Raw) else self.sink.text(out)

    def method(self, kind: str, args: str, method: str, base: bool = True) -> str:
        """``method`` if the run has it (or it is ``base`` and ``base`` is allowed), else the error."""
        if not ((base and method == "base") or method in self.res.methods):
            raise DocumentError(f"{{{{{kind}:{args}}}}}: no method {method!r} in this run")
        return method


#: the placeholders of study write-ups and paper drafts (see :mod:`editscope.report.documents.document`)
STUDY: Placeholders[StudyContext] = Placeholders("write-up", DocumentError)

#: ``{{table:NAME}}``: name -> the table of a stored run (None: nothing to show in this run)
TABLES: dict[str, Callable[[StudyResults], Table | None]] = {}


def register_table(name: str) -> Callable[[Callable[[StudyResults], Table | None]], Callable[[StudyResults], Table | None]]:
    """Decorator: make a table available to write-ups as ``{{table:NAME}}``."""
    def add(fn: Callable[[StudyResults], Table | None]) -> Callable[[StudyResults], Table | None]:
        if name in TABLES:
            raise ValueError(f"table {name!r} is registered twice")
        TABLES[name] = fn
        return fn
    return add


def placeholders_in(template: str) -> Iterator[tuple[str, str]]:
    """``(kind, args)`` of every placeholder in ``template``, in order."""
    for m in PLACEHOLDER.finditer(template):
        yield m.group(1), m.group(2) or ""


__all__ = ["DocumentError", "PLACEHOLDER", "STUDY", "Filled", "Placeholders", "Raw", "Sink", "StudyContext", "TABLES", "Tab",
           "placeholders_in", "register_table"]
