"""Probes encoded for scoring and one batched scoring call: which probes get target
log-probabilities, the greedy length of each, the content hash base outputs are cached under."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from ..models.model import Model
from ..requests import Probe, resolve_sep
from ..scoring import EncodedPair, encode_pairs, greedy_continuations, score_encoded

ENGINE_VERSION = 2
DEFAULT_TOP_K = 64
#: categories whose target log-probabilities ``score_targets="auto"`` skips: locality needs only the
#: check. ``control-far`` is an unrelated edit's own far neighbourhood (``runner.plan.own_category``).
UNSCORED_BY_DEFAULT = frozenset({"far", "control-far"})


def alt_of(p: Probe) -> tuple[str | None, str | None]:
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
        return [p.category not in UNSCORED_BY_DEFAULT or alt_of(p)[0] is not None for p in probes]
    wanted = set(score_targets)
    return [p.category in wanted or alt_of(p)[0] is not None for p in probes]


def probes_hash(probes: Sequence[Probe], watch: str | None, top_k: int) -> str:
    """Content hash of everything about a probe set that base outputs depend on."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"v": ENGINE_VERSION, "watch": watch, "k": top_k}).encode())
    for p in probes:
        h.update(json.dumps([p.prompt, p.continuation, alt_of(p)[1]]).encode())
    return h.hexdigest()


def pass_key(phash: str, scored: Sequence[bool]) -> str:
    """Names one scoring pass (which sequences it holds), for kept hidden states."""
    return phash + "-" + hashlib.blake2b(bytes(map(bool, scored)), digest_size=8).hexdigest()


def starts_with(ids: Sequence[int], prefix: Sequence[int]) -> bool:
    """Token ids begin with ``prefix`` (greedy output reproduces the target: ``top1``)."""
    return len(ids) >= len(prefix) and tuple(ids[: len(prefix)]) == tuple(prefix)


def gen_lengths(model: Model, probes: Sequence[Probe], targets: list[EncodedPair], watch: str | None) -> list[int]:
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


@dataclass
class Passes:
    targets: list[EncodedPair]
    alt_kinds: list[str | None]
    alts: list[EncodedPair | None]
    lengths: list[int]
    scored: list[bool]

    def subset(self, idx: Sequence[int]) -> Passes:
        return Passes([self.targets[i] for i in idx], [self.alt_kinds[i] for i in idx],
                       [self.alts[i] for i in idx], [self.lengths[i] for i in idx], [self.scored[i] for i in idx])

    def key(self, i: int) -> tuple:
        """What a probe's outputs on one model state depend on (not its category, watch or meta)."""
        t, a = self.targets[i], self.alts[i]
        return (t.prompt_ids, t.cont_ids, a.cont_ids if a is not None else None, self.lengths[i], self.scored[i])


def encode_probes(model: Model, probes: Sequence[Probe], watch: str | None, scored: list[bool]) -> Passes:
    prompts = [p.prompt for p in probes]
    targets = encode_pairs(model, prompts, [p.continuation for p in probes])
    alt_info = [alt_of(p) for p in probes]
    alt_idx = [i for i, (k, _) in enumerate(alt_info) if k and scored[i]]
    alts: list[EncodedPair | None] = [None] * len(probes)
    if alt_idx:
        enc = encode_pairs(model, [prompts[i] for i in alt_idx],
                           [resolve_sep(prompts[i], alt_info[i][1], probes[i].sep) + alt_info[i][1] for i in alt_idx])
        for i, e in zip(alt_idx, enc):
            alts[i] = e
    return Passes(targets, [k for k, _ in alt_info], alts, gen_lengths(model, probes, targets, watch), list(scored))


@dataclass
class Scores:
    checks: list[Any]  # per probe: its prompt + the base's greedy tokens
    logprob: list[float | None]  # per probe: target log-probability (None: not scored)
    alt_logprob: list[float | None]
    target_argmax: list[tuple[int, ...] | None]  # per probe: argmax token at each target position


def score_passes(model: Model, passes: Passes, greedy_ids: Sequence[tuple[int, ...]], **kw) -> Scores:
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
    return Scores(scores[:n], logprob, alt, argmax)


__all__ = ["DEFAULT_TOP_K", "ENGINE_VERSION", "Passes", "Scores", "UNSCORED_BY_DEFAULT", "alt_of", "encode_probes",
           "gen_lengths", "greedy_by_length", "pass_key", "probes_hash", "score_passes", "scored_mask", "starts_with"]
