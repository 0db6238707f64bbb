"""Causal tracing (Meng et al., 2022, "Locating and Editing Factual Associations in GPT", section 2):
where in the network does the model compute its answer?

1. Clean run: the prompt as it is; record every block's output (the residual stream after the
   block), every MLP output and every attention output, at every token.
2. Corrupted runs: Gaussian noise of ``noise`` x the embedding standard deviation added to the
   subject tokens' embeddings (``samples`` seeded draws, the same draws for every restore below).
3. Restored runs: the corrupted run with one clean state put back: the residual stream at one
   (token, block), or the MLP (attention) outputs of a window of ``window`` blocks around a block at
   one token, as in the paper.

The indirect effect of a state is P(target | restored) - P(target | corrupted); reported per kind
as a [tokens, blocks] grid, the mean over the noise samples with a Student-t 95% interval. The target
is the first token of ``target`` (default: the clean run's greedy next token). Every restore of one
prompt runs through the model as rows of a few large batches (restore configuration x noise
sample), each row patched by forward hooks; results are cached on disk by the model fingerprint and
every setting.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..models.model import Model
from ..paths import cache_root
from ..requests import resolve_sep
from ..scoring import body_forward, encode_pairs, encode_prompts, kv_cache_of, logits_from_hidden, token_index_at
from ..stats import mean_interval
from ..hooks import capture_input, replace_input, skip_modules

KINDS = ("hidden", "mlp", "attn")
ROLES = {"hidden": "layer", "mlp": "mlp", "attn": "attn"}  # kind -> the ArchSpec module whose output it is
KIND_LABEL = {"hidden": "residual stream (single state)", "mlp": "MLP output (window)", "attn": "attention output (window)"}
LOW_CLEAN = 0.05  # below this clean probability the grid is reported, with a warning, not trusted
VERSION = 1       # part of the cache key: bump when the algorithm changes


class TraceError(InputError, ValueError):
    """A trace that cannot be run as asked (subject not in the prompt, a window larger than the model, ...)."""


@dataclass
class TraceResult:
    """One prompt's causal trace. Grids are ``[tokens, blocks]`` probabilities of the target after
    restoring that state (mean over noise samples) with the 95% interval's bounds."""

    prompt: str
    subject: str
    target: str                      # the target token's text
    target_id: int
    tokens: list[str]
    subject_range: tuple[int, int]   # token indices [start, end) of the subject
    p_clean: float
    p_corrupt: float                 # mean over samples
    p_corrupt_samples: list[float]
    scores: dict[str, list[list[float]]]
    low: dict[str, list[list[float]]]
    high: dict[str, list[list[float]]]
    samples: int
    noise: float                     # multiple of the embedding standard deviation
    noise_std: float                 # that standard deviation (embedding units)
    window: int
    seed: int
    model: str = ""
    warnings: list[str] = field(default_factory=list)

    def grid(self, kind: str) -> np.ndarray:
        """P(target) after restoring each state of ``kind``, ``[tokens, blocks]``."""
        return np.asarray(self.scores[kind], dtype=float)

    def indirect_effect(self, kind: str) -> np.ndarray:
        """P(restored) - P(corrupted), ``[tokens, blocks]``."""
        return self.grid(kind) - self.p_corrupt

    @property
    def last_subject(self) -> int:
        return self.subject_range[1] - 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TraceResult:
        d = json.loads(text)
        d["subject_range"] = tuple(d["subject_range"])
        return cls(**d)


def _window(layer: int, window: int, n_layers: int) -> range:
    """The paper's window of ``window`` blocks around ``layer``: ``[layer - w//2, layer + ceil(w/2))``."""
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def subject_range(model: Model, prompt: str, subject: str) -> tuple[int, int]:
    """Token indices ``[start, end)`` of the first occurrence of ``subject`` in ``prompt``."""
    at = prompt.find(subject) if subject else -1
    if at < 0:
        raise TraceError(f"subject {subject!r} not found in prompt {prompt!r}: it must be an exact substring "
                         "(case and spaces included)")
    try:
        first, last = token_index_at(model, [prompt, prompt], [at, at + len(subject) - 1])
    except ValueError as e:
        raise TraceError(f"subject {subject!r} in prompt {prompt!r}: {e}") from None
    return first, last + 1


def embedding_std(model: Model, texts: Iterable[str]) -> float:
    """Standard deviation of the embedding layer's outputs (scaled embeddings included) over every
    token of ``texts``: the paper's noise unit, computed over the subjects traced."""
    ids = [i for ids in encode_prompts(model, list(texts)) for i in ids]
    if not ids:
        raise TraceError("no tokens to measure the embedding standard deviation on")
    with torch.no_grad():
        emb = model.module("embed")(torch.tensor([ids], device=model.device)).float()
    return float(emb.std())


class _Patcher:
    """Forward hooks that corrupt the subject embeddings and restore clean states row by row."""

    def __init__(self, model: Model, clean: dict[str, list[torch.Tensor]], noise: torch.Tensor,
                 subj: tuple[int, int]):
        self.model, self.clean, self.noise, self.subj = model, clean, noise, subj
        self.rows_noise: torch.Tensor | None = None   # [B] sample index per row (-1: no noise)
        self.restore: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (kind, layer) -> rows, tokens
        self.offset = 0  # the prompt position of the first token in the batch (earlier ones come from a KV cache)

    def _embed(self, mod, args, out):
        s, e = self.subj
        keep = self.rows_noise >= 0
        first = max(s, self.offset)  # the subject tokens in this batch, in batch positions below
        if keep.any() and first < e:
            out = out.clone()
            out[keep, first - self.offset:e - self.offset] += self.noise[self.rows_noise[keep]][:, first - s:].to(out.dtype)
        return out

    def _state(self, kind: str, layer: int):
        def hook(mod, args, out):
            hit = self.restore.get((kind, layer))
            if hit is None:
                return out
            rows, toks = hit
            first = out[0] if isinstance(out, tuple) else out
            first = first.clone()
            first[rows, toks - self.offset] = self.clean[kind][layer][toks].to(first.dtype)
            return (first, *out[1:]) if isinstance(out, tuple) else first
        return hook

    def __enter__(self):
        m = self.model
        self.handles = [m.module("embed").register_forward_hook(self._embed)]
        for layer in range(m.n_layers):
            for kind, role in ROLES.items():
                self.handles.append(m.module(role, layer).register_forward_hook(self._state(kind, layer)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _clean_states(model: Model, ids: list[int]) -> tuple[dict[str, list[torch.Tensor]], torch.Tensor]:
    """Every block's output, MLP output and attention output ``[T, d]`` of the clean run, and its
    last-position next-token probabilities ``[V]``."""
    states: dict[str, list[torch.Tensor]] = {k: [None] * model.n_layers for k in KINDS}  # type: ignore[list-item]
    handles = []

    def grab(kind: str, layer: int):
        def hook(mod, args, out):
            first = out[0] if isinstance(out, tuple) else out
            states[kind][layer] = first[0].detach().clone()
        return hook

    for layer in range(model.n_layers):
        for kind, role in ROLES.items():
            handles.append(model.module(role, layer).register_forward_hook(grab(kind, layer)))
    try:
        probs = last_probs(model, torch.tensor([ids], device=model.device))
    finally:
        for h in handles:
            h.remove()
    return states, probs[0]


def last_probs(model: Model, input_ids: torch.Tensor, start: int = 0, kv_cache=None) -> torch.Tensor:
    """Next-token probabilities ``[B, V]`` (float32) at the last position of unpadded rows.
    ``start``/``kv_cache``: the rows are the prompt's tokens from position ``start`` on, and the
    cache holds every block's keys and values of the ``start`` tokens before them."""
    return _forward(model, input_ids, start, kv_cache)[0]


def _forward(model: Model, input_ids: torch.Tensor, start: int = 0, kv_cache=None, use_cache: bool = False):
    """:func:`last_probs` and the KV cache of the pass (None unless ``use_cache``)."""
    b, t = input_ids.shape
    pos = torch.arange(start, start + t, device=input_ids.device).expand(b, t)
    with torch.no_grad():
        if kv_cache is None:
            out = body_forward(model, input_ids, torch.ones_like(input_ids), pos, use_cache=use_cache)
        else:  # no padding anywhere: the causal mask follows from the cache's length
            out = body_forward(model, input_ids, None, pos, kv_cache=kv_cache, use_cache=True)
        probs = torch.softmax(logits_from_hidden(model, out.last_hidden_state[:, -1]), dim=-1)
    return probs, (kv_cache_of(out) if use_cache else None)


Restore = Sequence[tuple[str, int, int]]  # (kind, layer, token) states put back in one run


def _start_layer(restore: Restore) -> int:
    """The first block a restore touches: every block before it runs exactly as the corrupted run."""
    return min((layer for _, layer, _ in restore), default=0)


def _start_token(restore: Restore) -> int:
    """The first token a restore touches: in a causal model every token before it runs exactly as
    in the corrupted run, in every block."""
    return min((tok for _, _, tok in restore), default=0)


def _corrupted_run(model: Model, ids_t: torch.Tensor, patch: _Patcher, n_samples: int) -> tuple[list[torch.Tensor], Any]:
    """The hidden states entering every block in the corrupted run, ``[samples, T, d]`` per block,
    and the run's KV cache (every block's keys and values, ``samples`` rows)."""
    from contextlib import ExitStack

    patch.rows_noise = torch.arange(n_samples, device=model.device)
    patch.restore, patch.offset = {}, 0
    with ExitStack() as stack:
        seen = [stack.enter_context(capture_input(model.module("layer", j))) for j in range(model.n_layers)]
        _, cache = _forward(model, ids_t.expand(n_samples, -1), use_cache=True)
    return [s[0] for s in seen], cache


def _cache_keeps_every_token(model: Model, n_tokens: int) -> bool:
    """Whether a KV cache of ``n_tokens`` keeps them all: a sliding-window layer (Gemma 2/3, Mistral)
    drops what falls out of its window, and then earlier tokens cannot be skipped."""
    window = getattr(model.hf.config, "sliding_window", None)
    return window is None or n_tokens < window


def _cache_rows(cache, keep: int, rows: torch.Tensor):
    """A copy of a KV cache cut to its first ``keep`` tokens, with batch rows ``rows`` (repeats allowed)."""
    out = copy.deepcopy(cache)
    drop = out.get_seq_length() - keep
    if drop > 0:
        out.crop(-drop)
    out.batch_select_indices(rows)
    return out


def patched_probabilities(model: Model, ids: Sequence[int], target_id: int, noise: torch.Tensor,
                          subj: tuple[int, int], restores: Sequence[Restore], clean: dict[str, list[torch.Tensor]],
                          batch_size: int = 64, skip_early: bool = True) -> np.ndarray:
    """P(target) ``[len(restores), samples]`` for the corrupted prompt with each restore's clean
    states put back, every (restore, noise sample) pair one row of a batch. ``noise``: ``[samples,
    subject tokens, d]`` added to the subject embeddings (a zero tensor for an uncorrupted run).

    ``batch_size``: rows per batch at full prompt length (rows that start later are shorter and
    go more to a batch: the same number of tokens).
    ``skip_early``: what a restore cannot change is not recomputed. Blocks before its first block
    compute exactly what the corrupted run computed, and so do tokens before its first token (the
    model is causal). Rows are grouped by first token; a batch starts at its rows' first block from
    the corrupted run's hidden states there and runs only the tokens from the first restored one on,
    the earlier tokens' keys and values taken from the corrupted run's KV cache: the same numbers
    to float precision, a fraction of the work."""
    n_samples = noise.shape[0]
    rows = [(r, s) for r in range(len(restores)) for s in range(n_samples)]
    start = {r: (_start_layer(restores[r]) if skip_early else 0) for r in range(len(restores))}
    skip_tokens = skip_early and _cache_keeps_every_token(model, len(ids))
    tok0 = {r: (_start_token(restores[r]) if skip_tokens else 0) for r in range(len(restores))}
    rows.sort(key=lambda rs: (tok0[rs[0]], start[rs[0]]))
    out = np.zeros((len(restores), n_samples))
    ids_t = torch.tensor(list(ids), device=model.device)
    blocks = [model.module("layer", j) for j in range(model.n_layers)]
    with _Patcher(model, clean, noise, subj) as patch:
        corrupted_in, corrupted_kv = _corrupted_run(model, ids_t, patch, n_samples) if skip_early else (None, None)
        i = 0
        while i < len(rows):
            # one token group per batch; rows sorted by first block, the batch starts at its first row's
            # (the later rows recompute a few corrupted blocks, which changes nothing)
            t0, l0 = tok0[rows[i][0]], start[rows[i][0]]
            chunk = [rows[i]]
            room = batch_size * len(ids) // (len(ids) - t0)  # shorter rows, more of them: the same tokens per batch
            while i + len(chunk) < len(rows) and len(chunk) < room and tok0[rows[i + len(chunk)][0]] == t0:
                chunk.append(rows[i + len(chunk)])
            i += len(chunk)
            patch.rows_noise = torch.tensor([s for _, s in chunk], device=model.device)
            patch.offset = t0
            by: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
            for b, (r, _) in enumerate(chunk):
                for kind, layer, tok in restores[r]:
                    rr, tt = by.setdefault((kind, layer), ([], []))
                    rr.append(b)
                    tt.append(tok)
            patch.restore = {k: (torch.tensor(v[0], device=model.device), torch.tensor(v[1], device=model.device))
                             for k, v in by.items()}
            x = ids_t[t0:].expand(len(chunk), -1)
            kv = _cache_rows(corrupted_kv, t0, patch.rows_noise) if t0 > 0 else None
            if corrupted_in is not None and l0 > 0:
                entering = corrupted_in[l0][patch.rows_noise, t0:]
                with skip_modules(blocks[:l0], model.arch.block_returns_tuple), replace_input(blocks[l0], entering):
                    probs = last_probs(model, x, t0, kv)
            else:
                probs = last_probs(model, x, t0, kv)
            for (r, s), p in zip(chunk, probs[:, target_id].cpu().numpy()):
                out[r, s] = p
    return out


def target_token(model: Model, prompt: str, target: str, sep: str | None = None) -> int:
    """The first token of ``target`` as the model would write it after ``prompt``: the separator
    resolved as for every probe (``"... is"`` + ``"French"`` scores ``" French"``; a target that
    carries its own space, or a prompt ending in ``=``, gets none; an explicit ``sep`` wins)."""
    pair = encode_pairs(model, [prompt], [resolve_sep(prompt, target, sep) + target])[0]
    if not pair.cont_ids:
        raise TraceError(f"target {target!r} encodes to no token after {prompt!r}")
    return pair.cont_ids[0]


def _cache_path(model: Model, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root() / "traces" / f"{digest}.json"


def trace(model: Model, prompt: str, target: str | None, subject: str, *, samples: int = 10,
          noise: float = 3.0, noise_std: float | None = None, window: int = 10, kinds: Sequence[str] = KINDS,
          seed: int = 0, batch_size: int = 64, cache: bool = True, sep: str | None = None) -> TraceResult:
    """Causal trace of ``prompt`` with ``subject`` corrupted (see the module docstring): how much of
    P(``target``) each state restores. ``target``: the answer whose first token is scored (None: the
    clean greedy next token). ``noise_std``: the embedding standard
    deviation the noise is a multiple of (default: over this prompt's subject tokens; pass
    :func:`embedding_std` over many subjects to trace a dataset as the paper does). ``sep``: the
    separator before ``target`` (None: resolved as for every probe)."""
    if samples < 2:
        raise TraceError(f"samples={samples}: need at least 2 noise samples for an interval")
    if not noise > 0:
        raise TraceError(f"noise={noise}: must be > 0 (a multiple of the embedding standard deviation; the paper uses 3)")
    if not 1 <= window <= model.n_layers:
        raise TraceError(f"window={window}: must be between 1 and the model's {model.n_layers} blocks")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise TraceError(f"kinds={list(kinds)}: choose from {', '.join(KINDS)}")
    subj = subject_range(model, prompt, subject)
    ids = encode_prompts(model, [prompt])[0]
    std = noise_std if noise_std is not None else embedding_std(model, [subject])
    clean, probs = _clean_states(model, ids)
    target_id = int(probs.argmax()) if target is None else target_token(model, prompt, target, sep)
    tok = model.tokenizer
    key = {"v": VERSION, "model": model.fingerprint(), "ids": ids, "subj": subj, "target": target_id,
           "samples": samples, "noise": noise, "std": round(std, 8), "window": window, "kinds": list(kinds), "seed": seed}
    path = _cache_path(model, key)
    if cache and path.is_file():
        return TraceResult.from_json(path.read_text())
    gen = torch.Generator().manual_seed(seed)
    d = clean["hidden"][0].shape[-1]
    z = torch.randn(samples, subj[1] - subj[0], d, generator=gen) * (noise * std)
    z = z.to(model.device)
    n_tok, n_layers = len(ids), model.n_layers
    restores: list[Restore] = [()]  # the corrupted run itself
    where: list[tuple[str, int, int]] = []
    for kind in kinds:
        # A causal model's states before the subject are the same clean and corrupted (the noise is on
        # the subject only), so restoring one changes nothing: those cells are the corrupted run's
        # probabilities, exactly, and are not run.
        for t in range(subj[0], n_tok):
            for layer in range(n_layers):
                span = [layer] if kind == "hidden" else list(_window(layer, window, n_layers))
                restores.append([(kind, j, t) for j in span])
                where.append((kind, t, layer))
    p = patched_probabilities(model, ids, target_id, z, subj, restores, clean, batch_size)
    p_clean = float(probs[target_id])
    unchanged = mean_interval(list(p[0]))
    scores = {k: [[unchanged.value] * n_layers for _ in range(n_tok)] for k in kinds}
    low = {k: [[unchanged.low] * n_layers for _ in range(n_tok)] for k in kinds}
    high = {k: [[unchanged.high] * n_layers for _ in range(n_tok)] for k in kinds}
    for (kind, t, layer), row in zip(where, p[1:]):
        iv = mean_interval(list(row))
        scores[kind][t][layer], low[kind][t][layer], high[kind][t][layer] = iv.value, iv.low, iv.high
    warnings = []
    if p_clean < LOW_CLEAN:
        warnings.append(f"the clean model gives the target {tok.decode([target_id])!r} only P = {p_clean:.4f}: the "
                        "indirect effects are differences of small probabilities; trace a target the model predicts")
    result = TraceResult(prompt, subject, tok.decode([target_id]), target_id, [tok.decode([i]) for i in ids], subj,
                         p_clean, float(p[0].mean()), [float(x) for x in p[0]], scores, low, high, samples, noise, std,
                         window, seed, str(getattr(model, "name", "")), warnings)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(result.to_json())
    return result


__all__ = ["KINDS", "TraceError", "TraceResult", "embedding_std", "patched_probabilities", "subject_range", "target_token",
           "trace"]
