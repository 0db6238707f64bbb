"""The gradient loop shared by every optimisation-based method (fine-tuning family, LoRA).

One implementation of: which parameters train (:func:`trainable`), the objective on the edit
targets (:func:`target_objective`), Adam steps with early stopping and an optional L-infinity box
around the starting weights (:func:`optimise`). Methods only choose parameters and objectives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..models.model import Model
from ..requests import EditRequest
from ..hooks import capture_input, replace_input, skip_modules
from ..scoring import EncodedPair, TrainingBatch, continuation_nll, encode_pairs, forward_until, training_batch

Objective = Callable[[], torch.Tensor]


@contextmanager
def trainable(model: Model, params: Sequence[torch.nn.Parameter] = ()) -> Iterator[None]:
    """Only ``params`` require grad inside the block; every flag (and ``.grad``) is restored after."""
    flags = {p: p.requires_grad for p in model.hf.parameters()}
    want = {id(p) for p in params}
    try:
        for p in model.hf.parameters():
            p.requires_grad_(id(p) in want)
        with torch.enable_grad():
            yield
    finally:
        for p, f in flags.items():
            p.requires_grad_(f)
            p.grad = None


def pairs_objective(model: Model, pairs: Sequence[EncodedPair], mode: str = "teacher") -> Objective:
    """Mean over pairs of the per-token NLL (:func:`editscope.scoring.continuation_nll`)."""
    batch = training_batch(model, pairs)
    return lambda: continuation_nll(model, batch, mode).mean()


def target_objective(model: Model, requests: Sequence[EditRequest], mode: str = "teacher") -> Objective:
    """Mean NLL per target token of ``target_new`` after each request's prompt."""
    pairs = encode_pairs(model, [r.prompt for r in requests], [r.continuation for r in requests])
    return pairs_objective(model, pairs, mode)


@contextmanager
def frozen_below(model: Model, batch: TrainingBatch, layer: int) -> Iterator[None]:
    """Inside the block, forwards of exactly ``batch`` skip blocks ``0..layer-1`` and feed block
    ``layer`` the states they produced once, up front (no grad). Exact, and much cheaper, when
    only parameters or interventions at or above ``layer`` train (GRACE, WISE at a late layer)."""
    if layer <= 0:
        yield
        return
    entry = model.module("layer", layer)
    with torch.no_grad(), capture_input(entry) as seen:
        forward_until(model, entry, batch.input_ids, batch.position_ids)
    below = [model.module("layer", i) for i in range(layer)]
    with skip_modules(below, model.arch.block_returns_tuple), replace_input(entry, seen[0]):
        yield


def optimise(params: Sequence[torch.nn.Parameter], objective: Objective, *, lr: float, steps: int,
             stop_loss: float = 0.0, linf: float | None = None,
             extra: Callable[[], torch.Tensor] | None = None, weight: float = 1.0,
             optimizer: str = "adam", weight_decay: float = 0.0,
             center: Sequence[torch.Tensor] | None = None) -> dict[str, Any]:
    """Adam (AdamW with ``optimizer="adamw"``, plain SGD with ``"sgd"``) on ``params`` minimising
    ``objective() + weight * extra()`` for at most ``steps`` steps.

    Stops early once the objective (the edit loss alone) is at or below ``stop_loss``. With
    ``linf``, each parameter is projected after every step onto ``[c - linf, c + linf]``
    elementwise, ``c`` its starting value or ``center`` (the norm constraint of Zhu et al., 2020).
    Returns ``{"steps", "loss_first", "loss_last", "losses"}`` (losses: the edit objective before
    each step).
    """
    params = list(params)
    start = ([c.detach() for c in center] if center is not None else [p.detach().clone() for p in params]) \
        if linf is not None else []
    if optimizer not in ("adam", "adamw", "sgd"):
        raise ValueError(f"optimizer={optimizer!r}: use 'adam', 'adamw' or 'sgd'")
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if optimizer == "adamw"
           else torch.optim.SGD(params, lr=lr, weight_decay=weight_decay) if optimizer == "sgd"
           else torch.optim.Adam(params, lr=lr, weight_decay=weight_decay))
    losses: list[float] = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = objective()
        losses.append(loss.item())
        if losses[-1] <= stop_loss:
            break
        total = loss + weight * extra() if extra is not None else loss
        total.backward()
        opt.step()
        if linf is not None:
            with torch.no_grad():
                for p, s in zip(params, start):
                    p.copy_(torch.maximum(torch.minimum(p, s + linf), s - linf))
    else:
        with torch.no_grad():
            losses.append(float(objective()))
    return {"steps": len(losses) - 1, "loss_first": losses[0], "loss_last": losses[-1], "losses": losses}
