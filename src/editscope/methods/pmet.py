"""PMET (Li et al., 2024, "PMET: Precise Model Editing in a Transformer", AAAI): MEMIT whose target
is the MLP's own output, found together with an attention-output change.

Read from EasyEdit's port (github.com/zjunlp/EasyEdit, ``easyeditor/models/pmet/pmet_main.py``,
``compute_zs.py``, ``compute_ks.py`` at 0d3ce4e; ``hparams/PMET/llama3.2-3b.yaml``). Against MEMIT
(:mod:`editscope.methods.locate`, whose steps it shares):

1. The target is optimised with *two* deltas at the top block's key token, one on the attention
   output and one on the MLP output (``compute_zs``), so that the part of the change attention can
   carry does not have to be written into the MLP ("precise" FFN targets). Only the MLP target is
   kept; attention weights are not edited (EasyEdit's configs rewrite ``down_proj`` alone).
2. The update spreads the shortfall of the top block's *MLP output* (target minus its current value
   at the bare prompt's key, re-measured after each lower block's update) over the blocks, divided
   by ``sqrt(blocks left)`` (MEMIT: the residual stream's shortfall divided by ``blocks left``). So
   the lower blocks together write more than the shortfall: the reference's choice, kept.
3. The closed form per block is MEMIT's, ``dW = R K^T (lambda C + K K^T)^-1``.

Defaults from the reference config: ``clamp_norm_factor`` 1 (relative to the MLP output's norm at
the key, as editscope's MEMIT does), ``v_weight_decay`` 0.5, ``kl_factor`` 0.0625, 25 steps at
lr 0.5; the block range and ``mom2_weight`` as editscope's MEMIT. Differences from the reference:
the weight decay is editscope's ``||delta||^2 / ||v||^2`` for both deltas (the reference divides
the unsquared norm by the squared norm, as the ROME code does); its early stop when the target is
already the argmax (``max_prob == prob``) is not copied (both methods stop at ``v_stop_loss``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field, PositiveFloat

from ..models.model import Model
from ..requests import EditRequest

from .base import EditFailed, register_method
from .locate import (MEMIT, MEMITHparams, ResidualProblem, add_to_mlp_out, key_second_moments, keys, mlp_out_at,
                     optimise_residuals, templates_for)


class PMETHparams(MEMITHparams):
    clamp_norm_factor: PositiveFloat = 1.0
    v_weight_decay: float = Field(0.5, ge=0)
    attn_delta: bool = Field(True, description="optimise a delta on the top block's attention output jointly "
                                               "(PMET); False: the MLP's alone")
    spread: Literal["sqrt", "linear"] = Field("sqrt", description="divide the shortfall by sqrt(blocks left) "
                                                                  "(PMET) or by blocks left (MEMIT)")


@register_method
class PMET(MEMIT):
    name = "pmet"
    summary = ("MEMIT with precise MLP targets: attention and MLP output deltas optimised together, the MLP's "
               "spread over the blocks by sqrt (Li et al., 2024)")
    Hparams = PMETHparams

    def prepare(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        """Nothing: MEMIT's prepared residuals have no attention delta."""

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        layers = list(hp.layers)
        stats = key_second_moments(model, layers, hp)
        templates = templates_for(model, hp)
        top = layers[-1]
        problems = [ResidualProblem(model, top, r, templates, hp) for r in requests]
        got = optimise_residuals(model, problems, requests, hp, attn=hp.attn_delta)
        for g in got:
            if isinstance(g, EditFailed):
                raise g
        target = mlp_out_at(model, top, requests, hp.fact_token) + torch.stack([d for d, _ in got])
        per_layer = {}
        for i, layer in enumerate(layers):
            k = keys(model, layer, requests, templates, hp.fact_token)
            left = len(layers) - i
            short = target - mlp_out_at(model, top, requests, hp.fact_token)
            dw, info = self.solve(model, layer, stats[layer], k, short / (math.sqrt(left) if hp.spread == "sqrt" else left), hp)
            add_to_mlp_out(model, layer, dw)
            per_layer[layer] = {**info, "update_norm": float(dw.norm()), "shortfall_norm": float(short.norm())}
        return {"layers": per_layer, "requests": [i for _, i in got]}


__all__ = ["PMET", "PMETHparams"]
