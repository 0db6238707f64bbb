"""Batched scoring of a causal LM: continuation log-probabilities, greedy continuations, next-token
distributions. This is the only module that tokenizes prompt + continuation pairs.

Tokenization rule (docs/architecture.md): ``prompt + continuation`` is tokenized as one string; the
continuation's tokens are those that start at or after the end of the prompt with its trailing
whitespace removed (so that whitespace moves into the continuation). If a token straddles that
boundary, the pair falls back to tokenizing the stripped prompt and the rest separately
(``EncodedPair.exact`` is then False). Prompts for generation and next-token distributions are
right-stripped the same way, so every function sees the same prompt tokens.

Batching: sequences are sorted by length and packed into batches of at most ``batch_size``
sequences and ``max_tokens`` padded tokens (default 2048: on a 2-core CPU, matmuls of 1-2k rows run
closest to the machine's peak; fewer rows leave it memory-bound, more spill the caches); attention masks hide padding and position ids count
only real tokens, so results do not depend on batch composition or padding side (tested to 1e-4).
The vocabulary projection is applied only at positions whose logits are needed.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import inspect
import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from .hooks import StopForward, capture_input, replace_input, skip_modules, stop_after
from .interventions import has_input_interventions, installed, transform_prompt
from .models.model import Model
from .models.state import fingerprint_of, tensor_digests

PaddingSide = str  # "left" | "right"
_LOGIT_CHUNK_ELEMENTS = 1 << 25  # positions x vocab per logits chunk (128 MiB in fp32)


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one prompt/continuation pair; ``exact`` is False for the straddle fallback."""

    prompt_ids: tuple[int, ...]
    cont_ids: tuple[int, ...]
    exact: bool = True


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


@dataclass(frozen=True)
class Generation:
    """A greedy continuation: ``text`` is exactly what follows the (right-stripped) prompt."""

    token_ids: tuple[int, ...]
    token_logprobs: tuple[float, ...]
    text: str
    stopped_at_eos: bool


def _check_text(value, field: str, i: int) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field}[{i}] must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{field}[{i}] is empty; every {field} needs non-blank text")
    return value


def _check_length(model: Model, n: int, field: str, i: int) -> None:
    limit = model.max_length
    if limit is not None and n > limit:
        raise ValueError(
            f"{field}[{i}] is {n} tokens long; the model's context is {limit} tokens. "
            f"Shorten the {field} (or use a model with a longer context)."
        )


def _strip_trailing_specials(ids: list[int], special: list[int]) -> list[int]:
    end = len(ids)
    while end > 1 and special[end - 1]:
        end -= 1
    return ids[:end]


def encode_prompts(model: Model, prompts: Sequence[str], field: str = "prompt") -> list[list[int]]:
    """Token ids of each right-stripped prompt (with the tokenizer's usual leading specials), as
    the model reads it (installed input interventions applied)."""
    texts = [transform_prompt(model, _check_text(p, field, i)) for i, p in enumerate(prompts)]
    return _tokenize_prompts(model, texts, field)


def _tokenize_prompts(model: Model, texts: Sequence[str], field: str = "prompt") -> list[list[int]]:
    """:func:`encode_prompts` of texts that are already transformed (no intervention applied again)."""
    texts = [t.rstrip() for t in texts]
    enc = model.tokenizer(texts, add_special_tokens=True, return_special_tokens_mask=True)
    out = []
    for i, (ids, sp) in enumerate(zip(enc["input_ids"], enc["special_tokens_mask"])):
        ids = _strip_trailing_specials(list(ids), list(sp))
        _check_length(model, len(ids), field, i)
        out.append(ids)
    return out


def encode_pairs(model: Model, prompts: Sequence[str], continuations: Sequence[str]) -> list[EncodedPair]:
    """Tokenize prompt/continuation pairs by the module's rule (one string, split by offsets)."""
    if len(prompts) != len(continuations):
        raise ValueError(f"got {len(prompts)} prompts but {len(continuations)} continuations")
    for i, c in enumerate(continuations):
        if not isinstance(c, str) or not c:
            raise ValueError(f"continuation[{i}] is empty; every continuation needs text")
    # The one tokenization point: installed input interventions (e.g. IKE's demonstrations) apply here.
    prompts = [transform_prompt(model, _check_text(p, "prompt", i)) for i, p in enumerate(prompts)]
    stripped = [p.rstrip() for p in prompts]
    fulls = [p + c for p, c in zip(prompts, continuations)]
    tok = model.tokenizer
    enc = tok(fulls, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    out: list[EncodedPair] = []
    fallback: list[int] = []
    for i, (ids, offs, sp) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"])):
        p_end = len(stripped[i])
        k = next((j for j in range(len(ids)) if not sp[j] and offs[j][0] >= p_end), len(ids))
        straddles = any(not sp[j] and offs[j][1] > p_end for j in range(k))
        cont = [t for t, s in zip(ids[k:], sp[k:]) if not s]
        if straddles or not cont or k == 0:
            fallback.append(i)
            out.append(EncodedPair((), ()))
            continue
        out.append(EncodedPair(tuple(ids[:k]), tuple(cont)))
    if fallback:
        p_ids = _tokenize_prompts(model, [prompts[i] for i in fallback])  # prompts: transformed above
        rests = [fulls[i][len(stripped[i]):] for i in fallback]
        c_ids = tok(rests, add_special_tokens=False)["input_ids"]
        for i, pi, ci in zip(fallback, p_ids, c_ids):
            if not ci:
                raise ValueError(f"continuation[{i}] {continuations[i]!r} produced no tokens")
            out[i] = EncodedPair(tuple(pi), tuple(ci), exact=False)
    for i, pair in enumerate(out):
        _check_length(model, len(pair.prompt_ids) + len(pair.cont_ids), "prompt", i)
    return out


def plan_batches(lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, each with at most ``batch_size`` rows and
    ``rows * longest <= max_tokens`` padded tokens (a single over-long row gets its own batch)."""
    if batch_size < 1 or max_tokens < 1:
        raise ValueError(f"batch_size and max_tokens must be >= 1 (got {batch_size}, {max_tokens})")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * longest > max_tokens):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, side: PaddingSide, device: torch.device):
    """Pad token id lists to ``[B, T]``.

    Returns ``(input_ids, attention_mask, position_ids, starts)`` where ``starts[b]`` is the column
    of row b's first real token; position ids count real tokens only (0 at the first).
    """
    if side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    starts = []
    for b, s in enumerate(seqs):
        st = T - len(s) if side == "left" else 0
        ids[b, st:st + len(s)] = torch.tensor(s, dtype=torch.long)
        mask[b, st:st + len(s)] = 1
        starts.append(st)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device), starts


def pad_id(model: Model) -> int:
    """The token id used for padding (pad, else end-of-sequence, else 0); always masked out."""
    tok = model.tokenizer
    for v in (tok.pad_token_id, tok.eos_token_id, 0):
        if v is not None:
            return int(v)
    return 0


def logits_from_hidden(model: Model, hidden: torch.Tensor) -> torch.Tensor:
    """Vocabulary logits ``[..., V]`` (float32) from final hidden states ``[..., d]``."""
    logits = model.module("lm_head")(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@dataclass
class LayerCache:
    """Hidden states entering block ``layer`` for every batch of one scoring call.

    Filled by a call with ``capture=cache`` on the base model; a later call with ``resume=cache``
    on the same pairs (same batching) skips blocks ``0..layer-1`` and feeds the stored states to
    block ``layer``. When the model differs from the base only in blocks ``>= layer``, the result
    equals a full pass exactly (same tensors, same kernels). Memory: ``4 * tokens * d`` bytes (fp32).
    """

    layer: int
    key: str = ""
    states: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.states.values())


def plan_layer_caches(model: Model, key: str, keep_hidden: int | None, incremental: bool = True,
                      now: dict[str, str] | None = None) -> tuple[LayerCache | None, LayerCache | None]:
    """``(capture, resume)`` for one scoring pass over a fixed set of sequences named ``key``.

    On the base weights with ``keep_hidden=l``: a fresh :class:`LayerCache` to capture (register it
    with :func:`keep_layer_cache` once the pass succeeded). On edited weights: the kept cache of the
    deepest block at or below the first changed one, if any (and ``incremental``). ``now``: current
    :func:`tensor_digests`, if already computed. Kept caches live on ``model.state.layer_caches`` (free them with
    ``Model.clear_caches``).
    """
    kept = model.state.layer_caches
    now = tensor_digests(model.hf) if now is None else now
    if fingerprint_of(now) == model.base_fingerprint and not installed(model):
        if keep_hidden is None or (key, keep_hidden) in kept:
            return None, None
        if not 0 <= keep_hidden < model.n_layers:
            raise ValueError(f"keep_hidden={keep_hidden} is outside the model (0..{model.n_layers - 1})")
        return LayerCache(keep_hidden), None
    if not incremental or has_input_interventions(model):  # other token sequences: nothing kept fits
        return None, None
    first = model.first_changed_layer(model.changed_tensors(now)) or 0
    usable = [c for (k, layer), c in kept.items() if k == key and layer <= first]
    return None, max(usable, key=lambda c: c.layer, default=None)


def keep_layer_cache(model: Model, key: str, cache: LayerCache) -> None:
    """Keep a filled capture cache on the model for later incremental passes over ``key``."""
    model.state.layer_caches[(key, cache.layer)] = cache


def sequences_key(seqs: Sequence[Sequence[int]], batch_size: int, max_tokens: int, side: PaddingSide) -> str:
    """Content hash of a scoring pass's sequences and batching (what a :class:`LayerCache` fits)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{batch_size}|{max_tokens}|{side}|".encode())
    for s in seqs:
        h.update((",".join(map(str, s)) + ";").encode())
    return h.hexdigest()


def teacher_forced_hidden(model: Model, seqs: Sequence[Sequence[int]], side: PaddingSide,
                          capture: LayerCache | None = None, resume: LayerCache | None = None,
                          batch_key: tuple[int, ...] = (), prefix: SharedPrefix | None = None):
    """Final hidden states ``[B, T, d]`` of a padded batch, and each row's first real column.

    With right padding every pad follows all real tokens of its row, so causal attention alone
    already hides it from them: the mask is dropped, letting attention use its causal fast path
    (real-token outputs are unchanged; pad outputs are never read). ``capture``/``resume`` store or
    reuse the states entering one block (see :class:`LayerCache`), keyed by ``batch_key``.
    ``prefix``: ``seqs`` continue this shared prefix (right padding only; positions are offset by
    its length and the returned states cover only ``seqs``).
    """
    ids, mask, pos, starts = pad_batch(seqs, pad_id(model), side, model.device)
    if side == "right":
        mask = None
    kv = None
    if prefix is not None:
        if side != "right" or capture is not None or resume is not None:
            raise ValueError("a shared prefix needs right padding and no capture/resume")
        pos, kv = pos + prefix.length, prefix.for_batch(len(seqs))
    with ExitStack() as stack:
        if capture is not None:
            seen = stack.enter_context(capture_input(model.module("layer", capture.layer)))
        if resume is not None:
            layers = [model.module("layer", i) for i in range(resume.layer)]
            stack.enter_context(skip_modules(layers, model.arch.block_returns_tuple))
            stack.enter_context(replace_input(model.module("layer", resume.layer), resume.states[batch_key]))
        hidden = body_forward(model, ids, mask, pos, kv_cache=kv, use_cache=kv is not None).last_hidden_state
    if capture is not None:
        capture.states[batch_key] = seen[0]
    return hidden, starts


@functools.cache
def _cache_argument(body_type: type) -> str:
    """The keyword a model body takes its KV cache by: ``cache`` in recent transformers 5.x
    (``past_key_values`` still works there but warns on every call), ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(body_type.forward).parameters else "past_key_values"


_GQA_FLAG = "TRANSFORMERS_SDPA_FORCE_GQA"


@contextlib.contextmanager
def _grouped_query_sdpa(model: Model) -> Iterator[None]:
    """Inference on CPU: let transformers' SDPA attention pass grouped-query keys/values as they are.

    With a mask, transformers copies every key/value head ``n_heads / n_kv_heads`` times before
    calling SDPA (CUDA's fast kernels refuse masked GQA); torch's CPU kernel takes ``enable_gqa``
    with a mask and gives the same numbers without the copies. With a long shared context (an IKE
    edit's demonstrations, 300 arithmetic probes) evaluation took 41.5 s with the copies and 25-36 s
    without (four runs on a busy 2-core machine), with identical log-probabilities. Not under
    autograd (its backward was 30% slower in ROME's residual optimisation), and a user's own setting
    of the variable wins.
    """
    if _GQA_FLAG in os.environ or torch.is_grad_enabled() or model.device.type != "cpu":
        yield
        return
    os.environ[_GQA_FLAG] = "1"
    try:
        yield
    finally:
        os.environ.pop(_GQA_FLAG, None)


def body_forward(model: Model, input_ids, attention_mask, position_ids, *, kv_cache=None, **kwargs):
    """Run the model body (no vocabulary projection); returns the HF base-model output.
    ``kv_cache``: a KV cache (:func:`kv_cache_of` an earlier output, or a ``Cache``) to continue from."""
    body = model.module("body")
    if kv_cache is not None:
        kwargs[_cache_argument(type(body))] = kv_cache
    with _grouped_query_sdpa(model):
        return body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)


def forward_until(model: Model, module: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor) -> None:
    """Run the body on right-padded ``input_ids`` only as far as ``module`` (hooks placed on it or
    below see what a full pass would show them; nothing above it is computed)."""
    with stop_after(module):
        try:
            body_forward(model, input_ids, None, position_ids, use_cache=False)
        except StopForward:
            pass


def kv_cache_of(out):
    """The KV cache of a :func:`body_forward` output made with ``use_cache=True``, under either name."""
    return out["cache"] if "cache" in out else out["past_key_values"]


#: a token prefix shared by every sequence of a call and at least this long is run once and reused
#: through a KV cache (an in-context edit puts the same demonstrations before every prompt)
SHARED_PREFIX_MIN = 16
#: with a shared prefix, a batch holds at most this many (prefix + own) tokens: each row carries a
#: copy of the prefix's keys and values (about 23 MB per row for 500 prefix tokens on the default model)
SHARED_PREFIX_BATCH_TOKENS = 16384


@dataclass
class SharedPrefix:
    """The KV cache of ``length`` tokens every sequence of a call starts with (batch of one)."""

    length: int
    cache: Any

    @classmethod
    def of(cls, model: Model, seqs: Sequence[Sequence[int]], limit: int) -> SharedPrefix | None:
        """The shared prefix of ``seqs`` (at most ``limit`` tokens), run through the model, or None
        when there are fewer than two sequences or it is shorter than :data:`SHARED_PREFIX_MIN`."""
        if len(seqs) < 2 or limit < SHARED_PREFIX_MIN:
            return None
        first, n = list(seqs[0]), min(limit, min(len(x) for x in seqs))
        for x in seqs[1:]:
            if list(x[:n]) == first[:n]:  # the common case once a prefix is shared: one C-level compare
                continue
            n = next(k for k in range(n) if x[k] != first[k])
            if n < SHARED_PREFIX_MIN:
                return None
        ids = torch.tensor([list(first[:n])], device=model.device)
        out = body_forward(model, ids, None, torch.arange(n, device=model.device)[None], use_cache=True)
        return cls(n, kv_cache_of(out))

    def for_batch(self, rows: int):
        """A copy of the cache for a batch of ``rows`` sequences (the model appends to it)."""
        cache = copy.deepcopy(self.cache)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache


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
        step = max(1, _LOGIT_CHUNK_ELEMENTS // vocab)  # bound the [positions, vocab] buffers
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


def _continuation_text(model: Model, prompt_ids: list[int], gen_ids: list[int]) -> str:
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
        _check_length(model, len(s) + max_new_tokens, "prompt", i)
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
                text=_continuation_text(model, seqs[i], gen[b]), stopped_at_eos=eos_hit[b],
            )
    return results  # type: ignore[return-value]


@dataclass
class TrainingBatch:
    """Padded pairs ready for a differentiable forward (edit methods' objectives).

    ``input_ids`` ``[B, T]`` (right padded); ``rows``/``cols``/``targets`` ``[N]``: the position
    whose output predicts each continuation token and that token; ``pair`` ``[N]``: which pair each
    belongs to; ``last_prompt`` ``[B]``: column of each pair's last prompt token.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    pair: torch.Tensor
    last_prompt: torch.Tensor
    cont_ids: list[tuple[int, ...]]

    @property
    def n_pairs(self) -> int:
        return len(self.cont_ids)


def training_batch(model: Model, pairs: Sequence[EncodedPair]) -> TrainingBatch:
    """One right-padded batch of encoded pairs (from :func:`encode_pairs`) with label positions."""
    if not pairs:
        raise ValueError("training_batch needs at least one pair")
    seqs = [list(p.prompt_ids + p.cont_ids) for p in pairs]
    ids, _, pos, _ = pad_batch(seqs, pad_id(model), "right", model.device)
    rows, cols, targets, which = [], [], [], []
    for b, p in enumerate(pairs):
        n_p, n_c = len(p.prompt_ids), len(p.cont_ids)
        rows += [b] * n_c
        cols += range(n_p - 1, n_p - 1 + n_c)
        targets += p.cont_ids
        which += [b] * n_c
    dev = model.device
    return TrainingBatch(
        input_ids=ids, position_ids=pos, rows=torch.tensor(rows, device=dev), cols=torch.tensor(cols, device=dev),
        targets=torch.tensor(targets, device=dev), pair=torch.tensor(which, device=dev),
        last_prompt=torch.tensor([len(p.prompt_ids) - 1 for p in pairs], device=dev),
        cont_ids=[p.cont_ids for p in pairs],
    )


def continuation_nll(model: Model, batch: TrainingBatch, mode: str = "teacher",
                     hidden: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable mean negative log-likelihood per pair, ``[n_pairs]``, nats per token.

    ``mode="teacher"``: each continuation token given the prompt and the tokens before it (prompt
    masked out of the loss; KnowEdit's FT-M objective). ``mode="prompt_last"``: every continuation
    token predicted from the last prompt position alone (the ROME paper's FT-L objective; for a
    one-token target both are the same). Right padding needs no attention mask (see
    :func:`teacher_forced_hidden`). ``hidden``: final hidden states ``[>= B, T, d]`` the caller
    computed itself (e.g. with a cache); rows and columns are then read from it as laid out in
    ``batch``.
    """
    if mode not in ("teacher", "prompt_last"):
        raise ValueError(f"mode={mode!r}: use 'teacher' or 'prompt_last'")
    if hidden is None:
        hidden = body_forward(model, batch.input_ids, None, batch.position_ids, use_cache=False).last_hidden_state
    if mode == "teacher":
        logp = torch.log_softmax(logits_from_hidden(model, hidden[batch.rows, batch.cols]), dim=-1)
        tok = -logp.gather(-1, batch.targets[:, None])[:, 0]
    else:
        last = torch.log_softmax(logits_from_hidden(model, hidden[torch.arange(batch.n_pairs), batch.last_prompt]), -1)
        tok = -last[batch.pair, batch.targets]
    total = torch.zeros(batch.n_pairs, device=tok.device, dtype=tok.dtype).index_add(0, batch.pair, tok)
    counts = torch.tensor([len(c) for c in batch.cont_ids], device=tok.device, dtype=tok.dtype)
    return total / counts


def token_index_at(model: Model, texts: Sequence[str], char_pos: Sequence[int]) -> list[int]:
    """Index of the token covering character ``char_pos[i]`` of ``texts[i]``, in the ids
    :func:`encode_prompts` gives (tokenizer specials included). Raises ValueError naming the text
    when no token covers it (e.g. the position is whitespace merged away)."""
    enc = model.tokenizer([t.rstrip() for t in texts], add_special_tokens=True, return_offsets_mapping=True,
                          return_special_tokens_mask=True)
    out = []
    for i, (offs, sp) in enumerate(zip(enc["offset_mapping"], enc["special_tokens_mask"])):
        hit = [j for j, (a, b) in enumerate(offs) if not sp[j] and a <= char_pos[i] < b]
        if not hit:
            raise ValueError(f"no token of {texts[i]!r} covers character {char_pos[i]}; "
                             "the subject cannot be located in the tokenized prompt")
        out.append(hit[-1])
    return out


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
