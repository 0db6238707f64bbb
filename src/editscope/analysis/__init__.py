"""Analyses of a model and its edits: causal tracing (:mod:`editscope.analysis.tracing`)."""

from .trace_average import AverageEffect, average_indirect_effect
from .tracing import TraceError, TraceResult, embedding_std, trace

__all__ = ["AverageEffect", "TraceError", "TraceResult", "average_indirect_effect", "embedding_std", "trace"]
