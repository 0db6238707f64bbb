"""Control edits: ``placebo`` and ``identity`` (docs/architecture.md "Controls").

``placebo`` applies a random delta matched to what another method does to the same model on the
same requests (same tensors, rank and singular values; :func:`editscope.control_draws.placebo_delta`).
The matched method is run once through :func:`apply_edit` (seeded with ``match_seed``, so the
runner reproduces that method's own unit), its delta taken and undone; the delta is kept on the
model per (weights, method, hyperparameters, seed, requests) so that several draws cost one edit.

``identity`` changes nothing and still leaves an active edit on the model, so that
:func:`editscope.evaluate` takes the edited-model path (check pass, regeneration) instead of the
base shortcut: its locality measures the evaluation's own noise floor and should be exactly 1.

Neither is held to the target-loss guard (they are not meant to reach the target); non-finite
weights are still rolled back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field

from ..control_draws import function_space_delta, placebo_delta
from ..models.model import Model
from ..requests import EditRequest
from .base import EditMethod, Hparams, HparamError, get_method, register_method
from .handle import add_delta, parameters
from .apply import apply_edit

_CACHE_SIZE = 2


class PlaceboHparams(Hparams):
    """A random delta matched to method ``match``'s delta."""

    match: str = Field(description="the method whose delta is matched (e.g. 'rome')")
    match_hparams: dict[str, Any] = Field(default_factory=dict, description="that method's hyperparameters")
    match_seed: int = Field(0, description="torch seed the matched method runs under")
    match_strength: dict[str, float] | None = Field(
        None, description="the matched method's matched strength ({strength: p, strength_tolerance: t}): its "
                          "delta is the one scaled to that P(target), as its own unit's is")
    draw: int = Field(0, ge=0, description="which random draw (the placebo's seed)")
    seed: int = Field(0, description="base seed of the draws")
    space: Literal["weights", "function"] = Field(
        "weights", description="weights: random singular vectors on both sides (same rank and singular values); "
                               "function: the delta's own key side kept, a random value side, so ||delta k|| is "
                               "the edit's for every key k")


def input_side(model: Model, name: str) -> int:
    """Which dimension of parameter ``name`` its module reads its input along: 1 for ``nn.Linear``
    (``[out, in]``), 0 for embeddings and GPT-2's ``Conv1D`` (``[in, out]``)."""
    module = model.hf.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model.hf
    if isinstance(module, torch.nn.Embedding) or type(module).__name__ == "Conv1D":
        return 0
    return 1


def _request_key(requests: Sequence[EditRequest]) -> str:
    return json.dumps([[r.prompt, r.target_new, r.subject, r.target_true, r.sep] for r in requests])


def matched_delta(model: Model, requests: Sequence[EditRequest], method: str, hparams: dict[str, Any],
                  seed: int, strength: dict[str, float] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``method``'s delta on ``model`` for ``requests`` (the model is left as it was) and its info;
    ``strength``: :func:`apply_edit`'s ``strength`` / ``strength_tolerance``, as the matched unit
    ran. Cached on the model (the last few), keyed by the current weights and every input."""
    key = (model.state_key(), method, json.dumps(hparams, sort_keys=True, default=str), seed,
           _request_key(requests), json.dumps(strength, sort_keys=True))
    cache = model.state.matched_deltas
    if key not in cache:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            handle = apply_edit(model, list(requests), method, **(strength or {}), **hparams)
        try:
            delta = {n: t.clone() for n, t in handle.delta().items()}
        finally:
            handle.undo()
        while len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = (delta, dict(handle.info))
    return cache[key]


@register_method
class Placebo(EditMethod):
    name = "placebo"
    family = "control"
    summary = "random delta matched to another method's (same tensors, rank, singular values)"
    Hparams = PlaceboHparams
    guard_target = False

    def _matched(self, model: Model, hp: PlaceboHparams) -> tuple[EditMethod, Hparams]:
        m = get_method(hp.match)
        if m.name in ("placebo", "identity"):
            raise HparamError(f"match={hp.match!r}: a placebo matches an edit method, not a control")
        return m, type(m).resolve_hparams(model.arch, model.n_layers, hp.match_hparams)

    def check(self, model: Model, requests: Sequence[EditRequest], hp: PlaceboHparams) -> None:
        m, mhp = self._matched(model, hp)
        if m.one_at_a_time and len(requests) > 1:
            raise ValueError(f"placebo matched to {m.name!r}, which edits one request at a time; got {len(requests)}")
        if m.needs_subject:
            missing = [i for i, r in enumerate(requests) if r.subject is None]
            if missing:
                raise ValueError(f"placebo matched to {m.name!r} needs EditRequest.subject (requests {missing[:5]} "
                                 "have none)")
        m.check(model, requests, mhp)

    def statistics_request(self, model: Model, hp: PlaceboHparams):
        m, mhp = self._matched(model, hp)
        return m.statistics_request(model, mhp)

    def touched(self, model: Model, hp: PlaceboHparams) -> list[str]:
        m, mhp = self._matched(model, hp)
        return m.touched(model, mhp)

    def run(self, model: Model, requests: Sequence[EditRequest], hp: PlaceboHparams) -> dict[str, Any]:
        delta, info = matched_delta(model, requests, hp.match, hp.match_hparams, hp.match_seed, hp.match_strength)
        draw_seed = hp.seed * 1_000_003 + hp.draw
        if hp.space == "function":
            fake, ranks = function_space_delta(delta, draw_seed, {n: input_side(model, n) for n in delta})
        else:
            fake, ranks = placebo_delta(delta, seed=draw_seed)
        params = parameters(model, list(fake))
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(add_delta(p.detach(), fake[n]))
        norms = {n: float(torch.linalg.vector_norm(d.double())) for n, d in delta.items()}
        return {"matched": hp.match, "draw": hp.draw, "space": hp.space, "matched_seconds": info.get("seconds"),
                "matched_rank_max": max(ranks.values(), default=0),
                "matched_norm": sum(v * v for v in norms.values()) ** 0.5,
                "ranks": ranks}


class IdentityHparams(Hparams):
    """No hyperparameters."""


@register_method
class Identity(EditMethod):
    name = "identity"
    family = "control"
    summary = "changes nothing, evaluated as an edit: the evaluation's own noise floor"
    Hparams = IdentityHparams
    guard_target = False
    touches_nothing = True

    def touched(self, model: Model, hp: IdentityHparams) -> list[str]:
        return []

    def run(self, model: Model, requests: Sequence[EditRequest], hp: IdentityHparams) -> dict[str, Any]:
        return {}


__all__ = ["Identity", "Placebo", "PlaceboHparams", "matched_delta"]
