"""The gradient loop shared by every optimisation-based method (fine-tuning family, LoRA).

One implementation of: which parameters train (:func:`trainable`), the objective on the edit
targets (:func:`target_objective`), Adam steps with early stopping and an optional L-infinity box
around the starting weights (:func:`optimise`). Methods only choose parameters and objectives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ..models.model import Model
from ..requests import EditRequest
from ..hooks import capture_input, replace_input, skip_modules
from ..scoring import EncodedPair, body_forward, encode_pairs, forward_until, logits_from_hidden, pad_batch, pad_id

Objective = Callable[[], torch.Tensor]


# ---- training batches and the continuation loss every objective is built on

@dataclass
class TrainingBatch:
    """Padded pairs ready for a differentiable forward (edit methods' objectives).

    ``input_ids`` ``[B, T]`` (right padded); ``rows``/``cols``/``targets`` ``[N]``: the position
    whose output predicts each continuation token and that token; ``pair`` ``[N]``: which pair each
    belongs to; ``last_prompt`` ``[B]``: column of each pair's last prompt token.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    pair: torch.Tensor
    last_prompt: torch.Tensor
    cont_ids: list[tuple[int, ...]]

    @property
    def n_pairs(self) -> int:
        return len(self.cont_ids)


def training_batch(model: Model, pairs: Sequence[EncodedPair]) -> TrainingBatch:
    """One right-padded batch of encoded pairs (from :func:`encode_pairs`) with label positions."""
    if not pairs:
        raise ValueError("training_batch needs at least one pair")
    seqs = [list(p.prompt_ids + p.cont_ids) for p in pairs]
    ids, _, pos, _ = pad_batch(seqs, pad_id(model), "right", model.device)
    rows, cols, targets, which = [], [], [], []
    for b, p in enumerate(pairs):
        n_p, n_c = len(p.prompt_ids), len(p.cont_ids)
        rows += [b] * n_c
        cols += range(n_p - 1, n_p - 1 + n_c)
        targets += p.cont_ids
        which += [b] * n_c
    dev = model.device
    return TrainingBatch(
        input_ids=ids, position_ids=pos, rows=torch.tensor(rows, device=dev), cols=torch.tensor(cols, device=dev),
        targets=torch.tensor(targets, device=dev), pair=torch.tensor(which, device=dev),
        last_prompt=torch.tensor([len(p.prompt_ids) - 1 for p in pairs], device=dev),
        cont_ids=[p.cont_ids for p in pairs],
    )


def continuation_nll(model: Model, batch: TrainingBatch, mode: str = "teacher",
                     hidden: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable mean negative log-likelihood per pair, ``[n_pairs]``, nats per token.

    ``mode="teacher"``: each continuation token given the prompt and the tokens before it (prompt
    masked out of the loss; KnowEdit's FT-M objective). ``mode="prompt_last"``: every continuation
    token predicted from the last prompt position alone (the ROME paper's FT-L objective; for a
    one-token target both are the same). Right padding needs no attention mask (see
    :func:`teacher_forced_hidden`). ``hidden``: final hidden states ``[>= B, T, d]`` the caller
    computed itself (e.g. with a cache); rows and columns are then read from it as laid out in
    ``batch``.
    """
    if mode not in ("teacher", "prompt_last"):
        raise ValueError(f"mode={mode!r}: use 'teacher' or 'prompt_last'")
    if hidden is None:
        hidden = body_forward(model, batch.input_ids, None, batch.position_ids, use_cache=False).last_hidden_state
    if mode == "teacher":
        logp = torch.log_softmax(logits_from_hidden(model, hidden[batch.rows, batch.cols]), dim=-1)
        tok = -logp.gather(-1, batch.targets[:, None])[:, 0]
    else:
        last = torch.log_softmax(logits_from_hidden(model, hidden[torch.arange(batch.n_pairs), batch.last_prompt]), -1)
        tok = -last[batch.pair, batch.targets]
    total = torch.zeros(batch.n_pairs, device=tok.device, dtype=tok.dtype).index_add(0, batch.pair, tok)
    counts = torch.tensor([len(c) for c in batch.cont_ids], device=tok.device, dtype=tok.dtype)
    return total / counts


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
    """Mean over pairs of the per-token NLL (:func:`continuation_nll`)."""
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
             center: Sequence[torch.Tensor] | None = None,
             after_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Adam (AdamW with ``optimizer="adamw"``, plain SGD with ``"sgd"``) on ``params`` minimising
    ``objective() + weight * extra()`` for at most ``steps`` steps.

    Stops early once the objective (the edit loss alone) is at or below ``stop_loss``. With
    ``linf``, each parameter is projected after every step onto ``[c - linf, c + linf]``
    elementwise, ``c`` its starting value or ``center`` (the norm constraint of Zhu et al., 2020).
    ``after_step(i)``: called after optimiser step ``i`` while the gradients are still there (AdaLoRA's
    rank allocation reads them).
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
        if after_step is not None:
            after_step(len(losses) - 1)
        if linf is not None:
            with torch.no_grad():
                for p, s in zip(params, start):
                    p.copy_(torch.maximum(torch.minimum(p, s + linf), s - linf))
    else:
        with torch.no_grad():
            losses.append(float(objective()))
    return {"steps": len(losses) - 1, "loss_first": losses[0], "loss_last": losses[-1], "losses": losses}
