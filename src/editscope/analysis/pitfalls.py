"""The pitfalls survey's measures (Li et al., 2024, "Unveiling the Pitfalls of Knowledge Editing for
Large Language Models"): knowledge conflict between two edits, and knowledge distortion after a
round edit.

Conflict (two edits applied in order, ``old`` then ``new``, that cannot both hold; e.g. a reverse
edit "A's husband is B" then "B's wife is C", or a composite pair):

* Conflict Score ``CS = mean 1[P_final(k_new) > P_final(k_old)]``: after both edits, the newer fact
  is the more probable one (higher is better);
* Conflict Magnitude ``CM = mean (P_mid(k_old) - P_final(k_old)) / P_mid(k_old)``: the share of the
  older edit's probability the newer one took away (``P_mid``: after the old edit only).

Distortion (a round edit: ``o -> o'`` then back ``o' -> o`` on the same prompt; ``Obj`` the objects
the prompt admits, e.g. every correct object of a one-to-many relation):

* Distortion ``D = JS(p_before || p_after)``, the Jensen-Shannon divergence (nats, in [0, ln 2]) of
  the distributions over ``Obj`` (each probability renormalised over ``Obj``) before any edit and
  after the round;
* Ignore Rate ``IR = mean over o in Obj of 1[P_before(o) > P_after(o)]``: the objects that lost
  probability although the round should have restored them;
* Failure Rate ``FR``: the share of round edits whose IR exceeds 0.5.

Probabilities are P(object | prompt) of the whole object text (teacher forced, all its tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..requests import EditRequest, resolve_sep
from ..scoring import score_continuations
from ..methods import apply_edit


def _probs(values: Sequence[float], name: str) -> np.ndarray:
    p = np.asarray(values, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"{name}: need a non-empty 1-D sequence of probabilities, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError(f"{name}: probabilities must be finite and in [0, 1]")
    return p


def conflict_score(p_new_final: Sequence[float], p_old_final: Sequence[float]) -> float:
    """CS over edit pairs: the share whose newer fact is more probable than the older after both."""
    a, b = _probs(p_new_final, "p_new_final"), _probs(p_old_final, "p_old_final")
    if a.shape != b.shape:
        raise ValueError(f"p_new_final has {a.size} pairs, p_old_final {b.size}")
    return float(np.mean(a > b))


def conflict_magnitude(p_old_mid: Sequence[float], p_old_final: Sequence[float]) -> float:
    """CM over edit pairs: mean relative drop of the older fact's probability from after the old
    edit to after the new one (pairs whose old fact had probability 0 after its own edit are an
    error: the old edit did not take)."""
    mid, fin = _probs(p_old_mid, "p_old_mid"), _probs(p_old_final, "p_old_final")
    if mid.shape != fin.shape:
        raise ValueError(f"p_old_mid has {mid.size} pairs, p_old_final {fin.size}")
    if np.any(mid <= 0):
        raise ValueError("p_old_mid: a probability of 0 after the old edit (the edit did not take): CM undefined")
    return float(np.mean((mid - fin) / mid))


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in nats of two distributions over the same outcomes (each
    renormalised to sum 1): ``(KL(p||m) + KL(q||m)) / 2`` with ``m = (p + q) / 2``; in [0, ln 2]."""
    a, b = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"p and q must be 1-D of the same non-zero length, got {a.shape} and {b.shape}")
    if np.any(a < 0) or np.any(b < 0) or a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("p and q must be non-negative with a positive sum")
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        keep = x > 0
        return float(np.sum(x[keep] * np.log(x[keep] / m[keep])))

    return max(0.0, (kl(a) + kl(b)) / 2)


def ignore_rate(p_before: Sequence[float], p_after: Sequence[float]) -> float:
    """IR of one round edit: the share of objects whose probability fell."""
    a, b = _probs(p_before, "p_before"), _probs(p_after, "p_after")
    if a.shape != b.shape:
        raise ValueError(f"p_before has {a.size} objects, p_after {b.size}")
    return float(np.mean(a > b))


def failure_rate(ignore_rates: Sequence[float], threshold: float = 0.5) -> float:
    """FR: the share of round edits whose ignore rate exceeds ``threshold``."""
    r = _probs(ignore_rates, "ignore_rates")
    return float(np.mean(r > threshold))


# -- measured on a model --------------------------------------------------------------------------

def object_probs(model: Any, prompt: str, objects: Sequence[str]) -> list[float]:
    """P(object | prompt) of each whole object text (teacher forced)."""
    scores = score_continuations(model, [prompt] * len(objects), [resolve_sep(prompt, o) + o for o in objects])
    return [math.exp(s.logprob) for s in scores]


@dataclass
class ConflictResult:
    p_old_mid: float     # P(old fact) after the old edit
    p_old_final: float   # after both edits
    p_new_final: float   # P(new fact) after both edits


def conflict_pair(model: Any, method: str, old: EditRequest, new: EditRequest, *, prompt: str, old_answer: str,
                  new_answer: str, **hparams: Any) -> ConflictResult:
    """Apply ``old`` then ``new`` with ``method`` and read the two facts' probabilities on ``prompt``
    (the question both edits answer, e.g. the reverse relation's prompt); the model is restored."""
    h1 = apply_edit(model, old, method, **hparams)
    try:
        mid = object_probs(model, prompt, [old_answer])[0]
        h2 = apply_edit(model, new, method, **hparams)
        try:
            fin_old, fin_new = object_probs(model, prompt, [old_answer, new_answer])
        finally:
            h2.undo()
    finally:
        h1.undo()
    return ConflictResult(mid, fin_old, fin_new)


@dataclass
class RoundEditResult:
    objects: list[str]
    p_before: list[float]
    p_after: list[float]
    distortion: float
    ignore_rate: float


def round_edit(model: Any, method: str, request: EditRequest, objects: Sequence[str], **hparams: Any) -> RoundEditResult:
    """Edit ``request.prompt`` to ``target_new``, then back to ``target_true``, and compare the
    distribution over ``objects`` before and after the round; the model is restored."""
    if not request.target_true:
        raise ValueError("round_edit needs request.target_true (the object the second edit restores)")
    if not objects:
        raise ValueError("objects: give the objects the prompt admits (at least the true one)")
    before = object_probs(model, request.prompt, objects)
    back = EditRequest(request.prompt, request.target_true, subject=request.subject, target_true=request.target_new)
    h1 = apply_edit(model, request, method, **hparams)
    try:
        h2 = apply_edit(model, back, method, **hparams)
        try:
            after = object_probs(model, request.prompt, objects)
        finally:
            h2.undo()
    finally:
        h1.undo()
    return RoundEditResult(list(objects), before, after, js_divergence(before, after), ignore_rate(before, after))


__all__ = ["ConflictResult", "RoundEditResult", "conflict_magnitude", "conflict_pair", "conflict_score",
           "failure_rate", "ignore_rate", "js_divergence", "object_probs", "round_edit"]
