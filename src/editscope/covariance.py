"""Second moments of MLP keys, ``C = E[k k^T]``, over a text corpus: what locate-then-edit methods
(ROME, MEMIT, AlphaEdit) preserve.

A key ``k`` is the input of a block's MLP output ("down") projection at one token, ``[d_ff]``.
:func:`key_statistics` streams a corpus through the model in fixed-length chunks, stops each forward
right after the hooked projection, and accumulates ``sum k k^T`` in float32 or float64.

Statistics describe the *base* model (as in the ROME/MEMIT/AlphaEdit papers). They are cached on disk
as safetensors under ``<cache>/key_stats``, keyed by a content hash of (base-weights fingerprint,
layer, corpus text, token count, chunk length, dtype), shape- and key-checked on load, and memoised on
the ``Model`` object (never in module state, never by model name).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .data.corpora import load_corpus
from .errors import InputError
from .hooks import StopForward, capture_input, stop_after
from .interventions import ModuleIntervention, installed
from .models.model import Model
from .paths import cache_root

log = logging.getLogger(__name__)

STATS_VERSION = 1
DEFAULT_CORPUS = ("wikitext2", "me_ppl")
DEFAULT_N_TOKENS = 100_000
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class KeyStatsError(InputError, ValueError):
    """Statistics that cannot be computed or used for this model/layer."""


@dataclass
class KeyStats:
    """``second_moment``: ``E[k k^T]`` ``[d_ff, d_ff]`` over ``n_tokens`` tokens at ``layer``."""

    second_moment: torch.Tensor
    layer: int
    n_tokens: int
    key: str
    seconds: float = 0.0
    from_cache: bool = False


def _corpus_texts(corpus: str | Sequence[str]) -> list[list[str]]:
    """One list of documents per named corpus, path, or ``hub:dataset[:config]``."""
    names = [corpus] if isinstance(corpus, str) else list(corpus)
    if not names:
        raise KeyStatsError("corpus is empty; name a corpus (e.g. 'wikitext2'), a text file, or 'hub:dataset'")
    out = []
    for name in names:
        if name.startswith("hub:"):
            try:
                from datasets import load_dataset
            except ImportError:
                raise KeyStatsError(f"corpus {name!r} needs the `hub` extra: pip install 'editscope[hub]'") from None
            ds, _, cfg = name[4:].partition(":")
            out.append([t for t in load_dataset(ds, cfg or None, split="train")["text"] if t.strip()])
        else:
            out.append(load_corpus(name))
    return out


def _chunks(model: Model, corpora: list[list[str]], n_tokens: int, seq_len: int) -> list[list[int]]:
    """Token chunks of ``seq_len`` taken round-robin from the corpora until ``n_tokens`` are reached."""
    tok = model.tokenizer
    sep = [tok.eos_token_id] if tok.eos_token_id is not None else []
    per_corpus = []
    for docs in corpora:
        ids: list[int] = []
        for d in docs:  # documents joined by end-of-sequence, as in pre-training streams
            ids += tok(d, add_special_tokens=False)["input_ids"] + sep
            if len(ids) >= n_tokens:
                break
        per_corpus.append([ids[i:i + seq_len] for i in range(0, len(ids), seq_len)])
    chunks, total, i = [], 0, 0
    while total < n_tokens and any(i < len(c) for c in per_corpus):
        for c in per_corpus:
            if i < len(c) and total < n_tokens:
                take = c[i][: n_tokens - total]
                chunks.append(take)
                total += len(take)
        i += 1
    if total < n_tokens:
        raise KeyStatsError(f"the corpus holds only {total} tokens in chunks of {seq_len}; "
                            f"ask for n_tokens <= {total} or add text")
    return chunks


def _check_base(model: Model, layer: int) -> None:
    for iv in installed(model).values():  # corpus text is read raw: input interventions do not apply
        if isinstance(iv, ModuleIntervention) and iv.layer < layer:
            raise KeyStatsError(
                f"key statistics describe the base model, but an installed {iv.type_name} intervention ({iv.site}) "
                f"changes what layer {layer}'s keys see. Compute them before editing (es.key_statistics(model, "
                f"{layer})) or undo the edit first")

    prefixes = tuple(model.arch.name("layer", i) + "." for i in range(layer + 1))
    for h in model.state.edit_stack:
        if any(n.startswith(prefixes) or not n.startswith(model.arch.name("layers") + ".") for n in h.names):
            raise KeyStatsError(
                f"key statistics describe the base model, but an applied {h.method} edit changed weights that "
                f"feed layer {layer}'s keys. Compute them before editing (es.key_statistics(model, {layer})) "
                "or undo the edits first")


def stats_key(model: Model, layer: int, texts: list[list[str]], n_tokens: int, seq_len: int, dtype: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"v": STATS_VERSION, "base": model.base_fingerprint, "layer": layer, "n": n_tokens,
                         "seq": seq_len, "dtype": dtype}).encode())
    for docs in texts:
        for d in docs:
            h.update(d.encode())
            h.update(b"\x00")
        h.update(b"\x01")
    return h.hexdigest()


def _path(key: str) -> Path:
    return cache_root() / "key_stats" / f"{key}.safetensors"


def load_key_statistics(path: str | os.PathLike, model: Model, layer: int, key: str | None = None) -> torch.Tensor:
    """Read a statistics file, refusing one of the wrong shape or made for another model/layer."""
    from safetensors import safe_open

    d_ff = model.arch.weight_out_in(model.module("mlp_out", layer)).shape[1]
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if "second_moment" not in f.keys():
            raise KeyStatsError(f"{path} holds no 'second_moment' tensor; it is not an editscope statistics file")
        c = f.get_tensor("second_moment")
    if tuple(c.shape) != (d_ff, d_ff):
        raise KeyStatsError(f"{path}: statistics of shape {tuple(c.shape)}, but layer {layer}'s keys have "
                            f"{d_ff} dimensions ([{d_ff}, {d_ff}] expected); they are for another model")
    if meta.get("base_fingerprint") not in (None, model.base_fingerprint) or meta.get("layer") not in (None, str(layer)):
        raise KeyStatsError(f"{path} was computed for another model or layer (layer {meta.get('layer')}, base "
                            f"{str(meta.get('base_fingerprint'))[:12]}...); recompute for this one")
    if key is not None and meta.get("key") != key:
        raise KeyStatsError(f"{path} does not hold the statistics asked for (other corpus, n_tokens or dtype)")
    if not torch.isfinite(c).all():
        raise KeyStatsError(f"{path} holds non-finite values; delete it to recompute")
    return c


def key_statistics(model: Model, layer: int, *, corpus: str | Sequence[str] = DEFAULT_CORPUS,
                   n_tokens: int = DEFAULT_N_TOKENS, dtype: str = "float32", seq_len: int = 256,
                   batch_size: int = 8, use_cache: bool = True) -> KeyStats:
    """``E[k k^T]`` of the keys entering ``layer``'s MLP output projection, over ``n_tokens`` tokens.

    Args:
        corpus: named corpora (``wikitext2``, ``me_ppl``, ...), text/JSON files, or ``hub:dataset``;
            chunks are taken round-robin across them.
        n_tokens: how many tokens to average over (10k is rough, 100k is ROME-like; see
            ``benchmarks/bench_locate.py`` for how the solved update changes with it).
        dtype: accumulation dtype, ``float32`` or ``float64``.
        seq_len: tokens per chunk (each chunk is one forward sequence, no BOS added).
    """
    return key_statistics_many(model, [layer], corpus=corpus, n_tokens=n_tokens, dtype=dtype, seq_len=seq_len,
                               batch_size=batch_size, use_cache=use_cache)[layer]


def prefetch_key_statistics(model: Model, requests: Iterable[tuple[Any, Sequence[int]] | None]) -> int:
    """Compute (or load) the key statistics several edits will read, one corpus pass per distinct
    ``(corpus, n_tokens, dtype)`` settings over the union of their layers (see
    :meth:`editscope.methods.base.EditMethod.statistics_request`). Returns the number of passes'
    settings groups. Layers outside the model are left for the edit itself to refuse."""
    groups: dict[Any, set[int]] = {}
    for req in requests:
        if req is not None:
            groups.setdefault(req[0], set()).update(i for i in req[1] if 0 <= i < model.n_layers)
    for (corpus, n_tokens, dtype), layers in groups.items():
        if layers:
            key_statistics_many(model, sorted(layers), corpus=list(corpus), n_tokens=n_tokens, dtype=dtype)
    return len(groups)


def key_statistics_many(model: Model, layers: Sequence[int], *, corpus: str | Sequence[str] = DEFAULT_CORPUS,
                        n_tokens: int = DEFAULT_N_TOKENS, dtype: str = "float32", seq_len: int = 256,
                        batch_size: int = 8, use_cache: bool = True) -> dict[int, KeyStats]:
    """:func:`key_statistics` for several layers; those not cached are computed together in one
    pass over the corpus, stopped after the highest of them (MEMIT's five layers cost about one)."""
    layers = sorted(set(layers))
    bad = [i for i in layers if not 0 <= i < model.n_layers]
    if bad or not layers:
        raise KeyStatsError(f"layer(s) {bad or layers} are outside the model (0..{model.n_layers - 1})")
    if dtype not in _DTYPES:
        raise KeyStatsError(f"dtype={dtype!r}: use 'float32' or 'float64'")
    if n_tokens < 1 or seq_len < 1:
        raise KeyStatsError(f"n_tokens ({n_tokens}) and seq_len ({seq_len}) must be >= 1")
    texts = _corpus_texts(corpus)
    memo = model.state.key_stats
    out: dict[int, KeyStats] = {}
    todo: dict[int, str] = {}
    for layer in layers:
        key = stats_key(model, layer, texts, n_tokens, seq_len, dtype)
        if key in memo:
            out[layer] = memo[key]
            continue
        path = _path(key)
        if use_cache and path.is_file():
            try:
                c = load_key_statistics(path, model, layer, key)
                out[layer] = memo[key] = KeyStats(c, layer, n_tokens, key, from_cache=True)
                continue
            except (KeyStatsError, OSError, Exception) as e:  # a damaged cache is recomputed, never trusted
                log.warning("key statistics cache %s unusable (%s); recomputing", path, e)
        todo[layer] = key
    if not todo:
        return out
    _check_base(model, max(todo))
    t0 = time.perf_counter()
    chunks = _chunks(model, texts, n_tokens, seq_len)
    acc_dtype = _DTYPES[dtype]
    projs = {layer: model.module("mlp_out", layer) for layer in todo}
    accs = {layer: torch.zeros(model.arch.weight_out_in(p).shape[1], model.arch.weight_out_in(p).shape[1],
                               dtype=acc_dtype, device=model.device) for layer, p in projs.items()}
    count = 0
    with torch.inference_mode():
        for i in range(0, len(chunks), batch_size):
            batch = chunks[i:i + batch_size]
            width = max(len(c) for c in batch)
            ids = torch.full((len(batch), width), 0, dtype=torch.long)
            for b, c in enumerate(batch):
                ids[b, : len(c)] = torch.tensor(c)
            with ExitStack() as stack:
                seen = {layer: stack.enter_context(capture_input(p)) for layer, p in projs.items()}
                stack.enter_context(stop_after(projs[max(projs)]))
                try:
                    model.hf(input_ids=ids.to(model.device), use_cache=False)
                except StopForward:
                    pass
            lengths = torch.tensor([len(c) for c in batch])
            mask = torch.arange(width)[None, :] < lengths[:, None]
            for layer, acc in accs.items():
                k = seen[layer][0]
                keys = k[mask.to(k.device)].to(acc_dtype)
                acc.addmm_(keys.T, keys)
            count += int(mask.sum())
    seconds = time.perf_counter() - t0
    for layer, acc in accs.items():
        c = (acc / count).float() if acc_dtype == torch.float32 else acc / count
        stats = KeyStats(c, layer, count, todo[layer], seconds=seconds)
        if use_cache:
            _save(_path(todo[layer]), stats, model)
        out[layer] = memo[todo[layer]] = stats
    return out


def _save(path: Path, stats: KeyStats, model: Model) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file({"second_moment": stats.second_moment.contiguous().cpu()}, tmp, metadata={
            "key": stats.key, "layer": str(stats.layer), "n_tokens": str(stats.n_tokens),
            "base_fingerprint": model.base_fingerprint, "model": model.name})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def solve_psd(a: torch.Tensor, b: torch.Tensor, *, min_ridge: float = 0.0, max_tries: int = 8) -> tuple[torch.Tensor, float]:
    """Solve ``(a + ridge I) x = b`` for symmetric positive semi-definite ``a`` by Cholesky.

    ``ridge`` starts at ``min_ridge`` and, while ``a`` is not numerically positive definite, grows
    from ``1e-6 * mean(diag(a))`` by 10x per try. Returns ``(x, ridge used)``; never raises a bare
    ``LinAlgError`` (a matrix that stays singular raises :class:`KeyStatsError`).
    """
    a64, b64 = a.double(), b.double()
    scale = float(a64.diagonal().abs().mean()) or 1.0
    ridge = float(min_ridge)
    eye = torch.eye(a.shape[0], dtype=torch.float64, device=a.device)
    for i in range(max_tries):
        chol, info = torch.linalg.cholesky_ex(a64 + ridge * eye)
        if int(info) == 0:
            return torch.cholesky_solve(b64, chol).to(b.dtype), ridge
        ridge = max(ridge * 10, 1e-6 * scale * 10 ** i)
    raise KeyStatsError(f"the key covariance stays singular even with ridge {ridge:.3g}; use more n_tokens "
                        "or another corpus")
