"""Metrics: per-probe edit metrics, perplexity (with the collapse test), fluency, downstream tasks."""

from .downstream import (
    TASKS,
    DataFormatError,
    LoglikelihoodResult,
    MCResult,
    TaskResult,
    load_task,
    multiple_choice,
    run_task,
    target_loglikelihood,
)
from .edit_metrics import METRICS, Metric, coarse_kl, says, summarize
from .fluency import fluency, ngram_entropy
from ..data.corpora import CORPORA, load_corpus
from .perplexity import PerplexityResult, is_collapsed, perplexity

__all__ = [
    "METRICS", "Metric", "coarse_kl", "fluency", "ngram_entropy", "says", "summarize",
    "CORPORA", "TASKS", "DataFormatError", "LoglikelihoodResult", "MCResult", "PerplexityResult",
    "TaskResult", "is_collapsed", "load_corpus", "load_task", "multiple_choice", "perplexity",
    "run_task", "target_loglikelihood",
]
