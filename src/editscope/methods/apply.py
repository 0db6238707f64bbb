"""`apply_edit`: validate, snapshot, run a method, guard the result, return an `EditHandle`.

The numerical guard is shared by every method: after the method ran, non-finite values in any
touched parameter, or a mean target loss that got worse than before by more than
``guard_tolerance`` nats per token, undo the edit and raise :class:`EditFailed`. Any exception
raised by the method itself also rolls the weights back first. Nothing is ever half-applied.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from ..interventions import installed
from ..metrics.answers import ANSWER_RULES, rule_name_of
from ..models.model import Model
from ..requests import EditRequest
from ..evaluation import greedy_by_length, starts_with
from ..scoring import encode_pairs, score_encoded
from .base import NO_OP_MARK, EditFailed, EditMethod, NoOpEdit, get_method
from .handle import EditHandle, parameters
from .strength import TOLERANCE, StrengthError, check_level, scale_to_strength
from .presets import with_preset

DEFAULT_GUARD_TOLERANCE = 0.5  # nats per target token


def _requests(requests: EditRequest | Sequence[EditRequest]) -> list[EditRequest]:
    if isinstance(requests, EditRequest):
        return [requests]
    if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence):
        raise TypeError(f"requests must be an EditRequest or a list of them, got {type(requests).__name__}")
    out = list(requests)
    if not out:
        raise ValueError("requests is empty; give at least one EditRequest")
    for i, r in enumerate(out):
        if not isinstance(r, EditRequest):
            raise TypeError(f"requests[{i}] is {type(r).__name__}, expected EditRequest(prompt=..., target_new=...)")
    return out


def nonfinite_interventions(model: Model, handle: EditHandle) -> list[str]:
    """``site/tensor`` names of non-finite floating tensors in the interventions this edit changed."""
    live = installed(model)
    return [f"{site}/{k}" for site in handle._changed_sites() if site in live
            for k, t in live[site].tensors().items() if t.is_floating_point() and not torch.isfinite(t).all()]


def target_losses(model: Model, requests: Sequence[EditRequest]) -> list[float]:
    """Mean negative log-likelihood per target token of each request's ``target_new`` (nats)."""
    pairs = encode_pairs(model, [r.prompt for r in requests], [r.continuation for r in requests])
    return [-s.logprob / len(s.token_ids) for s in score_encoded(model, pairs)]


def refuse_no_op_edits(model: Model, requests: Sequence[EditRequest]) -> None:
    """Raise :class:`NoOpEdit` for the first request whose target the model already gives: its
    greedy continuation (target tokens + 1, the evaluation's cap) reaches the target by the answer
    rule (:mod:`editscope.metrics.answers`), or starts with the target's tokens ("12" for the target
    "1", which token-level metrics would count as reached)."""
    pairs = encode_pairs(model, [r.prompt for r in requests], [r.continuation for r in requests])
    gens = greedy_by_length(model, [r.prompt for r in requests], [len(p.cont_ids) + 1 for p in pairs],
                            list(range(len(requests))))
    for i, r in enumerate(requests):
        g = gens[i]
        rule = ANSWER_RULES[rule_name_of(r.target_new)]
        answer, _ = rule.parse(g.text)
        said = answer if answer is not None else g.text.strip()
        if rule.reaches(g.text, [r.target_new]):
            why = f"the model already answers {said!r} ({g.text!r})"
        elif starts_with(g.token_ids, pairs[i].cont_ids):
            why = (f"the model's answer {said!r} ({g.text!r}) starts with the target's tokens, so token-level "
                   "metrics would count the edit as done before it is made")
        else:
            continue
        raise NoOpEdit(f"EditRequest(prompt={r.prompt!r}, target_new={r.target_new!r}){NO_OP_MARK}{why}; give a "
                       "target_new that differs from the model's answer")


def _validated(model: Model, requests: EditRequest | Sequence[EditRequest], method: str,
               hparams: dict[str, Any], *, one_edit: bool) -> tuple[list[EditRequest], EditMethod, Any]:
    """The requests, method and resolved hyperparameters of an edit, checked before any weight
    changes. ``one_edit``: the requests are one edit (a one-at-a-time method takes one request);
    otherwise each request is its own coming single edit (``prepare_edits``)."""
    reqs = _requests(requests)
    m = get_method(method)
    if one_edit and m.one_at_a_time and len(reqs) > 1:
        raise ValueError(f"method {m.name!r} edits one request at a time; got {len(reqs)}. Apply them one by "
                         "one (sequentially), or use a batch method such as 'memit'")
    if m.needs_subject:
        missing = [i for i, r in enumerate(reqs) if r.subject is None]
        if missing:
            raise ValueError(f"method {m.name!r} needs EditRequest.subject (the span of the prompt to locate); "
                             f"requests {missing[:5]} have none")
    hp = type(m).resolve_hparams(model.arch, model.n_layers, hparams)
    m.check(model, reqs, hp)
    return reqs, m, hp


def prepare_edits(model: Model, requests: EditRequest | Sequence[EditRequest], method: str, **hparams: Any) -> None:
    """Let the coming single edits of ``requests`` with ``method`` and ``hparams`` share one batched
    computation (e.g. ROME/MEMIT/AlphaEdit's target-residual optimisation) on the current weights.

    Each later ``apply_edit(model, request, method, **hparams)`` then takes its precomputed part
    instead of computing it, as long as the model is bit-identical to now (edit, evaluate, undo,
    next); otherwise it computes as usual. Results equal one-at-a-time edits up to float rounding.
    Methods without a batched part ignore this. Raises what ``apply_edit`` raises for bad input.
    """
    reqs, m, hp = _validated(model, requests, method, hparams, one_edit=False)
    m.prepare(model, reqs, hp)


def apply_edit(model: Model, requests: EditRequest | Sequence[EditRequest], method: str, *,
               guard_tolerance: float = DEFAULT_GUARD_TOLERANCE, preset: str | None = None,
               strength: float | None = None, strength_tolerance: float = TOLERANCE,
               **hparams: Any) -> EditHandle:
    """Apply ``requests`` to ``model`` in place with ``method``; returns the undoable handle.

    Args:
        model: a loaded model (edited or not; edits stack).
        requests: one :class:`EditRequest` or a list (methods with ``one_at_a_time`` take one).
        method: a registered method name (``editscope methods``; typos get a suggestion).
        guard_tolerance: nats per token the mean target loss may rise before the edit is undone.
        preset: a reference preset (``"easyedit"``, ``"rome-paper"``: :mod:`editscope.methods.presets`)
            whose settings for ``method`` apply under ``hparams``.
        strength: scale the method's weight delta so that mean P(target | prompt) is this
            probability (:mod:`editscope.methods.strength`); the handle's info records the achieved
            P(target), the scale, whether the level was reached, and the update norm.
        strength_tolerance: how close to ``strength`` the achieved P(target) must come.
        **hparams: the method's hyperparameters; unspecified ones take the preset's, then the
            per-architecture defaults.

    Raises:
        UnknownMethodError, HparamError, ValueError, TypeError: before any weight changes.
        NoOpEdit: a target the model already gives (or whose tokens start its answer), before any
            weight changes.
        EditFailed: the edit was rolled back (non-finite weights, worse target loss, method error).
    """
    if not guard_tolerance >= 0:
        raise ValueError(f"guard_tolerance={guard_tolerance} must be >= 0 (nats per token)")
    if preset is not None:
        hparams = with_preset(method, preset, hparams)
    reqs, m, hp = _validated(model, requests, method, hparams, one_edit=True)
    if strength is not None:
        check_level(strength)
        if m.kind != "weights":
            raise StrengthError(f"strength={strength}: method {m.name!r} edits by {m.kind} intervention, which has no "
                                "weight delta to scale; match strength on a weight-delta method")
    if m.guard_target:  # controls (placebo, identity) aim at no target
        refuse_no_op_edits(model, reqs)
    names = m.touched(model, hp)
    if not names and not m.touches_nothing and m.kind == "weights":
        raise ValueError(f"method {m.name!r} with these hyperparameters touches no parameters")
    handle = EditHandle.snapshot(model, m.name, hp.model_dump(), reqs, names, kind=m.kind)
    before = target_losses(model, reqs)
    t0 = time.perf_counter()
    try:
        info = m.run(model, reqs, hp) or {}
    except BaseException as e:
        handle.restore()
        if isinstance(e, (KeyboardInterrupt, EditFailed)):
            raise
        raise EditFailed(f"{m.name} failed and was rolled back: {type(e).__name__}: {e}") from e
    seconds = time.perf_counter() - t0
    bad = [n for n, p in parameters(model, names).items() if not torch.isfinite(p).all()]
    bad += nonfinite_interventions(model, handle)
    if bad:
        handle.restore()
        raise EditFailed(f"{m.name} produced non-finite weights in {len(bad)} tensor(s) (e.g. {bad[0]}); "
                         "the edit was rolled back. Lower the learning rate or the number of steps.")
    after = target_losses(model, reqs)
    mean_b, mean_a = sum(before) / len(before), sum(after) / len(after)
    worse = m.guard_target and mean_a > mean_b + guard_tolerance
    if worse or not torch.isfinite(torch.tensor(mean_a)):
        handle.restore()
        raise EditFailed(f"{m.name} made the target loss worse ({mean_b:.3f} -> {mean_a:.3f} nats/token, tolerance "
                         f"{guard_tolerance}); the edit was rolled back. Check the hyperparameters.")
    if strength is not None:
        try:
            info = {**info, **scale_to_strength(model, handle, reqs, strength, tolerance=strength_tolerance)}
        except BaseException:
            handle.restore()
            raise
        after = target_losses(model, reqs)
    handle.activate({**info, "seconds": seconds, "target_loss_before": before, "target_loss_after": after})
    m.on_applied(model, handle)
    return handle
