"""Strength matching: an applied weight edit scaled so that it reaches a stated P(target | prompt).

Methods differ in how hard they push the target at their defaults, and a weaker push changes less
elsewhere; comparing them (or a method and its controls) at their defaults confounds locality with
strength. Any weight-delta edit ``W + delta`` is moved along its own direction to ``W + a * delta``
with the scale ``a`` chosen so that the mean P(target | prompt) over the edit's requests equals
``p`` (within ``tolerance``): a calibrated scale of the delta, the same rule for every method
(fine-tuning family, LoRA merged, ROME, MEMIT, AlphaEdit). ``a`` is found by bisection on
``[0, 1]`` when the edit overshoots, and by growing it up to ``max_scale`` when it falls short.
An edit that cannot reach ``p`` keeps its own delta (``a = 1``) and is marked ``reached: False``:
reports list it and never average it in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import InputError
from ..models.model import Model
from ..requests import EditRequest
from ..scoring import encode_pairs, score_encoded
from .handle import EditHandle, parameters

#: default |achieved - wanted| P(target) at which the search stops
TOLERANCE = 0.01
#: the largest multiple of the method's own delta tried when it falls short
MAX_SCALE = 4.0


class StrengthError(InputError, ValueError):
    """A strength level that is not a probability, or an edit kind that has no delta to scale."""


def check_level(p: float) -> float:
    """``p`` as a float in (0, 1), or :class:`StrengthError` naming it."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < float(p) < 1.0:
        raise StrengthError(f"strength.p={p!r} must be a probability strictly between 0 and 1 (e.g. 0.5 or 0.9)")
    return float(p)


def p_target(model: Model, requests: Sequence[EditRequest]) -> float:
    """Mean P(target_new | prompt) over ``requests`` (the whole target: product over its tokens)."""
    pairs = encode_pairs(model, [r.prompt for r in requests], [r.continuation for r in requests])
    return sum(math.exp(s.logprob) for s in score_encoded(model, pairs)) / len(requests)


def scale_to_strength(model: Model, handle: EditHandle, requests: Sequence[EditRequest], p: float, *,
                      tolerance: float = TOLERANCE, max_scale: float = MAX_SCALE, iters: int = 40) -> dict:
    """Scale the applied (not yet activated) weight edit of ``handle`` so that mean P(target) is ``p``.

    Returns what the unit stores: ``strength_p`` (wanted), ``p_target`` (achieved), ``strength_scale``
    (``a``), ``strength_reached``, ``strength_evals`` (forward passes) and ``update_norm`` (the
    Frobenius norm of the final delta over every touched tensor).
    """
    p = check_level(p)
    if handle.kind != "weights":
        raise StrengthError(f"strength matching scales a weight delta; method {handle.method!r} edits by "
                            f"{handle.kind} intervention (remove `strength:` for it)")
    before = handle.weights_before()  # the undo snapshot: read, never written
    params = parameters(model, list(before))
    delta = {n: params[n].detach() - before[n] for n in before}
    evals = 0

    def at(a: float) -> float:
        nonlocal evals
        with torch.no_grad():
            for n, w in params.items():
                w.copy_(before[n] + a * delta[n])
        evals += 1
        return p_target(model, requests)

    p1 = at(1.0)
    lo, hi, p_hi = 0.0, 1.0, p1
    while p_hi < p:  # falls short: grow the delta until it gets there, or give up at max_scale
        if hi >= max_scale:
            at(1.0)
            return _result(p, p1, 1.0, False, evals, delta)
        lo, hi = hi, min(hi * 1.5, max_scale)
        p_hi = at(hi)
    best_a, best_p = hi, p_hi
    for _ in range(iters):
        if abs(best_p - p) <= tolerance:
            break
        mid = (lo + hi) / 2
        got = at(mid)
        if abs(got - p) < abs(best_p - p):
            best_a, best_p = mid, got
        if got < p:
            lo = mid
        else:
            hi = mid
    final = at(best_a)
    return _result(p, final, best_a, abs(final - p) <= tolerance, evals, delta)


def _result(p: float, achieved: float, scale: float, reached: bool, evals: int, delta: dict) -> dict:
    norm = scale * math.sqrt(sum(float(d.double().norm()) ** 2 for d in delta.values()))
    return {"strength_p": p, "p_target": achieved, "strength_scale": scale, "strength_reached": bool(reached),
            "strength_evals": evals, "update_norm": norm}


__all__ = ["MAX_SCALE", "StrengthError", "TOLERANCE", "check_level", "p_target", "scale_to_strength"]
