r"""The paper's command files: ``commands/math.tex`` (notation and reference macros),
``commands/general.tex`` (formatting macros) and ``commands/macros.tex`` (the project's terms: one
``\textsc{...}\xspace`` macro per method and dataset the study uses)."""

from __future__ import annotations

import re

MATH = r"""% Notation and references (editscope paper draft)
\newcommand{\figref}[1]{figure~\ref{#1}}
\newcommand{\Figref}[1]{Figure~\ref{#1}}
\newcommand{\secref}[1]{section~\ref{#1}}
\newcommand{\Secref}[1]{Section~\ref{#1}}
\newcommand{\tabref}[1]{table~\ref{#1}}
\newcommand{\Tabref}[1]{Table~\ref{#1}}
\newcommand{\appref}[1]{appendix~\ref{#1}}
\newcommand{\Appref}[1]{Appendix~\ref{#1}}
\newcommand{\R}{\mathbb{R}}
\newcommand{\dW}{\Delta W}
\newcommand{\ppl}{\mathrm{PPL}}
\newcommand{\KL}{\mathrm{KL}}
\DeclareMathOperator*{\argmax}{arg\,max}
"""

GENERAL = r"""% Formatting (editscope paper draft)
\usepackage{xcolor}
\usepackage{xspace}
\IfFileExists{enumitem.sty}{\usepackage{enumitem}}{}% else the style's compact fallback
\newcommand{\para}[1]{\paragraph{#1}}
\newcommand{\increase}{\textcolor{green!55!black}{$\uparrow$}\xspace}
\newcommand{\decrease}{\textcolor{red!75!black}{$\downarrow$}\xspace}
"""

#: display names of the datasets, corpora and tasks: macro -> small-caps text
DATASETS = {"counterfact": "CounterFact", "zsre": "zsRE", "mquake": "MQuAKE", "meppl": "ME-PPL",
            "wikitext": "WikiText-2", "piqa": "PIQA", "hellaswag": "HellaSwag", "lambada": "LAMBADA",
            "sstTwo": "SST-2"}

_DIGITS = ["Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine"]
#: LaTeX kernel, package and math names a method label must not redefine
_TAKEN = {"and", "bf", "it", "rm", "sc", "sf", "sl", "tt", "em", "ss", "aa", "ae", "oe", "dag", "ddag", "lq", "rq",
          "par", "ref", "label", "item", "cite", "url", "para", "ppl", "dW", "KL", "R", "to", "in", "on", "ge", "le",
          "ne", "ni", "top", "bot", "max", "min", "exp", "log", "ln", "det", "dim", "sin", "cos", "tan", "arg", "lim",
          "sup", "inf", "deg", "hom", "ker", "Pr", "gcd", "mod", "bmod", "pmod", "sum", "prod", "int", "oint",
          "base", "line", "vector", "circle", "oval", "frame", "put", "value", "height", "width", "depth", "space",
          "quad", "qquad", "enspace", "thinspace", "hline", "cline", "vline", "hfill", "vfill", "fill", "break",
          "newline", "linebreak", "title", "author", "date", "thanks", "today", "appendix", "part", "chapter",
          "section", "caption", "footnote", "index", "glossary", "table", "figure", "tabular", "array", "center",
          "quote", "verse", "small", "large", "Large", "LARGE", "huge", "Huge", "tiny", "normalsize", "footnotesize",
          "scriptsize", "textsc", "emph", "strut", "mbox", "fbox", "hbox", "vbox", "box", "raise", "lower",
          "increase", "decrease", "figref", "Figref", "secref", "Secref", "tabref", "Tabref", "appref", "Appref",
          "bigskip", "medskip", "smallskip", "copyright", "pounds", "S", "P", "L", "O", "i", "j", "l", "o",
          "c", "d", "b", "t", "u", "v", "H", "k", "r", "wd", "ht", "dp", "advance", "count", "dimen", "skip",
          "toks", "the", "relax", "let", "def", "edef", "gdef", "xdef", "if", "fi", "or", "else", "loop", "repeat",
          "end", "begin", "document", "input", "include", "bye", "over", "atop", "choose", "brace", "brack",
          "above", "left", "right", "middle", "big", "Big", "bigg", "Bigg", "not", "neq", "lnot", "land", "lor"}


def macro_name(label: str) -> str:
    """A method label as a macro name: letters kept, digits spelled out (``ft-l4`` -> ``ftlFour``),
    ``m`` prefixed where LaTeX or these command files already use the name (``sc`` -> ``msc``)."""
    name = "".join(_DIGITS[int(c)] if c.isdigit() else c for c in label if c.isalnum())
    name = re.sub(r"[^A-Za-z]", "", name) or "method"
    return f"m{name}" if name in _TAKEN else name


def project_macros(methods: list[str], extra: str = "") -> str:
    """commands/macros.tex: ``\\<label>`` -> ``\\textsc{<label>}\\xspace`` for every method label, the
    dataset macros (``\\counterfact`` ...), then the template's own ``extra`` macros."""
    lines = ["% Project terms: methods and datasets (editscope paper draft)"]
    seen: dict[str, str] = {}
    for label in methods:
        name = macro_name(label)
        if name in seen and seen[name] != label:
            name = f"{name}{_DIGITS[len([v for v in seen if v.startswith(name)]) % 10]}"
        seen[name] = label
        text = label.replace("_", r"\_")
        lines.append(rf"\newcommand{{\{name}}}{{\textsc{{{text}}}\xspace}}")
    for name, text in DATASETS.items():
        lines.append(rf"\newcommand{{\{name}}}{{\textsc{{{text}}}\xspace}}")
    if extra.strip():
        lines += ["% the template's own macros", extra.strip()]
    return "\n".join(lines) + "\n"


__all__ = ["DATASETS", "GENERAL", "MATH", "macro_name", "project_macros"]
