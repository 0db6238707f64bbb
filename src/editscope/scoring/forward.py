"""The forward pass, batched: sequences sorted by length and packed into batches of at most
``batch_size`` sequences and ``max_tokens`` padded tokens (default 2048: on a 2-core CPU, matmuls of
1-2k rows run closest to the machine's peak); attention masks hide padding and position ids count only
real tokens, so results do not depend on batch composition or padding side (tested to 1e-4). Also
here: hidden states kept for incremental evaluation (:class:`LayerCache`), the shared-prefix KV cache
and the grouped-query attention switch."""

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

from ..hooks import StopForward, capture_input, replace_input, skip_modules, stop_after
from ..interventions import has_input_interventions, installed
from ..models.model import Model
from ..models.state import fingerprint_of, tensor_digests


PaddingSide = str  # "left" | "right"


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
def grouped_query_sdpa(model: Model) -> Iterator[None]:
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
    with grouped_query_sdpa(model):
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
