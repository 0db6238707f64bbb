"""Weight-change anatomy of an edit: how large and how low-rank its update is, per touched tensor.

The collapse study relates an edit's perplexity damage to the size of its update, and the KnowEdit
survey compares methods by it. For an update ``dW`` of a weight ``W`` (both ``[out, in]`` or any
shape) this module gives the Frobenius norm ``||dW||_F``, the relative norm ``||dW||_F / ||W||_F``
and, for matrices, the effective rank (Roy & Vetterli, 2007): ``exp(H(p))`` with
``p_i = sigma_i / sum(sigma)`` over the singular values of ``dW``: 1 for a rank-one update (ROME),
up to ``min(out, in)`` for an update spread evenly over every direction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

#: effective ranks are computed for at most this many tensors per edit (the largest updates first):
#: an SVD per tensor of a whole-model fine-tune would cost more than evaluating it
MAX_RANK_TENSORS = 32


@dataclass(frozen=True)
class TensorChange:
    name: str
    fro: float           # ||dW||_F
    relative: float      # ||dW||_F / ||W||_F (inf for a zero weight)
    effective_rank: float | None  # matrices only (None: a vector, or beyond MAX_RANK_TENSORS)


def effective_rank(delta: torch.Tensor) -> float:
    """``exp`` of the entropy of the normalised singular values of a matrix ``delta`` (0 for a zero matrix)."""
    if delta.dim() != 2:
        raise ValueError(f"effective_rank needs a matrix, got shape {tuple(delta.shape)}")
    s = torch.linalg.svdvals(delta.detach().double())
    total = float(s.sum())
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def weight_change(before: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> list[TensorChange]:
    """Per touched tensor (``delta[name]`` the update of ``before[name]``), largest update first."""
    missing = [n for n in delta if n not in before]
    if missing:
        raise ValueError(f"weight_change: no weight given for the update(s) {missing[:3]}")
    norms = {n: float(d.detach().double().norm()) for n, d in delta.items()}
    order = sorted(delta, key=lambda n: -norms[n])
    out = []
    for i, n in enumerate(order):
        w = float(before[n].detach().double().norm())
        rank = effective_rank(delta[n]) if delta[n].dim() == 2 and i < MAX_RANK_TENSORS else None
        out.append(TensorChange(n, norms[n], norms[n] / w if w else math.inf, rank))
    return out


def anatomy_scalars(before: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]
                    ) -> dict[str, tuple[float | None, dict[str, float | None]]]:
    """The study scalars of one edit: ``delta:fro`` (``sqrt(sum ||dW||_F^2)`` over the touched
    tensors), ``delta:relative`` (that over ``sqrt(sum ||W||_F^2)``) and ``delta:effective_rank``
    (of the largest update), each with the per-tensor values as its detail."""
    changes = weight_change(before, delta)
    if not changes:
        return {}
    fro = math.sqrt(sum(c.fro ** 2 for c in changes))
    w = math.sqrt(sum(float(before[c.name].detach().double().norm()) ** 2 for c in changes))
    return {
        "delta:fro": (fro, {c.name: c.fro for c in changes}),
        "delta:relative": (fro / w if w else None, {c.name: c.relative for c in changes}),
        "delta:effective_rank": (changes[0].effective_rank, {c.name: c.effective_rank for c in changes}),
    }
