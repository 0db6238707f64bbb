"""``lora``: low-rank adapters (PEFT) trained on the target, then merged into the base weights.

After training the adapters are merged (``W += B A * alpha / r``) and unloaded, so the model has
exactly its original modules again and the edit is an ordinary change of the adapted weights: the
handle's snapshot of those weights makes ``undo()`` bit-exact, and save/load store the merged delta.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, PositiveFloat

from ..models.model import Model
from ..requests import EditRequest
from .base import EditMethod, Hparams, register_method
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

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=hp.rank, lora_alpha=hp.alpha, lora_dropout=hp.dropout, bias="none",
                            target_modules=_module_names(model, hp), fan_in_fan_out=model.arch.conv1d)
        objective = target_objective(model, requests)
        with trainable(model):  # restores every requires_grad flag PEFT changes
            peft_model = get_peft_model(model.hf, config)
            try:
                params = [p for n, p in peft_model.named_parameters() if "lora_" in n]
                with trainable(model, params):
                    info = optimise(params, objective, lr=hp.lr, steps=hp.steps, stop_loss=hp.stop_loss)
            finally:
                unloaded = peft_model.merge_and_unload()
        if unloaded is not model.hf:  # PEFT returns the wrapped model itself
            raise RuntimeError("PEFT returned a different module after merging; cannot keep the model in place")
        for attr in ("peft_config", "_hf_peft_config_loaded"):
            if attr in vars(model.hf):
                delattr(model.hf, attr)
        info["trainable_parameters"] = sum(p.numel() for p in params)
        return info
