"""Greedy decoding and sampling, batched with a KV cache (left padding)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..models.model import Model

from .forward import (plan_batches, pad_batch, pad_id, logits_from_hidden, body_forward, kv_cache_of,
                      SHARED_PREFIX_BATCH_TOKENS, SharedPrefix)
from .tokens import check_length, encode_prompts


@dataclass(frozen=True)
class Generation:
    """A greedy continuation: ``text`` is exactly what follows the (right-stripped) prompt."""

    token_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...]
    text: str
    stopped_at_eos: bool


def continuation_text(model: Model, prompt_ids: list[int], gen_ids: list[int]) -> str:
    tok = model.tokenizer
    # Decoding the generated ids alone loses a leading space with SentencePiece; decode in context.
    full = tok.decode(prompt_ids + gen_ids)
    pre = tok.decode(prompt_ids)
    return full[len(pre):] if full.startswith(pre) else tok.decode(gen_ids)


@torch.inference_mode()
def greedy_continuations(
    model: Model,
    prompts: Sequence[str],
    max_new_tokens: int = 8,
    *,
    batch_size: int = 256,
    max_tokens: int = 8192,
    stop_at_eos: bool = True,
) -> list[Generation]:
    """Greedy (argmax) continuation of up to ``max_new_tokens`` tokens for every prompt.

    Batches are left-padded and decoded with a KV cache; a row stops at end-of-sequence when
    ``stop_at_eos`` (the eos token is not included in the result).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    seqs = encode_prompts(model, prompts)
    for i, s in enumerate(seqs):
        check_length(model, len(s) + max_new_tokens, "prompt", i)
    eos = model.tokenizer.eos_token_id
    results: list[Generation | None] = [None] * len(seqs)
    prefix = SharedPrefix.of(model, seqs, min(len(s) for s in seqs) - 1)
    shift = prefix.length if prefix is not None else 0
    budget = max_tokens if prefix is None else max(max_tokens, SHARED_PREFIX_BATCH_TOKENS)
    for batch in plan_batches([len(s) + max_new_tokens for s in seqs], batch_size, budget):
        ids, mask, pos, _ = pad_batch([seqs[i][shift:] for i in batch], pad_id(model), "left", model.device)
        kv = None
        if prefix is not None:
            kv, pos = prefix.for_batch(len(batch)), pos + shift
            mask = torch.cat([torch.ones(len(batch), shift, dtype=mask.dtype, device=mask.device), mask], dim=1)
        out = body_forward(model, ids, mask, pos, kv_cache=kv, use_cache=True)
        cache, h = kv_cache_of(out), out.last_hidden_state[:, -1]
        gen = [[] for _ in batch]
        lps = [[] for _ in batch]
        done = torch.zeros(len(batch), dtype=torch.bool)
        eos_hit = [False] * len(batch)
        for step in range(max_new_tokens):
            logp = torch.log_softmax(logits_from_hidden(model, h), -1)
            nxt = logp.argmax(-1)
            chosen = logp.gather(-1, nxt[:, None])[:, 0].cpu()
            for b, t in enumerate(nxt.tolist()):
                if done[b]:
                    continue
                if stop_at_eos and eos is not None and t == eos:
                    done[b] = True
                    eos_hit[b] = True
                    continue
                gen[b].append(t)
                lps[b].append(float(chosen[b]))
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos[:, -1:] + 1
            out = body_forward(model, nxt[:, None], mask, pos, kv_cache=cache, use_cache=True)
            cache, h = kv_cache_of(out), out.last_hidden_state[:, -1]
        for b, i in enumerate(batch):
            results[i] = Generation(
                token_ids=tuple(gen[b]), token_logprobs=tuple(lps[b]),
                text=continuation_text(model, seqs[i], gen[b]), stopped_at_eos=eos_hit[b],
            )
    return results  # type: ignore[return-value]


def sample_continuations(model: Model, prompts: Sequence[str], n_per_prompt: int, max_new_tokens: int, *,
                         top_k: int = 5, seed: int = 0) -> list[str]:
    """``n_per_prompt`` top-k sampled continuations of each prompt (texts including the prompt),
    reproducible for a given ``seed`` (the global RNG state is restored afterwards)."""
    out = []
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(seed)
        for p in prompts:
            ids = torch.tensor([encode_prompts(model, [p])[0]] * n_per_prompt, device=model.device)
            gen = model.hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=top_k,
                                    max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                    pad_token_id=pad_id(model))
            out += model.tokenizer.batch_decode(gen, skip_special_tokens=True)
    return out
