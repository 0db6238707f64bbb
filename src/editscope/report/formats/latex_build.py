"""Compile a LaTeX document (a paper draft, a report bundle): ``pdflatex main && bibtex main && pdflatex main && pdflatex main``,
non-interactive; a LaTeX error comes back with its file, line and log excerpt, and the final log is
checked for undefined references and citations and for overfull boxes (tables and text)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InputError


class PaperBuildError(InputError, RuntimeError):
    """LaTeX or BibTeX failed; the message names the file and line and shows the log excerpt."""


@dataclass
class BuildReport:
    """What the final pass left: the PDF and every warning a reader would notice."""

    pdf: Path
    undefined_references: list[str] = field(default_factory=list)
    undefined_citations: list[str] = field(default_factory=list)
    overfull_tables: list[str] = field(default_factory=list)  # "12.3pt too wide in alignment at lines 5--20"
    overfull_text: list[str] = field(default_factory=list)
    bibtex_warnings: list[str] = field(default_factory=list)
    too_large_floats: list[str] = field(default_factory=list)  # "613.5pt" taller than the page

    @property
    def clean(self) -> bool:
        """No undefined reference or citation, no overfull table and no float taller than the page."""
        return not (self.undefined_references or self.undefined_citations or self.overfull_tables
                    or self.too_large_floats)


_ERROR = re.compile(r"^(\.?/?[^:\s]+\.(?:tex|sty|cls|bbl)):(\d+): (.*)$", re.M)


def latex_error(log: str) -> str:
    """The first error of a pdflatex log (run with ``-file-line-error``): ``file:line: message`` and
    the lines after it (LaTeX's ``l.NN`` context), or the log's tail when no such line is found."""
    m = _ERROR.search(log)
    if m is None:
        return log[-1500:]
    tail = log[m.start():].splitlines()[:8]
    return "\n".join(tail)


def _run(cmd: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, errors="replace")


def _warnings(log: str) -> tuple[list[str], list[str], list[str], list[str]]:
    refs = re.findall(r"LaTeX Warning: Reference `([^']+)' on page", log)
    cites = re.findall(r"(?:LaTeX|Package natbib) Warning: Citation `([^']+)' on page", log)
    tables, text = [], []
    for m in re.finditer(r"Overfull \\hbox \(([\d.]+pt) too wide\) (in alignment|in paragraph|detected) at lines? ([\d-]+)", log):
        (tables if m.group(2) == "in alignment" else text).append(f"{m.group(1)} too wide {m.group(2)} at lines {m.group(3)}")
    return sorted(set(refs)), sorted(set(cites)), tables, text


def compile_paper(main: str | Path, timeout: int = 300, bibtex: bool = True) -> BuildReport:
    """Build ``main.tex`` in its folder: pdflatex, bibtex, pdflatex twice (``bibtex=False``, a
    document without a bibliography: pdflatex twice). Raises :class:`PaperBuildError` (file, line,
    log excerpt) when LaTeX or BibTeX fails, or when pdflatex/bibtex is not installed (with the
    Debian packages that provide them)."""
    main = Path(main)
    tools = {name: shutil.which(name) for name in ("pdflatex", "bibtex") if bibtex or name == "pdflatex"}
    missing = [n for n, p in tools.items() if p is None]
    if missing:
        raise PaperBuildError(f"{', '.join(missing)} not found; install texlive-latex-recommended and "
                              "texlive-fonts-recommended (apt-get install texlive-latex-recommended texlive-fonts-recommended)")
    latex = [tools["pdflatex"], "-interaction=nonstopmode", "-halt-on-error", "-file-line-error", main.stem]
    steps = [latex, [tools["bibtex"], main.stem], latex, latex] if bibtex else [latex, latex]
    passes = 0
    for cmd in steps:
        p = _run(cmd, main.parent, timeout)
        if cmd[0] == tools.get("bibtex"):
            if p.returncode >= 2:  # 1: warnings only
                raise PaperBuildError(f"bibtex failed on {main.stem}.aux:\n{p.stdout[-1500:]}")
            continue
        passes += 1
        if p.returncode != 0:
            log_path = main.with_suffix(".log")
            log = log_path.read_text(errors="replace") if log_path.exists() else p.stdout
            raise PaperBuildError(f"pdflatex failed (pass {passes} of {len(steps) - bibtex}) in {main.parent}:\n"
                                  f"{latex_error(log)}")
    log = main.with_suffix(".log").read_text(errors="replace")
    refs, cites, tables, text = _warnings(log)
    blg = main.with_suffix(".blg")
    bib_warn = re.findall(r"^Warning--(.*)$", blg.read_text(errors="replace"), re.M) if blg.exists() else []
    tall = [f"{h}pt" for h in re.findall(r"Float too large for page by ([\d.]+)pt", log)]
    return BuildReport(main.with_suffix(".pdf"), refs, cites, tables, text, bib_warn, tall)


__all__ = ["BuildReport", "PaperBuildError", "compile_paper", "latex_error"]
