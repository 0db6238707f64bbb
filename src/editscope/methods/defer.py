"""DEFER, the learned-deferral baseline of GRACE's paper (Hartvigsen et al., 2023, "Aging with GRACE",
NeurIPS; after SERAC's idea of a scope decision, in one layer).

An adaptor at one block's MLP output projection: a gate ``g(x) = sigmoid(w . x + b)`` and a linear
value predictor ``V x + c`` on the projection's input ``x``. Trained on the edit's target (Adam on
the teacher-forced NLL with the soft mix ``g V x + (1 - g) W x``); used with a hard rule: a position
whose gate reaches ``threshold`` gets the predicted value, every other the base output. Later edits
train the same adaptor further (the baseline forgets; that is what it is there to show).

Read from EasyEdit (github.com/zjunlp/EasyEdit, ``easyeditor/models/defer/DEFER.py`` at a354ff8;
``hparams/DEFER/llama-7b.yaml``: block 27 of 32's ``down_proj``, lr 7e-5, 100 steps, threshold
0.5; the gate and values are ``nn.Linear`` layers with their default initialisation). Deviations,
deliberate: the gate is applied per position (the reference reads the last token and broadcasts
its decision and value over the sequence, which has no causal meaning in a full pass); the block
is editscope's memory-editor default depth; training stops early at ``stop_loss``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field, PositiveFloat

from ..interventions import InterventionError, ModuleIntervention, put, register_intervention
from ..models.model import Model
from ..requests import EditRequest
from ..scoring import encode_pairs

from .base import Hparams, register_method
from .memory import ROLE, MemoryMethod
from .training import frozen_below, optimise, pairs_objective, trainable, training_batch


@register_intervention
class DeferAdaptor(ModuleIntervention):
    """Gate ``w`` ``[d_in]``, ``b`` ``[1]``; values ``V`` ``[d_out, d_in]``, ``c`` ``[d_out]`` (float32)."""

    type_name = "defer"

    @classmethod
    def fresh(cls, model: Model, layer: int, threshold: float, seed: int) -> DeferAdaptor:
        w = model.arch.weight_out_in(model.module(ROLE, layer))
        d_out, d_in = int(w.shape[0]), int(w.shape[1])
        gen = torch.Generator().manual_seed(seed)
        gate, values = torch.nn.Linear(d_in, 1), torch.nn.Linear(d_in, d_out)
        with torch.no_grad():  # nn.Linear's default initialisation, drawn from a seeded generator
            for lin in (gate, values):
                bound = 1 / d_in ** 0.5
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
        return cls({"role": ROLE, "layer": layer, "module": model.arch.name(ROLE, layer), "threshold": threshold},
                   {"w": gate.weight.detach()[0].clone(), "b": gate.bias.detach().clone(),
                    "V": values.weight.detach().clone(), "c": values.bias.detach().clone()})

    def __init__(self, config: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None):
        super().__init__(config, tensors)
        self.soft = False  # training: the differentiable mix instead of the hard rule

    def bind(self, model: Model) -> None:
        super().bind(model)
        w = model.arch.weight_out_in(model.module(self.role, self.layer))
        if tuple(self._tensors["V"].shape) != tuple(w.shape):
            raise InterventionError(f"defer adaptor of values {tuple(self._tensors['V'].shape)} does not fit "
                                    f"{self.config['module']} ({tuple(w.shape)} out x in)")

    def output(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        w, b, v, c = (self._tensors[k].to(inputs.device) for k in ("w", "b", "V", "c"))
        x = inputs.float()
        gate = torch.sigmoid(x @ w + b)[..., None]  # [..., 1]
        values = (x @ v.T + c).to(output.dtype)
        if self.soft:
            return gate.to(output.dtype) * values + (1 - gate.to(output.dtype)) * output
        return torch.where(gate >= float(self.config["threshold"]), values, output)


class DeferHparams(Hparams):
    layer: int = Field(..., ge=0, description="block whose MLP output projection gets the adaptor")
    lr: PositiveFloat = Field(7e-5, description="Adam learning rate (the reference's edit_lr)")
    steps: int = Field(100, ge=1, le=10_000, description="training steps per edit (n_iter)")
    threshold: float = Field(0.5, gt=0, lt=1, description="defer where the gate reaches this")
    stop_loss: float = Field(0.01, ge=0)
    seed: int = 0


@register_method
class Defer(MemoryMethod):
    name = "defer"
    summary = ("DEFER: a learned gate and value predictor at one MLP output; the GRACE paper's deferral baseline "
               "(Hartvigsen et al., 2023)")
    Hparams = DeferHparams

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        site, ad = self.working_copy(model, DeferAdaptor, hp.layer,
                                     lambda: DeferAdaptor.fresh(model, hp.layer, hp.threshold, hp.seed))
        ad.config["threshold"] = hp.threshold
        params = {k: v.to(model.device).clone().requires_grad_(True) for k, v in ad.tensors().items()}
        ad._tensors.update(params)
        ad.soft = True
        put(model, site, ad)
        pairs = encode_pairs(model, [r.prompt for r in requests], [r.continuation for r in requests])
        try:
            with trainable(model, []), frozen_below(model, training_batch(model, pairs), hp.layer):
                info = optimise(list(params.values()), pairs_objective(model, pairs), lr=hp.lr, steps=hp.steps,
                                stop_loss=hp.stop_loss)
        finally:
            ad.soft = False
            ad._tensors.update({k: v.detach().cpu() for k, v in params.items()})
        return info


__all__ = ["Defer", "DeferAdaptor", "DeferHparams"]
