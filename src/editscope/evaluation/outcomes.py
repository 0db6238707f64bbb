"""What one probe did on one model state: the typed :class:`ProbeOutcome` of an evaluation, and
the per-probe outputs of an edited state (:class:`StateOutcome`, shared through a :class:`StateMemo`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ..metrics.answers import ANSWER_RULES, rule_name_of
from ..metrics.edit_metrics import coarse_kl, says
from ..probe_versions import probe_digest
from ..models.model import Model
from ..requests import Probe
from ..scoring import LayerCache
from .base_outputs import BaseOutputs
from .passes import Passes, greedy_by_length, score_passes, starts_with


@dataclass
class StateOutcome:
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

    by_state: dict[str, dict[tuple, StateOutcome]] = field(default_factory=dict)
    #: per base (``"<fingerprint>/<top_k>"``): each probe's base outputs. They never change, so a
    #: caller may share this dict between memos (the runner keeps it for the whole run).
    base: dict[str, dict[tuple, tuple]] = field(default_factory=dict)

    def for_state(self, state: str) -> dict[tuple, StateOutcome]:
        """The outcomes of one edited state."""
        return self.by_state.setdefault(state, {})

    def for_base(self, base: str) -> dict[tuple, tuple]:
        """The base outputs of one base model (see :func:`compute_base_outputs`)."""
        return self.base.setdefault(base, {})


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


def watch_aliases(probes: Sequence[Probe], watch: str | None) -> list[str]:
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


def edited_outcomes(model: Model, probes: Sequence[Probe], passes: Passes, base: BaseOutputs,
                     resume: LayerCache | None, memo: dict[tuple, StateOutcome] | None) -> list[StateOutcome]:
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
    out: list[StateOutcome | None] = [memo[keys[i]] if memo is not None and keys[i] in memo else None for i in range(n)]
    if todo:
        top_ids = base.top_ids.tolist()
        sc = score_passes(model, passes_todo, [base.greedy_ids[i] for i in todo],
                        first_token_ids=[top_ids[i] for i in todo], resume=resume)
        changed = [i for j, i in enumerate(todo) if not sc.checks[j].greedy_match]
        gens = greedy_by_length(model, [p.prompt for p in probes], passes.lengths, changed)
        for j, i in enumerate(todo):
            g = gens.get(i)
            o = StateOutcome(sc.logprob[j], sc.alt_logprob[j], sc.target_argmax[j], sc.checks[j].greedy_match,
                         coarse_kl(base.top_logprobs[i].tolist(), sc.checks[j].first_logprobs),
                         g.text if g is not None else base.greedy_text[i],
                         starts_with(g.token_ids, passes.targets[i].cont_ids) if g is not None else base.top1[i])
            out[i] = o
            if memo is not None:
                memo[keys[i]] = o
    return out  # type: ignore[return-value]


def base_as_state(base: BaseOutputs, scored: Sequence[bool]) -> list[StateOutcome]:
    """The base model's own outputs read as a state: nothing changed, KL 0."""
    argmax = base.target_argmax or [None] * len(scored)
    return [StateOutcome(lp if sc else None, alt if sc else None, am, True, 0.0, text, t1)
            for lp, alt, am, text, t1, sc in zip(base.logprob, base.alt_logprob, argmax, base.greedy_text, base.top1, scored)]


@dataclass(frozen=True)
class ProbeOutcome:
    """What one probe did on one model state, against the base model.

    Log-probabilities are in nats, summed over the target's tokens (None where the target was not
    scored: see :func:`~editscope.evaluation.passes.scored_mask`); texts are greedy continuations;
    ``base_margin`` is the base's top-1 minus top-2 next-token log-probability after the prompt
    (nats); ``token_acc`` / ``token_agree`` are shares of target positions (EasyEdit's token
    accuracy and locality). Protocols: ``logprob``, ``alt_logprob``, ``token_*`` and ``kl`` are
    teacher-forced; ``greedy``, ``top1``, ``unchanged`` and ``says_target`` greedy with the probe's cap.
    """

    index: int
    prompt: str
    target: str
    category: str
    meta: dict[str, Any]
    logprob: float | None
    n_tokens: int
    top1: bool
    alt_kind: str | None
    alt_logprob: float | None
    greedy: str
    base_greedy: str
    base_logprob: float | None
    base_top1: bool
    unchanged: bool
    kl: float
    says_target: bool | None
    is_base: bool
    base_margin: float | None
    token_acc: float | None
    token_agree: float | None
    probe_digest: str

    @property
    def answer_rule(self) -> str:
        """The rule this probe's answers are read by (``integer``, ``text``, ...; metrics.answers)."""
        return rule_name_of(self.target, self.meta)

    @property
    def answer(self) -> object | None:
        """The answer read from the greedy continuation by :attr:`answer_rule` (None: no answer)."""
        return ANSWER_RULES[self.answer_rule].parse(self.greedy or "")[0]

    def as_row(self) -> dict[str, Any]:
        """The outcome as the plain dict the results store keeps (field order, meta copied)."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["meta"] = dict(self.meta)
        return row


def probe_outcomes(probes: Sequence[Probe], passes: Passes, base: BaseOutputs, on_state: Sequence[StateOutcome], *,
                   watch: str | None, is_base: bool) -> list[ProbeOutcome]:
    """Each probe's :class:`ProbeOutcome` from its outputs on the state and on the base.

    ``top1`` also counts an accepted alias (``meta["aliases"]``); ``says_target`` is whether the
    greedy continuation says ``watch`` (or an alias of it on the target probes), None without one.
    """
    n = len(probes)
    scored = passes.scored
    alias_of = [aliases(p) for p in probes]
    watched = watch_aliases(probes, watch)
    margins = first_token_margin(base.top_logprobs)
    base_argmax = base.target_argmax or [None] * n

    def says_watch(text: str) -> bool | None:
        if not watch:
            return None
        return says(text, watch) or any(says(text, a) for a in watched)

    out = []
    for i, (p, s) in enumerate(zip(probes, on_state)):
        token_acc = None if s.argmax is None or not scored[i] else token_match(s.argmax, passes.targets[i].cont_ids)
        token_agree = (None if s.argmax is None or base_argmax[i] is None or not scored[i]
                       else token_match(s.argmax, base_argmax[i]))
        out.append(ProbeOutcome(
            index=i, prompt=p.prompt, target=p.target, category=p.category, meta=dict(p.meta),
            logprob=s.logprob, n_tokens=len(passes.targets[i].cont_ids),
            top1=bool(s.top1 or any(says(s.greedy, a) for a in alias_of[i])),
            alt_kind=passes.alt_kinds[i], alt_logprob=s.alt_logprob, greedy=s.greedy, base_greedy=base.greedy_text[i],
            base_logprob=base.logprob[i] if scored[i] else None,
            base_top1=base.top1[i] or any(says(base.greedy_text[i], a) for a in alias_of[i]),
            unchanged=bool(s.unchanged), kl=s.kl, says_target=says_watch(s.greedy), is_base=is_base,
            base_margin=margins[i], token_acc=token_acc, token_agree=token_agree, probe_digest=probe_digest(p)))
    return out


__all__ = ["ProbeOutcome", "StateMemo", "StateOutcome", "aliases", "base_as_state", "default_watch", "edited_outcomes",
           "first_token_margin", "probe_outcomes", "token_match", "watch_aliases"]
