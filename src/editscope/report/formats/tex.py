"""LaTeX text and tables in the house style: escaping, and booktabs tables with no vertical rules,
``@{}`` edges, ``\\cmidrule`` column groups, ``\\textsc`` headers, the best value in ``{\\bf ...}``,
intervals set under their value, and a width that shrinks to the line only when the table is wider.
"""

from __future__ import annotations

import re

from .table import Table

_TEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                "<": r"\textless{}", ">": r"\textgreater{}"}


def tex_escape(s: str) -> str:
    """Text safe in LaTeX's text mode: every special character (``& % $ # _ { } ~ ^ \\ < >``)
    written so that it prints as itself."""
    return "".join(_TEX_SPECIAL.get(c, c) for c in s)


#: "value [low, high]" with an optional tail, e.g. "0.972 [0.951, 0.985]" or "12 (1.2% [0.6%, 2.1%])"
_INTERVAL = re.compile(r"^(.*?)\s*(\[[^\]]*\])(.*)$")


def _cell(text: str, bold: bool) -> str:
    """One cell: the value (bold when best) with its interval set small underneath."""
    m = _INTERVAL.match(text)
    if m is None or not m.group(1):
        value = tex_escape(text)
        return rf"{{\bf {value}}}" if bold else value
    value, iv, tail = (tex_escape(g) for g in m.groups())
    value = rf"{{\bf {value}}}" if bold else value
    # a top-aligned inner tabular keeps the value on the row's baseline, the interval under it
    return rf"\begin{{tabular}}[t]{{@{{}}c@{{}}}}{value}\\[-2pt]{{\tiny {iv}{tail}}}\end{{tabular}}"


def _numeric(rows: list[list[tuple[str, bool]]], i: int) -> bool:
    return all(re.match(r"^[-+]?[\d.]+(e[-+]?\d+)?\b", r[i][0]) or r[i][0] in ("-", "never") for r in rows if i < len(r))


def _header(t: Table) -> list[str]:
    r"""One header line, or with groups three: the group labels (``\multicolumn``), their
    ``\cmidrule``s, and the short headers under them."""
    sc = lambda h: rf"\textsc{{{tex_escape(h)}}}" if h else ""  # noqa: E731
    if not t.groups:
        return [" & ".join(sc(h) for h in t.header) + r" \\"]
    top, rules, col = [""], [], 2
    for label, span in t.groups:
        if label:
            top.append(rf"\multicolumn{{{span}}}{{c}}{{{sc(label)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + span - 1}}}")
        else:
            top += [""] * span
        col += span
    subs = t.sub or t.header[1:]
    return [" & ".join(top) + r" \\", " ".join(rules), " & ".join([sc(t.header[0]), *(sc(x) for x in subs)]) + r" \\"]


def tabular(t: Table, rows: list[list[tuple[str, bool]]] | None = None) -> str:
    """The ``tabular`` of ``t`` (or of some of its rows): booktabs, ``@{}`` edges, first column
    left-aligned, numeric columns centred, grouped headers with ``\\cmidrule``."""
    rows = t.rows if rows is None else rows
    cols = "l" + "".join("c" if _numeric(t.rows, i) else "l" for i in range(1, len(t.header)))
    lines = [rf"\begin{{tabular}}{{@{{}}{cols}@{{}}}}", r"\toprule", *_header(t), r"\midrule"]
    for row in rows:
        lines.append(" & ".join(_cell(x, b) if i else (rf"{{\bf {tex_escape(x)}}}" if b else tex_escape(x))
                                for i, (x, b) in enumerate(row)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def table_float(t: Table, label: str, *, caption: str | None = None, rows: list[list[tuple[str, bool]]] | None = None,
                placement: str = "t") -> str:
    """A ``table`` float: the caption above, the tabular scaled down to the line width only when it
    is wider (never up), and ``\\label{label}``."""
    cap = tex_escape(caption if caption is not None else t.caption)
    return "\n".join([
        rf"\begin{{table}}[{placement}]", r"\centering", r"\footnotesize", rf"\caption{{{cap}}}", rf"\label{{{label}}}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%", tabular(t, rows) + "}",
        r"\end{table}", ""])


__all__ = ["table_float", "tabular", "tex_escape"]
