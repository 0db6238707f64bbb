"""Reports of a run folder: tables with intervals, paired tests, plots; Markdown, HTML, LaTeX."""

from .formats.render import FORMATS, compile_latex, write_report
from .data.results import StudyResults, load_results

__all__ = ["FORMATS", "StudyResults", "compile_latex", "load_results", "write_report"]
