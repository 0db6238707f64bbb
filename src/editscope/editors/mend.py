"""MEND on an editscope model: which weights it edits, the rank-one gradient factors of an edit, the
edited weights, and the training objective (Mitchell et al., 2022; network in :mod:`.mend_net`).

Training (:func:`training_loss`), as the reference's ``EditTrainer`` for MEND: for each training record,
the gradient factors of the edit's target NLL on the base weights go through the editor; the edited
weights ``W - alpha G~`` are substituted (``torch.func.functional_call``, nothing written to the
model) and the loss is ``cedit * NLL(target | paraphrase)`` (the edit's equivalence neighbour, or its
own prompt when the record has none) ``+ cloc * KL(base || edited)`` over every token of a locality
prompt with its answer (the record's neighbourhood probe). Gradients reach the editor and ``alpha``
only: the factors are inputs, as in the reference (no second-order terms).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from ..hooks import capture_input_and_output_grad
from ..methods.training import TrainingBatch, continuation_nll, trainable, training_batch
from ..models.model import Model
from ..requests import EditRequest
from ..scoring import EncodedPair, body_forward, encode_pairs, logits_from_hidden
from .mend_net import MendEditor, nonzero_rows, shapes_of
from .errors import EditorError
from .records import TrainingRecord


def default_layers(n_layers: int) -> list[int]:
    """The reference's blocks: the last three (GPT-2 XL: 45, 46, 47 of 48)."""
    return list(range(max(0, n_layers - 3), n_layers))


def inner_weights(model: Model, layers: Sequence[int]) -> list[str]:
    """Parameter names MEND edits: each block's MLP input projection(s) and output projection
    (the reference's ``mlp.c_fc`` and ``mlp.c_proj``; gate, up and down on gated MLPs)."""
    roles = [f"mlp_in[{j}]" for j in range(len(model.arch.mlp_in))] + ["mlp_out"]
    return [f"{model.arch.name(role, layer)}.weight" for layer in layers for role in roles]


def _module_of(model: Model, name: str) -> nn.Module:
    return model.hf.get_submodule(name.rsplit(".", 1)[0])


def weight_view(model: Model, name: str) -> torch.Tensor:
    """The weight ``name`` as ``[out, in]`` (a view)."""
    return model.arch.weight_out_in(_module_of(model, name))


def build_editor(model: Model, layers: Sequence[int], rank: int, n_hidden: int, edit_lr: float) -> MendEditor:
    names = inner_weights(model, layers)
    return MendEditor(shapes_of([(n, weight_view(model, n)) for n in names]), rank, n_hidden, edit_lr).to(model.device)


def gradient_factors(model: Model, pairs: Sequence[EncodedPair], names: Sequence[str]
                     ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per weight: inputs ``u`` ``[N, d_in]`` and output gradients ``delta`` ``[N, d_out]`` of the mean
    target NLL of ``pairs`` on the current weights (rows with a zero ``u`` or ``delta`` left out)."""
    batch = training_batch(model, pairs)
    params = dict(model.hf.named_parameters())
    with trainable(model, [params[n] for n in names]), ExitStack() as stack:
        seen = {n: stack.enter_context(capture_input_and_output_grad(_module_of(model, n))) for n in names}
        continuation_nll(model, batch).mean().backward()
    out = {}
    for n in names:
        (x, g), = seen[n]
        out[n] = nonzero_rows(x, g)
    return out


def edited_weights(model: Model, editor: MendEditor, factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
                   ) -> dict[str, torch.Tensor]:
    """``W - alpha G~`` per weight, in the parameter's own layout (differentiable in the editor)."""
    params = dict(model.hf.named_parameters())
    out = {}
    for n, upd in editor.updates(factors).items():
        w = params[n].detach()
        stored_in_out = model.arch.conv1d and not isinstance(_module_of(model, n), nn.Linear)  # GPT-2 Conv1D: [in, out]
        step = upd.T if stored_in_out else upd
        out[n] = w - step.to(device=w.device, dtype=w.dtype)
    return out


class _Call(nn.Module):
    """Lets ``torch.func.functional_call`` swap the model's weights around any editscope forward."""

    def __init__(self, hf: nn.Module, fn):
        super().__init__()
        self.hf, self.fn = hf, fn

    def forward(self, *args):
        return self.fn(*args)


def with_weights(model: Model, weights: dict[str, torch.Tensor], fn, *args):
    """``fn(*args)`` computed with ``weights`` in place of the model's (nothing written to it)."""
    return torch.func.functional_call(_Call(model.hf, fn), {f"hf.{n}": w for n, w in weights.items()}, args)


def _real_tokens(batch: TrainingBatch) -> torch.Tensor:
    """``[B, T]`` mask of the batch's tokens that are not right padding."""
    mask = torch.zeros(batch.input_ids.shape, dtype=torch.bool, device=batch.input_ids.device)
    for b, c in enumerate(batch.cont_ids):
        mask[b, :int(batch.last_prompt[b]) + 1 + len(c)] = True
    return mask


def token_logprobs(model: Model, batch: TrainingBatch) -> torch.Tensor:
    """Log-probabilities ``[n real tokens, V]`` at every real token of ``batch``."""
    h = body_forward(model, batch.input_ids, None, batch.position_ids, use_cache=False).last_hidden_state
    return torch.log_softmax(logits_from_hidden(model, h[_real_tokens(batch)]), -1)


def _kl_tokens(model: Model, batch: TrainingBatch, base: torch.Tensor) -> torch.Tensor:
    """Mean over the real tokens of ``KL(base || edited)``; ``base``: the base's :func:`token_logprobs`."""
    logp = token_logprobs(model, batch)
    return (base.exp() * (base - logp)).sum(-1).mean()


def training_loss(model: Model, editor: MendEditor, rec: TrainingRecord, cedit: float, cloc: float
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """The MEND objective for one record (module docstring); differentiable in ``editor``."""
    r = rec.request
    names = editor.names
    factors = gradient_factors(model, encode_pairs(model, [r.prompt], [r.continuation]), names)
    if editor.training:
        editor.observe(factors)
    weights = edited_weights(model, editor, factors)
    outer = rec.paraphrase.prompt if rec.paraphrase is not None else r.prompt
    edit_batch = training_batch(model, encode_pairs(model, [outer], [r.continuation]))
    with trainable(model):  # no parameter of the model needs a gradient
        l_edit = with_weights(model, weights, lambda b: continuation_nll(model, b).mean(), edit_batch)
        loss, parts = cedit * l_edit, {"edit": l_edit.item()}
        if rec.locality is not None and cloc > 0:
            loc = training_batch(model, encode_pairs(model, [rec.locality.prompt], [rec.locality.continuation]))
            with torch.no_grad():
                base = token_logprobs(model, loc)
            l_loc = with_weights(model, weights, lambda b: _kl_tokens(model, b, base), loc)
            loss = loss + cloc * l_loc
            parts["loc"] = l_loc.item()
    return loss, parts


def apply_mend(model: Model, editor: MendEditor, requests: Sequence[EditRequest]) -> dict[str, float]:
    """Edit ``model`` in place: ``W <- W - alpha G~`` for each weight the editor covers; returns the
    update norms."""
    factors = gradient_factors(model, encode_pairs(model, [r.prompt for r in requests],
                                                   [r.continuation for r in requests]), editor.names)
    with torch.no_grad():
        new = edited_weights(model, editor.eval(), factors)
        params = dict(model.hf.named_parameters())
        norms = {}
        for n, w in new.items():
            norms[n] = float((params[n] - w).norm())
            params[n].copy_(w)
    return norms


class MendTrainer:
    """MEND's training for :func:`editscope.editors.store.train_editor`: the editor network at lr
    ``spec.lr``, its step sizes at ``spec.lr_lr``, one edit per record, the batch's gradients
    accumulated (the reference's ``accumulate_bs``)."""

    parts = ("loss", "edit", "loc")

    def __init__(self, spec: Any, model: Model):
        layers = list(spec.layers) if spec.layers is not None else default_layers(model.n_layers)
        bad = [x for x in layers if not 0 <= x < model.n_layers]
        if bad:
            raise EditorError(f"layers: {bad} are outside the model (0..{model.n_layers - 1})")
        self.spec, self.model, self.layers = spec, model, layers
        self.module = build_editor(model, layers, spec.rank, spec.n_hidden, spec.edit_lr).train()
        self.grad_clip = spec.grad_clip

    def param_groups(self) -> list[dict[str, Any]]:
        net = [p for n, p in self.module.named_parameters() if n != "edit_lrs"]
        return [{"params": net, "lr": self.spec.lr}, {"params": [self.module.edit_lrs], "lr": self.spec.lr_lr}]

    def accumulate(self, records: list[TrainingRecord]) -> dict[str, float]:
        totals = dict.fromkeys(self.parts, 0.0)
        for rec in records:
            loss, parts = training_loss(self.model, self.module, rec, self.spec.cedit, self.spec.cloc)
            (loss / len(records)).backward()
            totals["loss"] += loss.item() / len(records)
            for k, v in parts.items():
                totals[k] += v / len(records)
        return totals

    def tensors(self) -> dict[str, torch.Tensor]:
        return self.module.tensors()

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.module.load_tensors(tensors)

    def manifest(self) -> dict[str, Any]:
        return {"layers": self.layers, "weights": self.module.names}


__all__ = ["MendTrainer", "apply_mend", "build_editor", "default_layers", "edited_weights", "gradient_factors",
           "inner_weights", "token_logprobs", "training_loss", "weight_view", "with_weights"]
