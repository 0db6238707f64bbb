"""Evaluation protocols a probe set can be read under (docs/architecture.md "Protocols").

* ``greedy`` (the default): the greedy continuation is decoded for the target's length plus one
  token, enough to tell "5" from "56"; efficacy reads the answer in it by the probe's answer rule.
* ``generate``: free generation, as "The Mirage of Model Editing" (Yang et al., 2025) evaluates:
  the model continues for up to ``tokens`` tokens and its answer, up to the first clause mark, must
  *be* the target after normalisation (the ``text-exact`` answer rule) -- a teacher-forced token
  accuracy or a first-token match can credit an edit whose generated answer is something else.

:func:`free_generation` rewrites a probe set for the second protocol (the probes' meta records it,
so a probe's content digest, :mod:`editscope.probe_versions`, tells the two protocols apart).
"""

from __future__ import annotations

from ..metrics.answers import is_integer_literal
from ..requests import Probe, ProbeSet

#: the categories whose probes ask for an answer (the others keep their own rule for locality)
ANSWER_CATEGORIES = ("target", "paraphrase", "near", "portability")


def free_generation(probes: ProbeSet, tokens: int) -> ProbeSet:
    """``probes`` decoded for at least ``tokens`` tokens, their answers read by exact match of the
    normalised text up to the first clause mark (integers by the integer rule)."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"generate={tokens!r}: give the number of tokens to generate (an integer >= 1, e.g. 20)")
    out = []
    for p in probes:
        meta = dict(p.meta)
        meta["gen_tokens"] = max(int(meta.get("gen_tokens", 0)), tokens)
        meta["protocol"] = "generate"
        if p.category in ANSWER_CATEGORIES and "answer_rule" not in meta and not is_integer_literal(p.target):
            meta["answer_rule"] = "text-exact"
        out.append(Probe(p.prompt, p.target, p.category, meta=meta, sep=p.sep))
    return ProbeSet(out, name=probes.name)


def with_answer_rule(probes: ProbeSet, rule: str | None) -> ProbeSet:
    """``probes`` with every answer read by ``rule`` (unchanged when None)."""
    if rule is None:
        return probes
    return ProbeSet([Probe(p.prompt, p.target, p.category, meta={**p.meta, "answer_rule": rule}, sep=p.sep)
                     for p in probes], name=probes.name)


__all__ = ["ANSWER_CATEGORIES", "free_generation", "with_answer_rule"]
