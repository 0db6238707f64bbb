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

The pipeline: :mod:`.passes` (probes encoded, one batched scoring call), :mod:`.base_outputs` (the
base model's outputs: memory, disk or computed), :mod:`.outcomes` (each probe's outputs on the
edited state, and the typed :class:`ProbeOutcome`); :func:`evaluate` only orchestrates.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..metrics.edit_metrics import METRICS, summarize
from ..models.model import Model
from ..models.state import tensor_digests
from ..requests import Probe, ProbeSet
from ..scoring import keep_layer_cache, plan_layer_caches
from .base_outputs import BaseNotAvailableError, BaseOutputs, StateOf, base_outputs_for, cache_path, compute_base_outputs
from .outcomes import (ProbeOutcome, StateMemo, base_as_state, default_watch, edited_outcomes, probe_outcomes,
                       token_match)
from .passes import (DEFAULT_TOP_K, UNSCORED_BY_DEFAULT, encode_probes, greedy_by_length, pass_key, probes_hash,
                     scored_mask, starts_with)

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Per-probe outcomes (typed: :class:`ProbeOutcome`), the same as plain rows, and their aggregates.

    ``rows[i]`` (a dict, ``outcomes[i].as_row()``) has: index, prompt, target, category, meta, logprob, n_tokens, top1,
    alt_kind, alt_logprob, greedy (edited greedy continuation text), base_greedy, base_logprob,
    base_top1, unchanged, kl, says_target (None without a watched target), is_base, base_margin
    (the base's top-1 minus top-2 next-token log-probability after the prompt, nats), token_acc
    (share of target tokens that are the teacher-forced argmax, as EasyEdit scores rewrites) and
    token_agree (share of target positions whose argmax is the base model's, EasyEdit's locality);
    the last two are None where the target was not scored; probe_digest (the probe's content
    digest, :func:`editscope.probe_versions.probe_digest`).
    """

    outcomes: list[ProbeOutcome]
    probes_name: str
    watch: str | None
    fingerprint: str
    base_fingerprint: str
    resumed_from: int | None = None  # block the edited pass started at (incremental), or None
    n_active_edits: int = 0  # edits active on the model (an identity edit leaves the weights as they are)

    @property
    def is_base(self) -> bool:
        return self.fingerprint == self.base_fingerprint and self.n_active_edits == 0

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """The outcomes as plain dicts (:meth:`ProbeOutcome.as_row`), as the results store keeps them."""
        return [o.as_row() for o in self.outcomes]

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


def base_output_path(model: Model, probes: ProbeSet | Sequence[Probe], *, watch: str | None = None,
                     top_k: int = DEFAULT_TOP_K) -> Path:
    """The file :func:`evaluate` caches the base model's outputs for ``probes`` in (same defaults),
    e.g. to ship them to workers that evaluate edits of the same base model."""
    probes = list(probes)
    watch = watch if watch is not None else default_watch(probes)
    return cache_path(model.base_fingerprint, probes_hash(probes, watch, top_k))


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
    name, probes = _checked(model, probes, top_k)
    watch = watch if watch is not None else default_watch(probes)
    now = digests if digests is not None else tensor_digests(model.hf)
    state = StateOf.of(model, now)
    scored = scored_mask(probes, score_targets)
    passes = encode_probes(model, probes, watch, scored)
    phash = probes_hash(probes, watch, top_k)
    capture, resume = plan_layer_caches(model, pass_key(phash, scored), keep_hidden, incremental, now)
    base = base_outputs_for(model, probes, passes, state, watch=watch, top_k=top_k, use_cache=use_cache,
                            score_targets=score_targets, capture=capture, memo=memo)
    if capture is not None:
        keep_layer_cache(model, pass_key(phash, scored), capture)
    if state.is_base:
        on_state = base_as_state(base, scored)
    else:
        on_state = edited_outcomes(model, probes, passes, base, resume,
                                   memo.for_state(f"{state.key}/{state.n_active}/{top_k}") if memo is not None else None)
    if base.target_argmax is None and any(scored):
        log.info("the cached base outputs of %s predate token agreement (token_agree reads None); delete %s "
                 "to recompute them", name, cache_path(state.base, phash))
    outcomes = probe_outcomes(probes, passes, base, on_state, watch=watch, is_base=state.is_base)
    return EvalResult(outcomes=outcomes, probes_name=name, watch=watch, fingerprint=state.key,
                      base_fingerprint=state.base, resumed_from=resume.layer if resume else None,
                      n_active_edits=state.n_active)


def _checked(model: Model, probes: ProbeSet | Sequence[Probe], top_k: int) -> tuple[str, list[Probe]]:
    """The probe set's name and its probes as a list, after the checks that name the bad input."""
    name = probes.name if isinstance(probes, ProbeSet) else "probes"
    probes = list(probes)
    if not probes:
        raise ValueError("probes is empty; give at least one Probe")
    for i, p in enumerate(probes):
        if not isinstance(p, Probe):
            raise TypeError(f"probes[{i}] is {type(p).__name__}, expected Probe")
    if not 1 <= top_k <= model.config.vocab_size:
        raise ValueError(f"top_k={top_k} must be between 1 and the vocabulary size {model.config.vocab_size}")
    return name, probes

__all__ = ["BaseNotAvailableError", "BaseOutputs", "EvalResult", "METRICS", "ProbeOutcome", "StateMemo", "UNSCORED_BY_DEFAULT",
           "base_output_path", "compute_base_outputs", "default_watch", "evaluate", "greedy_by_length", "scored_mask",
           "starts_with", "token_match"]
