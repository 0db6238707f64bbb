"""Batched scoring of a causal LM: continuation log-probabilities, greedy continuations, next-token
distributions, in four steps: :mod:`.tokens` (the only place that tokenizes prompt + continuation
pairs), :mod:`.forward` (batching, padding, the forward pass, kept hidden states), :mod:`.scores`
(teacher-forced scores, next-token distributions) and :mod:`.decoding` (greedy decoding, sampling).
The training batches edit methods optimise are in :mod:`editscope.methods.training`."""

from __future__ import annotations

from .tokens import (check_length, check_text, encode_pairs, encode_prompts, EncodedPair, token_index_at,
                     tokenize_prompts)
from .forward import (body_forward, forward_until, grouped_query_sdpa, keep_layer_cache, kv_cache_of, LayerCache,
                      logits_from_hidden, pad_batch, pad_id, PaddingSide, plan_batches, plan_layer_caches,
                      sequences_key, SHARED_PREFIX_BATCH_TOKENS, SHARED_PREFIX_MIN, SharedPrefix,
                      teacher_forced_hidden)
from .scores import (ContinuationScore, iter_last_logits, LOGIT_CHUNK_ELEMENTS, next_token_logprobs,
                     score_continuations, score_encoded, top_k_next_tokens)
from .decoding import (continuation_text, Generation, greedy_continuations, sample_continuations)

__all__ = [
    "body_forward", "check_length", "check_text", "continuation_text", "ContinuationScore", "encode_pairs",
    "encode_prompts", "EncodedPair", "forward_until", "Generation", "greedy_continuations", "grouped_query_sdpa",
    "iter_last_logits", "keep_layer_cache", "kv_cache_of", "LayerCache", "LOGIT_CHUNK_ELEMENTS",
    "logits_from_hidden", "next_token_logprobs", "pad_batch", "pad_id", "PaddingSide", "plan_batches",
    "plan_layer_caches", "sample_continuations", "score_continuations", "score_encoded", "sequences_key",
    "SHARED_PREFIX_BATCH_TOKENS", "SHARED_PREFIX_MIN", "SharedPrefix", "teacher_forced_hidden", "token_index_at",
    "tokenize_prompts", "top_k_next_tokens"
]
