"""``lora`` and ``adalora``: low-rank adapters (PEFT) trained on the target, then merged into the
base weights.

After training the adapters are merged (``W += B A * alpha / r``; AdaLoRA: ``W += P diag(E) Q``) and
unloaded, so the model has exactly its original modules again and the edit is an ordinary change of
the adapted weights: the handle's snapshot of those weights makes ``undo()`` bit-exact, and save/load
store the merged delta.

AdaLoRA (Zhang et al., 2023, PEFT's ``AdaLoraConfig``) starts every adapter at ``init_r`` and prunes
the least important singular directions during training down to a total budget of ``target_r`` per
adapter on average (PEFT's ``update_and_allocate`` after each step, its cubic budget schedule over
``steps``), with PEFT's orthogonality penalty on ``P`` and ``Q`` (weight ``orth_reg_weight``; PEFT adds
it inside the wrapped model's forward when labels are given, and editscope's objective does not go
through that forward, so it is added here in the same form). QLoRA (4-bit base weights) is not offered:
bitsandbytes' 4-bit kernels need a GPU, and a merged edit of a quantised model is not the edit of the
model being measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch

from pydantic import Field, PositiveFloat

from ..models.model import Model
from ..requests import EditRequest
from .base import EditMethod, Hparams, HparamError, register_method
from .finetune import check_layers
from .training import optimise, target_objective, trainable

Role = Literal["mlp_out", "mlp_in", "attn_out"]


class LoraHparams(Hparams):
    """Adapter placement and training."""

    layers: list[int] | Literal["all"] = "all"
    roles: list[Role] = Field(default_factory=lambda: ["mlp_out"], min_length=1)
    rank: int = Field(8, ge=1, le=4096)
    alpha: PositiveFloat = 16.0
    dropout: float = Field(0.0, ge=0, lt=1)
    lr: PositiveFloat = 1e-3
    steps: int = Field(40, ge=1, le=100_000)
    stop_loss: float = Field(0.01, ge=0)


def _module_names(model: Model, hp: LoraHparams) -> list[str]:
    layers = range(model.n_layers) if hp.layers == "all" else hp.layers
    names = []
    for i in layers:
        for role in dict.fromkeys(hp.roles):
            if role == "mlp_in":
                names += [model.arch.name(f"mlp_in[{j}]", i) for j in range(len(model.arch.mlp_in))]
            else:
                names.append(model.arch.name(role, i))
    return names


@register_method
class LoRA(EditMethod):
    name = "lora"
    family = "fine-tuning"
    summary = "PEFT LoRA adapters on chosen projections, trained on the target, merged into the weights"
    Hparams = LoraHparams

    def check(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        if hp.layers != "all":
            check_layers(model, "layers", hp.layers)

    def touched(self, model: Model, hp: Any) -> list[str]:
        return [m + ".weight" for m in _module_names(model, hp)]

    def config(self, model: Model, hp: Any):
        from peft import LoraConfig

        return LoraConfig(r=hp.rank, lora_alpha=hp.alpha, lora_dropout=hp.dropout, bias="none",
                          target_modules=_module_names(model, hp), fan_in_fan_out=model.arch.conv1d)

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        return train_merged_adapters(model, requests, hp, self.config(model, hp))


def train_merged_adapters(model: Model, requests: Sequence[EditRequest], hp: Any, config: Any,
                          extra: Callable[[list[tuple[str, torch.nn.Parameter]]], Callable[[], torch.Tensor]] | None = None,
                          after_step: Callable[[Any], Callable[[int], None]] | None = None,
                          extra_weight: float = 1.0) -> dict[str, Any]:
    """Wrap ``model`` with PEFT adapters of ``config``, train them on the targets (``hp.lr``,
    ``hp.steps``, ``hp.stop_loss``), merge and unload. ``extra(named adapter parameters)``: a penalty
    added to the loss times ``extra_weight``; ``after_step(peft_model)``: a per-step callback (both for AdaLoRA)."""
    from peft import get_peft_model

    objective = target_objective(model, requests)
    with trainable(model):  # restores every requires_grad flag PEFT changes
        peft_model = get_peft_model(model.hf, config)
        try:
            named = [(n, p) for n, p in peft_model.named_parameters() if "lora_" in n]
            params = [p for _, p in named]
            with trainable(model, params):
                info = optimise(params, objective, lr=hp.lr, steps=hp.steps, stop_loss=hp.stop_loss,
                                extra=extra(named) if extra is not None else None, weight=extra_weight,
                                after_step=after_step(peft_model) if after_step is not None else None)
        finally:
            unloaded = peft_model.merge_and_unload()
    if unloaded is not model.hf:  # PEFT returns the wrapped model itself
        raise RuntimeError("PEFT returned a different module after merging; cannot keep the model in place")
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in vars(model.hf):
            delattr(model.hf, attr)
    info["trainable_parameters"] = sum(p.numel() for p in params)
    return info


class AdaLoraHparams(LoraHparams):
    """PEFT's AdaLoraConfig defaults, with the schedule over the edit's ``steps``."""

    init_r: int = Field(12, ge=1, le=4096, description="starting rank of every adapter")
    rank: int = Field(8, ge=1, le=4096, description="average rank per adapter at the end (PEFT's target_r)")
    tinit: int = Field(0, ge=0, description="steps before pruning starts")
    tfinal: int = Field(0, ge=0, description="steps at the final budget before the end")
    delta_t: int = Field(1, ge=1, description="steps between two budget allocations (PEFT's deltaT)")
    beta1: float = Field(0.85, gt=0, lt=1)
    beta2: float = Field(0.85, gt=0, lt=1)
    orth_reg_weight: float = Field(0.5, ge=0)
    stop_loss: float = Field(0.0, ge=0, description="0: every step runs, so PEFT's schedule reaches its final "
                                                    "budget; an earlier stop leaves adapters above rank")


def orthogonality_penalty(named: list[tuple[str, torch.nn.Parameter]]) -> Callable[[], torch.Tensor]:
    """AdaLoRA's regulariser: mean over ``P`` (lora_A, ``[r, in]``) and ``Q`` (lora_B, ``[out, r]``)
    matrices of ``||P P^T - I||_F`` and ``||Q^T Q - I||_F``."""
    mats = [(p, "lora_A" in n) for n, p in named if "lora_A" in n or "lora_B" in n]

    def penalty() -> torch.Tensor:
        total = sum(torch.linalg.matrix_norm((p @ p.T if is_a else p.T @ p)
                                             - torch.eye(p.shape[0] if is_a else p.shape[1], dtype=p.dtype,
                                                         device=p.device))
                    for p, is_a in mats)
        return total / max(len(mats), 1)

    return penalty


@register_method
class AdaLoRA(LoRA):
    name = "adalora"
    summary = ("PEFT AdaLoRA: SVD-form adapters whose rank budget is pruned by importance during training, "
               "merged into the weights (Zhang et al., 2023)")
    Hparams = AdaLoraHparams

    def check(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        super().check(model, requests, hp)
        if hp.tinit + hp.tfinal >= hp.steps:
            raise HparamError(f"tinit + tfinal = {hp.tinit + hp.tfinal} must be below steps={hp.steps} "
                              "(AdaLoRA prunes between them); lower them or raise steps")
        if hp.rank > hp.init_r:
            raise HparamError(f"rank={hp.rank} (the final average rank) cannot exceed init_r={hp.init_r}")

    def config(self, model: Model, hp: Any):
        from peft import AdaLoraConfig

        return AdaLoraConfig(init_r=hp.init_r, target_r=hp.rank, lora_alpha=hp.alpha, lora_dropout=hp.dropout,
                             bias="none", target_modules=_module_names(model, hp), fan_in_fan_out=model.arch.conv1d,
                             tinit=hp.tinit, tfinal=hp.tfinal, deltaT=hp.delta_t, beta1=hp.beta1, beta2=hp.beta2,
                             orth_reg_weight=hp.orth_reg_weight, total_step=hp.steps)

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        ranks: dict[str, int] = {}

        def allocate(peft_model: Any) -> Callable[[int], None]:
            def step(i: int) -> None:
                # PEFT counts steps from 1 here: the last call is total_step - tfinal, where the final
                # budget is forced (called with i, the schedule would stop one step short of it)
                peft_model.base_model.update_and_allocate(i + 1)
                pattern = peft_model.peft_config["default"].rank_pattern or {}
                ranks.update({name.split(".lora_E")[0]: int(sum(keep)) for name, keep in pattern.items()})
            return step

        info = train_merged_adapters(model, requests, hp, self.config(model, hp),
                                     extra=orthogonality_penalty if hp.orth_reg_weight > 0 else None,
                                     after_step=allocate, extra_weight=hp.orth_reg_weight)
        return {**info, "ranks": ranks}
