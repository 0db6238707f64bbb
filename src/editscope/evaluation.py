"""`evaluate`: what does a model state do on a probe set, and what changed against the base model.

One batched teacher-forced pass per probe set scores, for every probe, the base model's own greedy
continuation (the *check*): the edited model leaves a probe *unchanged* iff its argmax follows the
base's greedy tokens at every position (equivalent to identical greedy decoding, without a decoding
loop). Only probes that changed are then decoded greedily; ``top1`` (greedy output starts with the
target) follows from the greedy tokens. The next-token distribution after the prompt comes from the
check's first position, for KL against the base. In the same pass, probes whose category needs
probabilities (``score_targets``; by default all but ``far``, the bulk of a grid, and any probe with
an alternative target) also get the log-probability of the target and of its alternative
(``meta["target_true"]`` or ``meta["target_new"]``).

Base outputs (greedy continuations, target log-probabilities, top-k next tokens) are computed once
per (base weights fingerprint, probe set) and cached on disk as safetensors under
``<cache>/base_outputs``; a cache whose shapes or keys do not match is recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .metrics.edit_metrics import METRICS, coarse_kl, says, summarize
from .paths import cache_root
from .models.model import Model
from .models.state import tensor_digests
from .probe_versions import probe_digest
from .requests import Probe, ProbeSet, resolve_sep
from .scoring import (
    EncodedPair,
    LayerCache,
    encode_pairs,
    greedy_continuations,
    keep_layer_cache,
    plan_layer_caches,
    score_encoded,
)

from .errors import WorkError

log = logging.getLogger(__name__)

ENGINE_VERSION = 2
DEFAULT_TOP_K = 64
#: categories whose target log-probabilities ``score_targets="auto"`` skips: locality needs only the
#: check. ``control-far`` is an unrelated edit's own far neighbourhood (``runner.plan.own_category``).
UNSCORED_BY_DEFAULT = frozenset({"far", "control-far"})


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


def _alt_of(p: Probe) -> tuple[str | None, str | None]:
    for kind in ("target_true", "target_new"):
        v = p.meta.get(kind)
        if isinstance(v, str) and v.strip() and v != p.target:
            return kind, v
    return None, None


def scored_mask(probes: Sequence[Probe], score_targets: str | Collection[str] = "auto") -> list[bool]:
    """Which probes get target/alternative log-probabilities.

    ``"auto"``: every category except those in :data:`UNSCORED_BY_DEFAULT`, plus any probe with an
    alternative target; ``"all"``; or a collection of category names (again plus probes with an
    alternative, whose ``prob``/``ns`` metrics need it).
    """
    if score_targets == "all":
        return [True] * len(probes)
    if isinstance(score_targets, str) and score_targets != "auto":
        raise ValueError(f"score_targets={score_targets!r}: use 'auto', 'all' or a collection of categories")
    if score_targets == "auto":
        return [p.category not in UNSCORED_BY_DEFAULT or _alt_of(p)[0] is not None for p in probes]
    wanted = set(score_targets)
    return [p.category in wanted or _alt_of(p)[0] is not None for p in probes]


def probes_hash(probes: Sequence[Probe], watch: str | None, top_k: int) -> str:
    """Content hash of everything about a probe set that base outputs depend on."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"v": ENGINE_VERSION, "watch": watch, "k": top_k}).encode())
    for p in probes:
        h.update(json.dumps([p.prompt, p.continuation, _alt_of(p)[1]]).encode())
    return h.hexdigest()


def _pass_key(phash: str, scored: Sequence[bool]) -> str:
    """Names one scoring pass (which sequences it holds), for kept hidden states."""
    return phash + "-" + hashlib.blake2b(bytes(map(bool, scored)), digest_size=8).hexdigest()


def starts_with(ids: Sequence[int], prefix: Sequence[int]) -> bool:
    """Token ids begin with ``prefix`` (greedy output reproduces the target: ``top1``)."""
    return len(ids) >= len(prefix) and tuple(ids[: len(prefix)]) == tuple(prefix)


def _gen_lengths(model: Model, probes: Sequence[Probe], targets: list[EncodedPair], watch: str | None) -> list[int]:
    """Greedy length per probe: the longer of target and watched target, plus one token so that
    "5" followed by "6" (saying 56) is told apart from "5" followed by a newline; at least the
    probe's ``meta["gen_tokens"]`` (questions whose answer comes after a few words, e.g. MQuAKE's)."""
    wl = [0] * len(probes)
    if watch:
        wpairs = encode_pairs(model, [p.prompt for p in probes],
                              [resolve_sep(p.prompt, watch) + watch for p in probes])
        wl = [len(w.cont_ids) for w in wpairs]
    return [max(len(t.cont_ids) + 1, w + 1, int(p.meta.get("gen_tokens", 0)))
            for p, t, w in zip(probes, targets, wl)]


def greedy_by_length(model: Model, prompts: list[str], lengths: list[int], idx: list[int]) -> dict[int, Any]:
    """Greedy continuations of the prompts ``idx`` (index -> Generation), each ``lengths[i]`` tokens
    long (no stop at end-of-sequence), decoded in one batch per distinct length."""
    out: dict[int, Any] = {}
    by_len: dict[int, list[int]] = {}
    for i in idx:
        by_len.setdefault(lengths[i], []).append(i)
    for n, group in sorted(by_len.items()):
        gens = greedy_continuations(model, [prompts[i] for i in group], n, stop_at_eos=False)
        out.update(zip(group, gens))
    return out


def _cache_path(base_fp: str, phash: str) -> Path:
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


def _save_base(path: Path, b: BaseOutputs) -> None:
    from safetensors.torch import save_file

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


def _load_base(path: Path, base_fp: str, phash: str, n: int, top_k: int) -> BaseOutputs | None:
    from safetensors import safe_open

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


@dataclass
class _Passes:
    targets: list[EncodedPair]
    alt_kinds: list[str | None]
    alts: list[EncodedPair | None]
    lengths: list[int]
    scored: list[bool]

    def subset(self, idx: Sequence[int]) -> _Passes:
        return _Passes([self.targets[i] for i in idx], [self.alt_kinds[i] for i in idx],
                       [self.alts[i] for i in idx], [self.lengths[i] for i in idx], [self.scored[i] for i in idx])

    def key(self, i: int) -> tuple:
        """What a probe's outputs on one model state depend on (not its category, watch or meta)."""
        t, a = self.targets[i], self.alts[i]
        return (t.prompt_ids, t.cont_ids, a.cont_ids if a is not None else None, self.lengths[i], self.scored[i])


@dataclass
class _Outcome:
    """One probe's outputs on an edited state (see :class:`StateMemo`)."""

    logprob: float | None
    alt_logprob: float | None
    argmax: tuple[int, ...] | None
    unchanged: bool
    kl: float
    greedy: str
    top1: bool


@dataclass
class StateMemo:
    """Per-probe outputs of one edited model state, shared by the probe sets evaluated on it.

    Several probe sets of a unit can hold the same probe (an unrelated edit's own neighbourhood on
    the study grid repeats the grid; every edit's arithmetic suite holds the whole grid): :func:`evaluate`
    with a memo scores such a probe once per state, and computes its base outputs once. Entries
    are keyed by the token ids of prompt, target and alternative, the greedy length and whether
    the target is scored, per state (weights and interventions, :meth:`Model.state_key`).
    """

    by_state: dict[str, dict[tuple, _Outcome]] = field(default_factory=dict)
    #: per base (``"<fingerprint>/<top_k>"``): each probe's base outputs. They never change, so a
    #: caller may share this dict between memos (the runner keeps it for the whole run).
    base: dict[str, dict[tuple, tuple]] = field(default_factory=dict)

    def for_state(self, state: str) -> dict[tuple, _Outcome]:
        """The outcomes of one edited state."""
        return self.by_state.setdefault(state, {})

    def for_base(self, base: str) -> dict[tuple, tuple]:
        """The base outputs of one base model (see :func:`compute_base_outputs`)."""
        return self.base.setdefault(base, {})


def _encode(model: Model, probes: Sequence[Probe], watch: str | None, scored: list[bool]) -> _Passes:
    prompts = [p.prompt for p in probes]
    targets = encode_pairs(model, prompts, [p.continuation for p in probes])
    alt_info = [_alt_of(p) for p in probes]
    alt_idx = [i for i, (k, _) in enumerate(alt_info) if k and scored[i]]
    alts: list[EncodedPair | None] = [None] * len(probes)
    if alt_idx:
        enc = encode_pairs(model, [prompts[i] for i in alt_idx],
                           [resolve_sep(prompts[i], alt_info[i][1], probes[i].sep) + alt_info[i][1] for i in alt_idx])
        for i, e in zip(alt_idx, enc):
            alts[i] = e
    return _Passes(targets, [k for k, _ in alt_info], alts, _gen_lengths(model, probes, targets, watch), list(scored))


@dataclass
class _Scores:
    checks: list[Any]  # per probe: its prompt + the base's greedy tokens
    logprob: list[float | None]  # per probe: target log-probability (None: not scored)
    alt_logprob: list[float | None]
    target_argmax: list[tuple[int, ...] | None]  # per probe: argmax token at each target position


def _score_all(model: Model, passes: _Passes, greedy_ids: Sequence[tuple[int, ...]], **kw) -> _Scores:
    """One batched call over the checks (every probe) and the scored probes' targets and alternatives.

    ``first_token_ids``/``first_top_k`` apply to the checks: the next-token distribution after the
    prompt does not depend on which continuation follows.
    """
    n = len(passes.targets)
    checks = [EncodedPair(t.prompt_ids, tuple(g)) for t, g in zip(passes.targets, greedy_ids)]
    tgt_idx = [i for i in range(n) if passes.scored[i]]
    alt_idx = [i for i in range(n) if passes.alts[i] is not None]
    pairs = checks + [passes.targets[i] for i in tgt_idx] + [passes.alts[i] for i in alt_idx]
    first = kw.pop("first_token_ids", None)
    if first is not None:
        first = list(first) + [()] * (len(pairs) - n)
    scores = score_encoded(model, pairs, first_token_ids=first, **kw)
    logprob: list[float | None] = [None] * n
    alt: list[float | None] = [None] * n
    argmax: list[tuple[int, ...] | None] = [None] * n
    for j, i in enumerate(tgt_idx):
        logprob[i], argmax[i] = scores[n + j].logprob, scores[n + j].argmax_ids
    for j, i in enumerate(alt_idx):
        alt[i] = scores[n + len(tgt_idx) + j].logprob
    return _Scores(scores[:n], logprob, alt, argmax)


def compute_base_outputs(model: Model, probes: Sequence[Probe], watch: str | None = None,
                         top_k: int = DEFAULT_TOP_K, fingerprint: str | None = None, *,
                         score_targets: str | Collection[str] = "auto",
                         passes: _Passes | None = None, capture: LayerCache | None = None,
                         memo: dict[tuple, Any] | None = None) -> BaseOutputs:
    """Run the (unedited) model over the probes: the reference every edited state is compared to.

    ``passes``: the probes already encoded by :func:`_encode`. ``capture``: also keep the hidden
    states entering ``capture.layer``, over the same pairs an edited pass scores, in the same
    single scoring pass. ``memo``: per-probe base outputs of the probes computed before on this
    base (:class:`StateMemo`); only the others are run (not with ``capture``, which needs them all).
    """
    scored = scored_mask(probes, score_targets) if passes is None else passes.scored
    passes = _encode(model, probes, watch, scored) if passes is None else passes
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
    sc = _score_all(model, passes, greedy_ids, first_top_k=top_k, capture=capture)
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


@dataclass
class EvalResult:
    """Per-probe rows and their aggregates.

    ``rows[i]`` (a dict) has: index, prompt, target, category, meta, logprob, n_tokens, top1,
    alt_kind, alt_logprob, greedy (edited greedy continuation text), base_greedy, base_logprob,
    base_top1, unchanged, kl, says_target (None without a watched target), is_base, base_margin
    (the base's top-1 minus top-2 next-token log-probability after the prompt, nats), token_acc
    (share of target tokens that are the teacher-forced argmax, as EasyEdit scores rewrites) and
    token_agree (share of target positions whose argmax is the base model's, EasyEdit's locality);
    the last two are None where the target was not scored; probe_digest (the probe's content
    digest, :func:`editscope.probe_versions.probe_digest`).
    """

    rows: list[dict[str, Any]]
    probes_name: str
    watch: str | None
    fingerprint: str
    base_fingerprint: str
    resumed_from: int | None = None  # block the edited pass started at (incremental), or None
    n_active_edits: int = 0  # edits active on the model (an identity edit leaves the weights as they are)

    @property
    def is_base(self) -> bool:
        return self.fingerprint == self.base_fingerprint and self.n_active_edits == 0

    def summary(self, metrics: Sequence[str] | None = None, confidence: float = 0.95) -> dict[str, dict[str, dict[str, float]]]:
        """Per category and ``"all"``: each metric's ``value``, 95% ``low``/``high``, ``n``, ``version``."""
        return summarize(self.rows, metrics, confidence)

    def to_frame(self):
        """The rows as a pandas DataFrame (meta flattened to ``meta.<key>`` columns)."""
        import pandas as pd

        flat = []
        for r in self.rows:
            d = {k: v for k, v in r.items() if k != "meta"}
            d.update({f"meta.{k}": v for k, v in r["meta"].items()})
            flat.append(d)
        return pd.DataFrame(flat)


def default_watch(probes: Sequence[Probe]) -> str | None:
    """The edit target whose output rate :func:`evaluate` measures by default: the target of the
    ``target`` probes when they all share one."""
    targets = {p.target for p in probes if p.category == "target"}
    return targets.pop() if len(targets) == 1 else None


def aliases(probe: Probe) -> list[str]:
    """Other answers a probe accepts besides its target (``meta["aliases"]``: e.g. ``"five"`` for
    ``"5"``), for ``top1`` and, on the target probes, for ``says_target``."""
    v = probe.meta.get("aliases")
    if v is None:
        return []
    if isinstance(v, str) or not all(isinstance(a, str) and a.strip() for a in v):
        raise ValueError(f"probe {probe.prompt!r}: meta['aliases'] must be a list of non-blank strings, got {v!r}")
    return list(v)


def _watch_aliases(probes: Sequence[Probe], watch: str | None) -> list[str]:
    out: list[str] = []
    for p in probes:
        if p.category == "target" and p.target == watch:
            out += [a for a in aliases(p) if a not in out]
    return out


def token_match(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of positions where two equally long token id sequences agree (EasyEdit's token
    accuracy: teacher-forced argmax vs the target's tokens, or post- vs pre-edit argmax)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"token sequences of lengths {len(a)} and {len(b)}: need equal, non-zero lengths")
    return sum(x == y for x, y in zip(a, b)) / len(a)


def first_token_margin(top_logprobs: torch.Tensor) -> list[float | None]:
    """Per row of the base's top-k next-token log-probabilities ([n, k], descending): the gap
    between its top-1 and top-2 token in nats (None when k < 2). A small margin is a near-tie
    that any perturbation may flip."""
    if top_logprobs.shape[1] < 2:
        return [None] * top_logprobs.shape[0]
    return (top_logprobs[:, 0] - top_logprobs[:, 1]).double().tolist()


def base_output_path(model: Model, probes: ProbeSet | Sequence[Probe], *, watch: str | None = None,
                     top_k: int = DEFAULT_TOP_K) -> Path:
    """The file :func:`evaluate` caches the base model's outputs for ``probes`` in (same defaults),
    e.g. to ship them to workers that evaluate edits of the same base model."""
    probes = list(probes)
    watch = watch if watch is not None else default_watch(probes)
    return _cache_path(model.base_fingerprint, probes_hash(probes, watch, top_k))


def _edited_outcomes(model: Model, probes: Sequence[Probe], passes: _Passes, base: BaseOutputs,
                     resume: LayerCache | None, memo: dict[tuple, _Outcome] | None) -> list[_Outcome]:
    """Each probe's outputs on the edited state: teacher-force the base's greedy tokens (unchanged
    iff the argmax follows them throughout), then decode greedily only the probes that changed.
    Probes found in ``memo`` are not scored again; those scored are added to it."""
    n = len(probes)
    keys = [passes.key(i) for i in range(n)] if memo is not None else []
    todo = [i for i in range(n) if memo is None or keys[i] not in memo]
    if len(todo) < n:  # kept hidden states hold the whole set's sequences: score the rest in full
        resume, passes_todo = None, passes.subset(todo)
    else:
        passes_todo = passes
    out: list[_Outcome | None] = [memo[keys[i]] if memo is not None and keys[i] in memo else None for i in range(n)]
    if todo:
        top_ids = base.top_ids.tolist()
        sc = _score_all(model, passes_todo, [base.greedy_ids[i] for i in todo],
                        first_token_ids=[top_ids[i] for i in todo], resume=resume)
        changed = [i for j, i in enumerate(todo) if not sc.checks[j].greedy_match]
        gens = greedy_by_length(model, [p.prompt for p in probes], passes.lengths, changed)
        for j, i in enumerate(todo):
            g = gens.get(i)
            o = _Outcome(sc.logprob[j], sc.alt_logprob[j], sc.target_argmax[j], sc.checks[j].greedy_match,
                         coarse_kl(base.top_logprobs[i].tolist(), sc.checks[j].first_logprobs),
                         g.text if g is not None else base.greedy_text[i],
                         starts_with(g.token_ids, passes.targets[i].cont_ids) if g is not None else base.top1[i])
            out[i] = o
            if memo is not None:
                memo[keys[i]] = o
    return out  # type: ignore[return-value]


def evaluate(model: Model, probes: ProbeSet | Sequence[Probe], *, watch: str | None = None,
             top_k: int = DEFAULT_TOP_K, use_cache: bool = True, keep_hidden: int | None = None,
             incremental: bool = True, score_targets: str | Collection[str] = "auto",
             digests: dict[str, str] | None = None, memo: StateMemo | None = None) -> EvalResult:
    """Evaluate the model's current state on ``probes`` against the base model.

    Args:
        model: a loaded model, edited or not. Its base is the first weights it was fingerprinted
            with (:attr:`Model.base_fingerprint`; edit methods record it before changing weights).
        probes: the probe set (categories: target, paraphrase, near, far, general, portability, ...).
        watch: the edit target whose output rate over all probes is measured (``says_target``);
            default: the target of the ``target`` probes when they all share one.
        top_k: base next-token tokens kept for the KL (see ``metrics.edit_metrics.coarse_kl``).
        use_cache: read/write base outputs under ``<cache>/base_outputs``.
        keep_hidden: on the base model, also keep (in memory, on ``model``) the hidden states
            entering this block for every scored sequence. Later evaluations of an edit that changed
            only blocks ``>= keep_hidden`` then run only those blocks: exactly the full-pass result.
            Memory: about ``8 * tokens * hidden`` bytes (fp32, two sequences per probe).
        incremental: use kept hidden states when the edit allows (set False to force full passes).
        score_targets: which probes get target/alternative log-probabilities (``logprob``,
            ``delta_logprob``, ``prob``, ``ns``, ``margin``): ``"auto"`` (every category but
            ``far``, plus probes with an alternative), ``"all"``, or a collection of categories.
            Unscored probes have ``logprob=None``; ``top1``, ``unchanged``, ``kl`` and
            ``says_target`` are computed for every probe either way.
        digests: ``tensor_digests(model.hf)`` of the current weights when the caller already has
            them (the runner evaluates several probe sets per state); default: computed here.
        memo: outputs of probes already scored on this state by an earlier call (another probe set
            holding the same probes); they are reused instead of scored again (see :class:`StateMemo`).

    Raises:
        BaseNotAvailableError: the model is edited and base outputs for these probes were never
            computed (evaluate the probes once before editing, or undo the edit).
    """
    name = probes.name if isinstance(probes, ProbeSet) else "probes"
    probes = list(probes)
    if not probes:
        raise ValueError("probes is empty; give at least one Probe")
    for i, p in enumerate(probes):
        if not isinstance(p, Probe):
            raise TypeError(f"probes[{i}] is {type(p).__name__}, expected Probe")
    if not 1 <= top_k <= model.config.vocab_size:
        raise ValueError(f"top_k={top_k} must be between 1 and the vocabulary size {model.config.vocab_size}")
    watch = watch if watch is not None else default_watch(probes)
    base_fp = model.base_fingerprint
    n_active = len(model.state.edit_stack)
    alias_of = [aliases(p) for p in probes]
    watch_aliases = _watch_aliases(probes, watch)
    now = digests if digests is not None else tensor_digests(model.hf)
    current_fp = model.state_key(now)  # weights and installed interventions
    scored = scored_mask(probes, score_targets)
    phash = probes_hash(probes, watch, top_k)
    path = _cache_path(base_fp, phash)
    base = _load_base(path, base_fp, phash, len(probes), top_k) if use_cache else None
    passes = _encode(model, probes, watch, scored)
    # An active edit that left the weights as they were (the identity control) still takes the
    # edited path: that path's agreement with the base is what it measures.
    is_base = current_fp == base_fp and n_active == 0
    if base is not None and base.target_argmax is None and is_base:
        base = None  # cached by a version that kept no target argmax: the base is here, recompute
    capture, resume = plan_layer_caches(model, _pass_key(phash, scored), keep_hidden, incremental, now)
    missing = [i for i in range(len(probes)) if scored[i] and base is not None and not base.scored[i]]
    if base is None or missing:
        if not is_base:
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
        base_passes = passes if union == scored else _encode(model, probes, watch, union)
        base = compute_base_outputs(model, probes, watch, top_k, fingerprint=base_fp, passes=base_passes,
                                    capture=capture if base_passes is passes else None,
                                    memo=memo.for_base(f"{base_fp}/{top_k}") if memo is not None else None)
        if use_cache:
            _save_base(path, base)
        if base_passes is not passes and capture is not None:
            _score_all(model, passes, base.greedy_ids, capture=capture)
    elif capture is not None:  # base outputs came from disk: one pass just to keep the states
        _score_all(model, passes, base.greedy_ids, capture=capture)
    if capture is not None:
        keep_layer_cache(model, _pass_key(phash, scored), capture)
    n = len(probes)
    if is_base:
        main_lp = [lp if sc else None for lp, sc in zip(base.logprob, scored)]
        alt_lp = [lp if sc else None for lp, sc in zip(base.alt_logprob, scored)]
        top1 = base.top1
        unchanged = [True] * n
        kls = [0.0] * n
        greedy = list(base.greedy_text)
        argmax = base.target_argmax or [None] * n
    else:
        outcomes = _edited_outcomes(model, probes, passes, base, resume,
                                    memo.for_state(f"{current_fp}/{n_active}/{top_k}") if memo is not None else None)
        main_lp, alt_lp = [o.logprob for o in outcomes], [o.alt_logprob for o in outcomes]
        argmax, unchanged = [o.argmax for o in outcomes], [o.unchanged for o in outcomes]
        kls, greedy, top1 = [o.kl for o in outcomes], [o.greedy for o in outcomes], [o.top1 for o in outcomes]
    margins = first_token_margin(base.top_logprobs)
    if base.target_argmax is None and any(scored):
        log.info("the cached base outputs of %s predate token agreement (token_agree reads None); delete %s "
                 "to recompute them", name, path)
    base_argmax = base.target_argmax or [None] * n
    token_acc = [None if a is None or not scored[i] else token_match(a, passes.targets[i].cont_ids)
                 for i, a in enumerate(argmax)]
    token_agree = [None if a is None or b is None or not scored[i] else token_match(a, b)
                   for i, (a, b) in enumerate(zip(argmax, base_argmax))]
    top1 = [t or any(says(greedy[i], a) for a in alias_of[i]) for i, t in enumerate(top1)]
    base_top1 = [t or any(says(base.greedy_text[i], a) for a in alias_of[i]) for i, t in enumerate(base.top1)]

    def says_watch(text: str) -> bool | None:
        if not watch:
            return None
        return says(text, watch) or any(says(text, a) for a in watch_aliases)

    rows = []
    for i, p in enumerate(probes):
        rows.append({
            "index": i, "prompt": p.prompt, "target": p.target, "category": p.category, "meta": dict(p.meta),
            "logprob": main_lp[i], "n_tokens": len(passes.targets[i].cont_ids), "top1": bool(top1[i]),
            "alt_kind": passes.alt_kinds[i], "alt_logprob": alt_lp[i],
            "greedy": greedy[i], "base_greedy": base.greedy_text[i], "base_logprob": base.logprob[i] if scored[i] else None,
            "base_top1": base_top1[i], "unchanged": bool(unchanged[i]), "kl": kls[i],
            "says_target": says_watch(greedy[i]), "is_base": is_base, "base_margin": margins[i],
            "token_acc": token_acc[i], "token_agree": token_agree[i], "probe_digest": probe_digest(p),
        })
    return EvalResult(rows=rows, probes_name=name, watch=watch, fingerprint=current_fp,
                      base_fingerprint=base_fp, resumed_from=resume.layer if resume else None,
                      n_active_edits=n_active)


__all__ = ["BaseNotAvailableError", "BaseOutputs", "EvalResult", "METRICS", "StateMemo", "UNSCORED_BY_DEFAULT",
           "base_output_path", "compute_base_outputs", "default_watch", "evaluate", "greedy_by_length", "scored_mask"]
