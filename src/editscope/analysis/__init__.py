"""Analyses of a model and its edits: causal tracing (:mod:`editscope.analysis.tracing`)."""

from .tracing import AverageEffect, TraceError, TraceResult, average_indirect_effect, embedding_std, trace

__all__ = ["AverageEffect", "TraceError", "TraceResult", "average_indirect_effect", "embedding_std", "trace"]
