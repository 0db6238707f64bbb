"""A report table as data: header, rows of (text, bold) cells, optional column groups; rendered as
Markdown and HTML by :mod:`editscope.report.formats.render` and as LaTeX by :mod:`editscope.report.formats.tex`;
and how a number is written in a cell (``value [low, high]``, p-values, counts with rates)."""

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


def fmt_p(p: float) -> str:
    """A p-value with two significant digits; one that underflowed to 0 is shown as ``<1e-300``."""
    return "<1e-300" if p == 0 else f"{p:.2g}"


def fmt_cell(cell, interval: bool = True) -> str:
    """A cell as ``value [low, high]`` (one decimal above 10, else three); ``-`` for None."""
    if cell is None:
        return "-"
    digits = 1 if abs(cell.value) > 10 else 3  # perplexities and the like
    value = f"{cell.value:.{digits}f}"
    if not interval or cell.n <= 1 or cell.low == cell.high:  # one measurement: no interval to show
        return value
    return f"{value} [{cell.low:.{digits}f}, {cell.high:.{digits}f}]"


def count_with_rate(count: int | None, iv) -> str:
    """``count (rate [low, high])`` as percentages; ``-`` when there is no count."""
    return "-" if count is None else f"{count} ({iv.value:.1%} [{iv.low:.1%}, {iv.high:.1%}])"


__all__ = ["Table", "count_with_rate", "fmt_cell", "fmt_p"]
