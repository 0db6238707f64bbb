"""A report table as data: header, rows of (text, bold) cells, optional column groups; rendered as
Markdown and HTML by :mod:`editscope.report.render` and as LaTeX by :mod:`editscope.report.tex`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    name: str
    caption: str
    header: list[str]
    rows: list[list[tuple[str, bool]]]  # (text, bold)
    #: grouped headers for typeset tables: (group label, number of columns) over the columns after
    #: the first, in order ("" = no group), and the short header under each group; empty: none
    groups: list[tuple[str, int]] = field(default_factory=list)
    sub: list[str] = field(default_factory=list)


__all__ = ["Table"]
