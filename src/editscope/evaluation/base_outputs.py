"""The base model's outputs on a probe set: the reference every edited state is compared to.

Computed once per (base weights fingerprint, probe set), kept in memory by a :class:`StateMemo` and
cached on disk as safetensors under ``<cache>/base_outputs``; a cache whose shapes or keys do not match
is recomputed, never used. :func:`base_outputs_for` is the one step that loads, computes or refuses them."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import WorkError
from ..models.model import Model
from ..paths import cache_root
from ..requests import Probe
from ..scoring import LayerCache
from .passes import (DEFAULT_TOP_K, ENGINE_VERSION, Passes, encode_probes, greedy_by_length, probes_hash, score_passes,
                     scored_mask, starts_with)

log = logging.getLogger(__name__)


class BaseNotAvailableError(WorkError, RuntimeError):
    """The model is edited and the base outputs for this probe set were never computed."""


@dataclass
class BaseOutputs:
    """The base model's outputs on a probe set, aligned with its probes."""

    fingerprint: str
    probes_hash: str
    logprob: list[float | None]  # None where the probe's target was not scored
    alt_logprob: list[float | None]
    top1: list[bool]
    greedy_ids: list[tuple[int, ...]]
    greedy_text: list[str]
    top_ids: torch.Tensor  # [n, k] int64: the base's top-k next tokens after each prompt
    top_logprobs: torch.Tensor  # [n, k] float32: their log-probabilities
    #: per probe, the base's teacher-forced argmax token at each target position (None where the
    #: target was not scored); None for base outputs cached by a version that did not keep them
    target_argmax: list[tuple[int, ...] | None] | None = None

    @property
    def scored(self) -> list[bool]:
        return [lp is not None for lp in self.logprob]


def cache_path(base_fp: str, phash: str) -> Path:
    return cache_root() / "base_outputs" / f"{base_fp}-{phash}.safetensors"


def _ragged(seqs: Sequence[Sequence[int] | None], ids_key: str, len_key: str) -> dict[str, torch.Tensor]:
    """Token id sequences as a -1-padded ``[n, longest]`` tensor (``ids_key``) and their lengths
    (``len_key``; -1 for None), as the base-output cache stores them."""
    lens = torch.tensor([-1 if q is None else len(q) for q in seqs], dtype=torch.int64)
    ids = torch.full((len(seqs), max(int(lens.max()), 0) if len(seqs) else 0), -1, dtype=torch.int64)
    for i, q in enumerate(seqs):
        if q:
            ids[i, : len(q)] = torch.tensor(list(q), dtype=torch.int64)
    return {ids_key: ids, len_key: lens}


def _unragged(t: dict[str, torch.Tensor], ids_key: str, len_key: str) -> list[tuple[int, ...] | None] | None:
    """:func:`_ragged` read back; None when the file has no ``ids_key``."""
    if ids_key not in t:
        return None
    return [None if k < 0 else tuple(row[:k]) for row, k in zip(t[ids_key].tolist(), t[len_key].tolist())]


def save_base(path: Path, b: BaseOutputs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(b.logprob)
    tensors = {
        **_ragged(b.greedy_ids, "greedy_ids", "greedy_len"),
        **({} if b.target_argmax is None else _ragged(b.target_argmax, "target_argmax", "target_argmax_len")),
        "logprob": torch.tensor([math.nan if a is None else a for a in b.logprob], dtype=torch.float64),
        "alt_logprob": torch.tensor([math.nan if a is None else a for a in b.alt_logprob], dtype=torch.float64),
        "top1": torch.tensor(b.top1, dtype=torch.bool),
        "top_ids": b.top_ids.contiguous(), "top_logprobs": b.top_logprobs.contiguous(),
    }
    meta = {"fingerprint": b.fingerprint, "probes_hash": b.probes_hash, "n": str(n),
            "engine_version": str(ENGINE_VERSION), "greedy_text": json.dumps(b.greedy_text)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_base(path: Path, base_fp: str, phash: str, n: int, top_k: int) -> BaseOutputs | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
        ok = (meta.get("fingerprint") == base_fp and meta.get("probes_hash") == phash
              and meta.get("n") == str(n) and t["logprob"].shape == (n,)
              and t["top_ids"].shape == (n, top_k) and t["top_logprobs"].shape == (n, top_k)
              and t["greedy_ids"].shape[0] == n)
        if not ok:
            log.warning("base-output cache %s does not match this model/probe set; recomputing", path)
            return None
        texts = json.loads(meta["greedy_text"])
        return BaseOutputs(
            fingerprint=base_fp, probes_hash=phash,
            logprob=[None if math.isnan(a) else a for a in t["logprob"].tolist()],
            alt_logprob=[None if math.isnan(a) else a for a in t["alt_logprob"].tolist()],
            top1=[bool(x) for x in t["top1"].tolist()],
            greedy_ids=_unragged(t, "greedy_ids", "greedy_len"),
            greedy_text=texts, top_ids=t["top_ids"], top_logprobs=t["top_logprobs"],
            target_argmax=_unragged(t, "target_argmax", "target_argmax_len"),
        )
    except Exception as e:  # corrupt file: never trust it
        log.warning("base-output cache %s is unreadable (%s); recomputing", path, e)
        return None


def compute_base_outputs(model: Model, probes: Sequence[Probe], watch: str | None = None,
                         top_k: int = DEFAULT_TOP_K, fingerprint: str | None = None, *,
                         score_targets: str | Collection[str] = "auto",
                         passes: Passes | None = None, capture: LayerCache | None = None,
                         memo: dict[tuple, Any] | None = None) -> BaseOutputs:
    """Run the (unedited) model over the probes: the reference every edited state is compared to.

    ``passes``: the probes already encoded by :func:`encode_probes`. ``capture``: also keep the hidden
    states entering ``capture.layer``, over the same pairs an edited pass scores, in the same
    single scoring pass. ``memo``: per-probe base outputs of the probes computed before on this
    base (:class:`StateMemo`); only the others are run (not with ``capture``, which needs them all).
    """
    scored = scored_mask(probes, score_targets) if passes is None else passes.scored
    passes = encode_probes(model, probes, watch, scored) if passes is None else passes
    n = len(probes)
    if memo is not None and capture is None:
        keys = [passes.key(i) for i in range(n)]
        todo = [i for i in range(n) if keys[i] not in memo]
        if todo:
            sub = compute_base_outputs(model, [probes[i] for i in todo], watch, top_k, fingerprint,
                                       passes=passes.subset(todo))
            for j, i in enumerate(todo):
                memo[keys[i]] = _base_part(sub, j)
        return _base_of_parts([memo[k] for k in keys], fingerprint or model.fingerprint(),
                              probes_hash(probes, watch, top_k), top_k)
    gens = greedy_by_length(model, [p.prompt for p in probes], passes.lengths, list(range(n)))
    greedy_ids = [gens[i].token_ids for i in range(n)]
    sc = score_passes(model, passes, greedy_ids, first_top_k=top_k, capture=capture)
    return BaseOutputs(
        fingerprint=fingerprint or model.fingerprint(), probes_hash=probes_hash(probes, watch, top_k),
        logprob=sc.logprob, alt_logprob=sc.alt_logprob,
        top1=[starts_with(g, t.cont_ids) for g, t in zip(greedy_ids, passes.targets)], greedy_ids=greedy_ids,
        greedy_text=[gens[i].text for i in range(n)],
        top_ids=torch.tensor([s.first_top_ids for s in sc.checks], dtype=torch.int64).reshape(n, top_k),
        top_logprobs=torch.tensor([s.first_top_logprobs for s in sc.checks], dtype=torch.float32).reshape(n, top_k),
        target_argmax=sc.target_argmax,
    )


def _base_part(b: BaseOutputs, i: int) -> tuple:
    """Probe ``i``'s base outputs (what :func:`_base_of_parts` reassembles)."""
    return (b.logprob[i], b.alt_logprob[i], b.top1[i], b.greedy_ids[i], b.greedy_text[i], b.top_ids[i],
            b.top_logprobs[i], b.target_argmax[i] if b.target_argmax is not None else None)


def _base_of_parts(parts: list[tuple], fingerprint: str, phash: str, top_k: int) -> BaseOutputs:
    n = len(parts)
    return BaseOutputs(
        fingerprint=fingerprint, probes_hash=phash, logprob=[p[0] for p in parts], alt_logprob=[p[1] for p in parts],
        top1=[p[2] for p in parts], greedy_ids=[p[3] for p in parts], greedy_text=[p[4] for p in parts],
        top_ids=torch.stack([p[5] for p in parts]).reshape(n, top_k) if n else torch.zeros(0, top_k, dtype=torch.int64),
        top_logprobs=torch.stack([p[6] for p in parts]).reshape(n, top_k) if n else torch.zeros(0, top_k),
        target_argmax=[p[7] for p in parts])




@dataclass(frozen=True)
class StateOf:
    """Which state a model is in for an evaluation: ``key`` (weights and installed interventions,
    :meth:`Model.state_key`), ``base`` (the base weights' fingerprint) and the number of edits active.
    An active edit that left the weights as they were (the identity control) still takes the edited
    path: that path's agreement with the base is what it measures."""

    key: str
    base: str
    n_active: int

    @classmethod
    def of(cls, model: Model, digests: dict[str, str]) -> StateOf:
        return cls(model.state_key(digests), model.base_fingerprint, len(model.state.edit_stack))

    @property
    def is_base(self) -> bool:
        return self.key == self.base and self.n_active == 0


def base_outputs_for(model: Model, probes: Sequence[Probe], passes: Passes, state: StateOf, *, watch: str | None,
                     top_k: int, use_cache: bool, score_targets: str | Collection[str],
                     capture: LayerCache | None, memo: Any | None) -> BaseOutputs:
    """The base outputs of ``probes``: from the disk cache (``use_cache``), else computed when the
    model is the base (saved to the cache; ``capture`` filled in the same pass), else refused.
    ``memo``: a :class:`~editscope.evaluation.outcomes.StateMemo` whose base outputs are reused.

    Raises:
        BaseNotAvailableError: the model is edited and the base outputs (or the target
            log-probabilities ``score_targets`` asks for) were never computed.
    """
    scored = passes.scored
    phash = probes_hash(probes, watch, top_k)
    path = cache_path(state.base, phash)
    base = load_base(path, state.base, phash, len(probes), top_k) if use_cache else None
    if base is not None and base.target_argmax is None and state.is_base:
        base = None  # cached by a version that kept no target argmax: the base is here, recompute
    missing = [i for i in range(len(probes)) if scored[i] and base is not None and not base.scored[i]]
    if base is None or missing:
        if not state.is_base:
            if base is None:
                raise BaseNotAvailableError(
                    "the model is edited and the base model's outputs for this probe set are not cached. "
                    "Call es.evaluate(model, probes) once before editing (or undo the edit first).")
            cats = sorted({probes[i].category for i in missing})
            raise BaseNotAvailableError(
                f"the cached base outputs have no target log-probabilities for {len(missing)} probes "
                f"(categories {cats}) that score_targets={score_targets!r} asks for. Evaluate the base "
                "model once with the same score_targets before editing, or undo the edit first.")
        union = [a or (base is not None and b) for a, b in zip(scored, base.scored if base else scored)]
        base_passes = passes if union == scored else encode_probes(model, probes, watch, union)
        base = compute_base_outputs(model, probes, watch, top_k, fingerprint=state.base, passes=base_passes,
                                    capture=capture if base_passes is passes else None,
                                    memo=memo.for_base(f"{state.base}/{top_k}") if memo is not None else None)
        if use_cache:
            save_base(path, base)
        if base_passes is not passes and capture is not None:
            score_passes(model, passes, base.greedy_ids, capture=capture)
    elif capture is not None:  # base outputs came from disk: one pass just to keep the states
        score_passes(model, passes, base.greedy_ids, capture=capture)
    return base


__all__ = ["BaseNotAvailableError", "BaseOutputs", "StateOf", "base_outputs_for", "cache_path", "compute_base_outputs",
           "load_base", "save_base"]
