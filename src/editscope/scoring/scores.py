"""Teacher-forced scores of continuations and next-token distributions; the vocabulary projection
is applied only at positions whose logits are needed, in chunks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..models.model import Model

from .forward import (PaddingSide, plan_batches, logits_from_hidden, LayerCache, sequences_key,
                      teacher_forced_hidden, SHARED_PREFIX_BATCH_TOKENS, SharedPrefix)
from .tokens import EncodedPair, encode_pairs, encode_prompts

LOGIT_CHUNK_ELEMENTS = 1 << 25  # positions x vocab per logits chunk (128 MiB in fp32)


@dataclass(frozen=True)
class ContinuationScore:
    """Teacher-forced score of one continuation.

    Attributes:
        token_ids: continuation token ids, length ``n_tokens``.
        token_logprobs: natural-log probability of each continuation token given everything before it.
        logprob: their sum, log P(continuation | prompt) in nats.
        argmax_ids: the model's top-1 token at each continuation position (teacher forced).
        greedy_match: ``argmax_ids == token_ids``, i.e. greedy decoding from the prompt produces
            exactly this continuation (whole target, no partial credit).
        first_logprobs: log-probabilities of the requested ``first_token_ids`` at the first
            continuation position (the next-token distribution after the prompt); empty if none asked.
        first_top_ids, first_top_logprobs: the ``first_top_k`` most likely next tokens there.
    """

    token_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...]
    logprob: float
    argmax_ids: tuple[int, ...]
    greedy_match: bool
    prompt_len: int
    first_logprobs: tuple[float, ...] = ()
    first_top_ids: tuple[int, ...] = ()
    first_top_logprobs: tuple[float, ...] = ()

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def mean_logprob(self) -> float:
        """Per-token average log-probability (nats/token)."""
        return self.logprob / len(self.token_ids)


@torch.inference_mode()
def score_continuations(
    model: Model,
    prompts: Sequence[str],
    continuations: Sequence[str],
    *,
    batch_size: int = 256,
    max_tokens: int = 2048,
    padding_side: PaddingSide = "right",
) -> list[ContinuationScore]:
    """Teacher-forced log P(continuation | prompt), per token and summed, for every pair.

    ``continuations[i]`` is scored verbatim (put the separator in it, e.g. ``Probe.continuation``).
    Returns one :class:`ContinuationScore` per pair, in input order.
    """
    pairs = encode_pairs(model, prompts, continuations)
    return score_encoded(model, pairs, batch_size=batch_size, max_tokens=max_tokens, padding_side=padding_side)


@torch.inference_mode()
def score_encoded(
    model: Model,
    pairs: Sequence[EncodedPair],
    *,
    batch_size: int = 256,
    max_tokens: int = 2048,
    padding_side: PaddingSide = "right",
    first_token_ids: Sequence[Sequence[int]] | None = None,
    first_top_k: int = 0,
    capture: LayerCache | None = None,
    resume: LayerCache | None = None,
) -> list[ContinuationScore]:
    """:func:`score_continuations` on already tokenized pairs (e.g. a model's own generations).

    ``first_token_ids[i]`` (optional) lists vocabulary ids whose log-probabilities at pair i's first
    continuation position are returned; ``first_top_k`` returns that position's top-k. Both read the
    next-token distribution after the prompt from the same pass (used for KL against a base model).
    ``capture``/``resume``: incremental evaluation through a :class:`LayerCache`.
    """
    for i, p in enumerate(pairs):
        if not p.prompt_ids or not p.cont_ids:
            raise ValueError(f"pairs[{i}] has an empty prompt or continuation")
    if first_token_ids is not None and len(first_token_ids) != len(pairs):
        raise ValueError(f"first_token_ids has {len(first_token_ids)} entries for {len(pairs)} pairs")
    seqs = [list(p.prompt_ids + p.cont_ids) for p in pairs]
    if capture is not None or resume is not None:
        key = sequences_key(seqs, batch_size, max_tokens, padding_side)
        if capture is not None:
            capture.key, capture.states = key, {}
        if resume is not None and resume.key != key:
            raise ValueError("resume= holds states of other pairs or batching; capture them on these pairs")
    prefix = None
    if capture is None and resume is None and padding_side == "right":
        prefix = SharedPrefix.of(model, seqs, min(len(p.prompt_ids) for p in pairs) - 1)
    shift = prefix.length if prefix is not None else 0
    seqs = [s[shift:] for s in seqs]
    results: list[ContinuationScore | None] = [None] * len(pairs)
    budget = max_tokens if prefix is None else max(max_tokens, SHARED_PREFIX_BATCH_TOKENS)
    for batch in plan_batches([len(s) + shift for s in seqs], batch_size, budget):
        hidden, starts = teacher_forced_hidden(model, [seqs[i] for i in batch], padding_side,
                                               capture=capture, resume=resume, batch_key=tuple(batch), prefix=prefix)
        rows, cols, targets, spans = [], [], [], []
        for b, i in enumerate(batch):
            p, c = len(pairs[i].prompt_ids), len(pairs[i].cont_ids)
            first = starts[b] + p - 1 - shift  # position whose output predicts the first continuation token
            rows += [b] * c
            cols += range(first, first + c)
            targets += pairs[i].cont_ids
            spans.append(c)
        rows_t, cols_t = torch.tensor(rows), torch.tensor(cols)
        target_t = torch.tensor(targets)
        firsts = [0]
        for c in spans[:-1]:
            firsts.append(firsts[-1] + c)
        wants = {f: i for f, i in zip(firsts, batch)
                 if first_top_k or (first_token_ids is not None and len(first_token_ids[i]))}
        extras: dict[int, dict] = {i: {} for i in batch}
        lp = torch.empty(len(rows))
        top = torch.empty(len(rows), dtype=torch.long)
        vocab = model.config.vocab_size
        step = max(1, LOGIT_CHUNK_ELEMENTS // vocab)  # bound the [positions, vocab] buffers
        for s in range(0, len(rows), step):
            logits = logits_from_hidden(model, hidden[rows_t[s:s + step], cols_t[s:s + step]])
            logp = torch.log_softmax(logits, dim=-1)
            lp[s:s + step] = logp.gather(-1, target_t[s:s + step, None].to(logp.device))[:, 0].cpu()
            top[s:s + step] = logits.argmax(-1).cpu()
            for f in (f for f in wants if s <= f < s + step):
                i, extra = wants[f], extras[wants[f]]
                if first_token_ids is not None and len(first_token_ids[i]):
                    ids_t = torch.tensor(list(first_token_ids[i]), device=logp.device)
                    extra["first_logprobs"] = tuple(logp[f - s, ids_t].tolist())
                if first_top_k:
                    v, k = logp[f - s].topk(first_top_k)
                    extra["first_top_ids"], extra["first_top_logprobs"] = tuple(k.tolist()), tuple(v.tolist())
        for i, c, offset in zip(batch, spans, firsts):
            tok_lp = tuple(lp[offset:offset + c].tolist())
            arg = tuple(top[offset:offset + c].tolist())
            results[i] = ContinuationScore(
                token_ids=pairs[i].cont_ids, token_logprobs=tok_lp, logprob=float(sum(tok_lp)),
                argmax_ids=arg, greedy_match=arg == pairs[i].cont_ids, prompt_len=len(pairs[i].prompt_ids),
                **extras[i],
            )
    return results  # type: ignore[return-value]


def iter_last_logits(
    model: Model,
    prompts: Sequence[str],
    *,
    batch_size: int = 256,
    max_tokens: int = 2048,
    padding_side: PaddingSide = "right",
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield ``(indices, logits[len(indices), V])`` of the next token after each prompt, batch by
    batch, so callers can reduce distributions (top-k, KL) without holding ``[n, V]`` at once."""
    seqs = encode_prompts(model, prompts)
    with torch.inference_mode():
        for batch in plan_batches([len(s) for s in seqs], batch_size, max_tokens):
            hidden, starts = teacher_forced_hidden(model, [seqs[i] for i in batch], padding_side)
            last = torch.tensor([starts[b] + len(seqs[i]) - 1 for b, i in enumerate(batch)])
            yield batch, logits_from_hidden(model, hidden[torch.arange(len(batch)), last])


def next_token_logprobs(model: Model, prompts: Sequence[str], **kwargs) -> torch.Tensor:
    """Log-probabilities of the next token after each prompt, ``[n, V]`` float32 on CPU.

    Memory is ``4 * n * V`` bytes (about 200 KB per prompt for a 49k vocabulary); for large probe
    sets use :func:`iter_last_logits` and reduce per batch.
    """
    out = torch.empty((len(prompts), 0))
    for batch, logits in iter_last_logits(model, prompts, **kwargs):
        if out.shape[1] == 0:
            out = torch.empty((len(prompts), logits.shape[-1]))
        out[torch.tensor(batch)] = torch.log_softmax(logits, -1).cpu()
    return out


def top_k_next_tokens(model: Model, prompts: Sequence[str], k: int = 5, **kwargs) -> list[list[tuple[str, float]]]:
    """The ``k`` most likely next tokens after each prompt as ``(token text, probability)``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out: list[list[tuple[str, float]]] = [[] for _ in prompts]
    tok = model.tokenizer
    for batch, logits in iter_last_logits(model, prompts, **kwargs):
        probs, ids = torch.softmax(logits, -1).topk(k, dim=-1)
        for b, i in enumerate(batch):
            out[i] = [(tok.decode([t]), float(p)) for t, p in zip(ids[b].tolist(), probs[b].tolist())]
    return out
