"""The paper draft: LaTeX section templates filled from a stored study, bibliography, compile
(``editscope paper``)."""

from ..report.formats.latex_build import BuildReport, PaperBuildError, compile_paper
from .draft import PaperDraft, PaperError, write_paper

__all__ = ["BuildReport", "PaperBuildError", "PaperDraft", "PaperError", "compile_paper", "write_paper"]
