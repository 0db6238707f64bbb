"""WISE (Wang et al., 2024, "WISE: Rethinking the Knowledge Memory for Lifelong Model Editing").

A *side memory*: a copy ``W'`` of one block's MLP output projection ``W`` that edits train, while
``W`` (the main memory) stays as it was, and a router that sends a position to the side memory
only when its input ``a`` activates the difference: the activation score
``s(a) = || a (W' - W)^T ||_2`` (the paper's Delta_act) exceeds a threshold. The intervention stores
``W' - W`` (``[d_out, d_in]``), so the side output is the main output plus ``a (W' - W)^T``.

Training an edit (SGD on ``W'`` only, ``steps`` steps at ``lr``):

* the target NLL (prompt masked) of the edit prompt in ``1 + n_templates`` contexts (the bare
  prompt and model-generated prefixes, the same templates as ROME's), with the side memory on;
* the routing margins of the paper, with ``in`` the mean score over an edit row's positions that
  predict the target and ``out`` the mean score of an unrelated row (the templates' own generated
  texts): ``mean+[out - in + gamma] + mean+[out - alpha] + mean+[beta - in]`` (``mean+``: the
  mean of the positive terms);
* knowledge sharding's random gradient mask: only a ``mask_ratio`` share of ``W'``'s entries
  train (one mask per side memory, drawn when it is created);
* after each step ``W' - W`` is clipped to ``[-norm_constraint, norm_constraint]`` elementwise.

The threshold is ``act_ratio`` times the lowest score any edit's target-predicting position
reached (running minimum over the edits the memory holds). Sequential edits keep training the same
side memory.

Implemented from the paper and the reference code (EasyEdit ``models/wise``), with documented
deviations: routing is **per token position** (each position's own score against the threshold;
a causal rule, so teacher-forced scoring and KV-cached decoding agree) where the reference decides
per sequence from the mean score, and the threshold is set from per-position scores accordingly;
the score is the paper's ``||a (W' - W)^T||`` (the reference applies the MLP activation to both
outputs first); there is **one side memory**: the reference starts a new shard every ``save_freq``
(500) edits and TIES-merges shards every ``merge_freq`` (1000), which edits at the scale run here
never reach, so sharding beyond one memory and merging are not implemented.
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
from .locate import context_templates
from .memory import ROLE, MemoryMethod
from .training import continuation_nll, frozen_below, optimise, trainable, training_batch


@register_intervention
class WiseSideMemory(ModuleIntervention):
    """``delta`` ``[d_out, d_in]`` (side minus main weights), ``mask`` (which entries train, bool),
    ``threshold`` (scalar; +inf until the first edit)."""

    type_name = "wise"

    def __init__(self, config: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None):
        super().__init__(config, tensors)
        self.training = False  # while an edit trains: every position uses the side memory
        self.scores: torch.Tensor | None = None  # [B, T] activation scores of the last forward (training only)

    @classmethod
    def new(cls, model: Model, layer: int, mask_ratio: float) -> WiseSideMemory:
        w = model.arch.weight_out_in(model.module(ROLE, layer))
        mask = torch.rand(tuple(w.shape)) < mask_ratio
        return cls({"role": ROLE, "layer": layer, "module": model.arch.name(ROLE, layer), "edits": 0},
                   {"delta": torch.zeros(tuple(w.shape)), "mask": mask, "threshold": torch.tensor(float("inf"))})

    def bind(self, model: Model) -> None:
        super().bind(model)
        w = model.arch.weight_out_in(model.module(self.role, self.layer))
        if tuple(self._tensors["delta"].shape) != tuple(w.shape):
            raise InterventionError(f"wise side memory {tuple(self._tensors['delta'].shape)} does not fit "
                                    f"{self.config['module']} ({tuple(w.shape)} out x in)")

    def output(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        delta = self._tensors["delta"].to(device=inputs.device, dtype=inputs.dtype)
        extra = inputs @ delta.T  # [B, T, d_out]
        score = extra.float().norm(dim=-1)
        if self.training:
            self.scores = score
            return output + extra.to(output.dtype)
        route = score > self._tensors["threshold"].to(score.device)
        if not bool(route.any()):
            return output
        return torch.where(route[..., None], output + extra.to(output.dtype), output)


class WiseHparams(Hparams):
    """WISE's side-memory layer, routing margins and training (reference defaults for Llama)."""

    layer: int = Field(..., ge=0, description="block whose MLP output projection gets the side memory")
    lr: PositiveFloat = Field(1.0, description="SGD learning rate on the side memory")
    steps: int = Field(70, ge=1, le=10_000)
    stop_loss: float = Field(0.02, ge=0, description="stop once the target loss (nats/token) is this low")
    mask_ratio: float = Field(0.2, gt=0, le=1, description="share of the side memory's entries that train")
    norm_constraint: PositiveFloat = Field(1.0, description="elementwise bound on side minus main weights")
    alpha: float = Field(5.0, ge=0, description="margin: unrelated inputs' score stays below alpha")
    beta: float = Field(20.0, ge=0, description="margin: edit inputs' score rises above beta")
    gamma: float = Field(10.0, ge=0, description="margin between edit and unrelated scores")
    act_ratio: float = Field(0.88, gt=0, le=1, description="threshold = act_ratio x lowest edit score")
    n_templates: int = Field(10, ge=0, le=50, description="model-generated context prefixes per edit")
    template_length: int = Field(10, ge=1, le=64, description="tokens per generated prefix")


@register_method
class Wise(MemoryMethod):
    name = "wise"
    summary = "WISE: a side copy of one MLP output projection trained on the edits, with an activation router"
    Hparams = WiseHparams

    def run(self, model: Model, requests: Sequence[EditRequest], hp: WiseHparams) -> dict[str, Any]:
        site, mem = self.working_copy(model, WiseSideMemory, hp.layer,
                                      lambda: WiseSideMemory.new(model, hp.layer, hp.mask_ratio))
        templates = context_templates(model, hp.n_templates, hp.template_length)
        edit_pairs = encode_pairs(model, [t.replace("{}", r.prompt) for r in requests for t in templates],
                                  [r.continuation for r in requests for _ in templates])
        unrelated = [t.replace("{}", "").strip() for t in templates[1:]] or ["The weather today is mild and dry."]
        loc_pairs = encode_pairs(model, [u.rsplit(" ", 1)[0] or u for u in unrelated],
                                 [" " + u.rsplit(" ", 1)[-1] if " " in u else "." for u in unrelated])
        batch = training_batch(model, edit_pairs + loc_pairs)
        n_edit = len(edit_pairs)
        predicting = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
        predicting[batch.rows, batch.cols] = True  # positions whose output predicts a continuation token
        real = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
        for b, p in enumerate(edit_pairs + loc_pairs):
            real[b, : len(p.prompt_ids) + len(p.cont_ids)] = True

        delta = mem._tensors["delta"].clone().requires_grad_(True)
        mask = mem._tensors["mask"].to(delta.dtype)
        delta.register_hook(lambda g: g * mask)
        mem._tensors["delta"] = delta
        mem.training = True
        put(model, site, mem)

        def row_scores() -> tuple[torch.Tensor, torch.Tensor]:
            s = mem.scores
            assert s is not None
            ins = (s[:n_edit] * predicting[:n_edit]).sum(-1) / predicting[:n_edit].sum(-1)
            outs = (s[n_edit:] * real[n_edit:]).sum(-1) / real[n_edit:].sum(-1)
            return ins, outs

        def edit_loss() -> torch.Tensor:
            return continuation_nll(model, batch)[:n_edit].mean()

        def margins() -> torch.Tensor:
            ins, outs = row_scores()
            return (_mean_pos(outs[None, :] - ins[:, None] + hp.gamma) + _mean_pos(outs - hp.alpha)
                    + _mean_pos(hp.beta - ins))

        try:
            with trainable(model, []), frozen_below(model, batch, hp.layer):
                info = optimise([delta], edit_loss, lr=hp.lr, steps=hp.steps, stop_loss=hp.stop_loss, extra=margins,
                                optimizer="sgd", linf=hp.norm_constraint, center=[torch.zeros_like(delta)])
                with torch.no_grad():
                    continuation_nll(model, batch)
                    lowest = float(mem.scores[:n_edit][predicting[:n_edit]].min())  # type: ignore[index]
                    ins, outs = row_scores()
        finally:
            mem.training = False
            mem.scores = None
            mem._tensors["delta"] = delta.detach()
        old = float(mem._tensors["threshold"])
        mem._tensors["threshold"] = torch.tensor(min(old, hp.act_ratio * lowest))
        mem.config["edits"] = int(mem.config["edits"]) + len(requests)
        put(model, site, mem)  # re-installed as trained: its identity is the final state
        return {**info, "threshold": float(mem._tensors["threshold"]), "edit_score_min": lowest,
                "edit_score_mean": float(ins.mean()), "unrelated_score_mean": float(outs.mean()),
                "memory_edits": mem.config["edits"]}


def _mean_pos(x: torch.Tensor) -> torch.Tensor:
    """Mean of the positive entries of ``x`` (0 when none is positive)."""
    pos = torch.relu(x)
    n = (pos > 0).sum()
    return pos.sum() / n.clamp(min=1)


__all__ = ["Wise", "WiseHparams", "WiseSideMemory"]
