"""editscope: edit what a language model knows, and measure everything else the edit changed."""

from . import suites
from .evaluation import EvalResult, evaluate
from .methods import EditFailed, EditHandle, NoOpEdit, apply_edit, list_methods, load_edit, prepare_edits
from .models import ArchSpec, Model, load_model
from .models import derive as _derive  # noqa: F401  (registers the derived-model recipes with load_model)
from .probes import list_suites
from .requests import EditRequest, Probe, ProbeSet
from .scoring import (
    ContinuationScore,
    Generation,
    greedy_continuations,
    next_token_logprobs,
    score_continuations,
    top_k_next_tokens,
)
from .version import __version__


def __getattr__(name: str):
    if name == "mine":  # hard-case mining runs a study: imported on first use
        from .mining import mine  # import cost: the runner and the reports (matplotlib) load with it

        return mine
    if name == "trace":  # causal tracing (editscope.analysis.tracing)
        from .analysis.tracing import trace  # import cost: loaded by the few who trace

        return trace
    raise AttributeError(f"module 'editscope' has no attribute {name!r}")

__all__ = [
    "ArchSpec", "ContinuationScore", "EditFailed", "EditHandle", "NoOpEdit", "EditRequest", "apply_edit", "list_methods", "prepare_edits",
    "load_edit", "EvalResult", "evaluate", "list_suites", "suites", "Generation", "Model", "Probe", "ProbeSet",
    "greedy_continuations", "load_model", "next_token_logprobs", "score_continuations",
    "top_k_next_tokens", "mine", "trace", "__version__",
]
