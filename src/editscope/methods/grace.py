"""GRACE (Hartvigsen et al., 2023, "Aging with GRACE"): a codebook of edits at one layer.

The codebook wraps the MLP output projection (``mlp_out``) of one block. Each entry holds a
*key* (the projection's input, ``[d_in]``, at the edited prompt's last token), a *value* (an
output, ``[d_out]``, optimised so that the model produces the target) and a deferral radius
``eps``. On every forward, each token position whose input lies within the radius of its nearest
key (Euclidean distance) gets that key's value as the projection's output; every other position
keeps the base output exactly. No weight changes.

Codebook growth per edit (the reference's rule): with ``d`` the distance from the new key to its
nearest entry ``j``,

* empty codebook, or ``d > eps_init + eps[j]``: add an entry with radius ``eps_init``;
* the same target (label) and ``d > eps[j]``: ``expand="coverage"`` grows ``eps[j]`` to ``d``
  (``"moving_average"`` also moves the key halfway to the new one); the entry's value is retrained
  on the new edit;
* the same target and ``d <= eps[j]``: the entry's value is retrained;
* a different target: add an entry and *split*: both radii become ``d / 2`` (the old one minus
  1e-5), so the two regions no longer overlap.

Values are trained with Adam on the target's teacher-forced NLL (prompt masked), with the
codebook installed, for ``steps`` steps at ``lr`` (cold start: uniform [0, 1) as in the reference;
warm: the base output at the key).

Deviations from the reference implementation (EasyEdit ``models/grace``), all documented:

* **Every position is queried** (a causal per-token rule). The reference compares only the last
  prompt token and replaces only there; per position is the same for the edited prompt itself,
  keeps teacher-forced scoring and KV-cached decoding equal, and also fires where a longer prompt
  *contains* an edited prompt as its prefix (same state, same key): an honest part of GRACE's
  locality.
* Labels are compared as target strings (the reference compares mean label ids).
* Training stops early once the target loss is below ``stop_loss`` (the reference has no early stop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field, PositiveFloat

from ..hooks import capture_input, capture_output
from ..interventions import InterventionError, ModuleIntervention, put, register_intervention
from ..models.model import Model
from ..requests import EditRequest
from ..scoring import encode_pairs, encode_prompts, forward_until, pad_batch, pad_id

from .base import Hparams, register_method
from .memory import ROLE, MemoryMethod
from .training import frozen_below, optimise, pairs_objective, trainable, training_batch


@register_intervention
class GraceCodebook(ModuleIntervention):
    """Keys ``[n, d_in]``, values ``[n, d_out]`` and radii ``[n]`` (float32) at one module;
    ``config["labels"]``: the target each entry was trained for."""

    type_name = "grace"

    @classmethod
    def empty(cls, model: Model, layer: int) -> GraceCodebook:
        w = model.arch.weight_out_in(model.module(ROLE, layer))
        d_out, d_in = int(w.shape[0]), int(w.shape[1])
        return cls({"role": ROLE, "layer": layer, "module": model.arch.name(ROLE, layer), "labels": []},
                   {"keys": torch.zeros(0, d_in), "values": torch.zeros(0, d_out), "eps": torch.zeros(0)})

    def bind(self, model: Model) -> None:
        super().bind(model)
        w = model.arch.weight_out_in(model.module(self.role, self.layer))
        k, v = self._tensors["keys"], self._tensors["values"]
        if k.shape[1] != w.shape[1] or v.shape[1] != w.shape[0]:
            raise InterventionError(f"grace codebook of keys {tuple(k.shape)} / values {tuple(v.shape)} does not fit "
                                    f"{self.config['module']} ({tuple(w.shape)} out x in)")
        if not (k.shape[0] == v.shape[0] == self._tensors["eps"].shape[0] == len(self.config["labels"])):
            raise InterventionError("grace codebook: keys, values, radii and labels differ in number")

    def __len__(self) -> int:
        return int(self._tensors["keys"].shape[0])

    def nearest(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance to and index of the nearest key for each row of ``query`` ``[N, d_in]``; ties
        go to the newest entry (a re-edit of the same prompt overrides the earlier one)."""
        d = torch.cdist(query.float(), self._tensors["keys"].to(query.device).float(),
                        compute_mode="donot_use_mm_for_euclid_dist")
        dist, rev = d.flip(-1).min(-1)
        return dist, d.shape[-1] - 1 - rev

    def output(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        if len(self) == 0:
            return output
        lead = inputs.shape[:-1]
        dist, idx = self.nearest(inputs.reshape(-1, inputs.shape[-1]))
        hit = dist <= self._tensors["eps"].to(dist.device)[idx]
        if not bool(hit.any()):
            return output
        values = self._tensors["values"].to(output.device)[idx].to(output.dtype)
        return torch.where(hit.reshape(*lead, 1), values.reshape(*lead, -1), output)

    def add(self, key: torch.Tensor, label: str, eps_init: float, expand: str) -> tuple[int, str]:
        """Grow the codebook for one edit (the module docstring's rule); returns the entry to
        train and what happened (``added``, ``expanded``, ``split``, ``reused``)."""
        t = self._tensors
        key = key.detach().float().cpu().reshape(1, -1)
        labels: list[str] = self.config["labels"]
        if len(self):
            dist, idx = self.nearest(key)
            d, j = float(dist[0]), int(idx[0])
            if d <= eps_init + float(t["eps"][j]):
                if labels[j] == label:
                    if d > float(t["eps"][j]):
                        t["eps"] = t["eps"].clone()
                        t["eps"][j] = d
                        if expand == "moving_average":
                            t["keys"] = t["keys"].clone()
                            t["keys"][j] = 0.5 * t["keys"][j] + 0.5 * key[0]
                        return j, "expanded"
                    return j, "reused"
                self._append(key, label, d / 2)
                t["eps"][j] = d / 2 - 1e-5
                return len(self) - 1, "split"
        self._append(key, label, eps_init)
        return len(self) - 1, "added"

    def _append(self, key: torch.Tensor, label: str, eps: float) -> None:
        t = self._tensors
        t["keys"] = torch.cat([t["keys"], key])
        t["values"] = torch.cat([t["values"], torch.zeros(1, t["values"].shape[1])])
        t["eps"] = torch.cat([t["eps"], torch.tensor([eps], dtype=torch.float32)])
        self.config["labels"] = [*self.config["labels"], label]


class GraceHparams(Hparams):
    """GRACE's codebook layer, deferral radius and value training."""

    layer: int = Field(..., ge=0, description="block whose MLP output projection holds the codebook")
    eps: PositiveFloat = Field(1.0, description="initial deferral radius (Euclidean, in key units)")
    lr: PositiveFloat = Field(1.0, description="Adam learning rate of a value")
    steps: int = Field(50, ge=1, le=10_000)
    stop_loss: float = Field(0.01, ge=0, description="stop once the target loss (nats/token) is this low")
    value_init: Literal["cold", "warm"] = "cold"
    expand: Literal["coverage", "moving_average"] = "coverage"


@register_method
class Grace(MemoryMethod):
    name = "grace"
    summary = "GRACE: a codebook of (key, value, radius) at one MLP output; fires only near an edited key"
    Hparams = GraceHparams

    def run(self, model: Model, requests: Sequence[EditRequest], hp: GraceHparams) -> dict[str, Any]:
        site, book = self.working_copy(model, GraceCodebook, hp.layer, lambda: GraceCodebook.empty(model, hp.layer))
        module = model.module(ROLE, hp.layer)
        actions, losses = [], []
        for r in requests:
            ids = encode_prompts(model, [r.prompt])
            x, mask, pos, _ = pad_batch(ids, pad_id(model), "right", model.device)
            with torch.no_grad(), capture_input(module) as keys_in, capture_output(module) as outs:
                forward_until(model, module, x, pos)  # nothing above the codebook's module is needed
            j, action = book.add(keys_in[0][0, -1], r.continuation, hp.eps, hp.expand)
            if action in ("added", "split"):
                init = outs[0][0, -1].float().cpu() if hp.value_init == "warm" else torch.rand(book._tensors["values"].shape[1])
                book._tensors["values"][j] = init
            put(model, site, book)
            losses.append(self._train(model, book, j, r, hp))
            actions.append(action)
        return {"codebook_size": len(book), "actions": actions, "loss_last": losses[-1]["loss_last"],
                "loss_first": losses[0]["loss_first"], "steps": sum(x["steps"] for x in losses)}

    @staticmethod
    def _train(model: Model, book: GraceCodebook, row: int, r: EditRequest, hp: GraceHparams) -> dict[str, Any]:
        """Adam on entry ``row``'s value (the other entries' gradients are masked to zero)."""
        values = book._tensors["values"].clone().requires_grad_(True)
        keep = torch.zeros(values.shape[0], 1)
        keep[row] = 1.0
        values.register_hook(lambda g: g * keep)
        book._tensors["values"] = values
        pairs = encode_pairs(model, [r.prompt], [r.continuation])
        try:
            with trainable(model, []), frozen_below(model, training_batch(model, pairs), hp.layer):
                return optimise([values], pairs_objective(model, pairs), lr=hp.lr, steps=hp.steps,
                                stop_loss=hp.stop_loss)
        finally:
            book._tensors["values"] = values.detach()


__all__ = ["Grace", "GraceCodebook", "GraceHparams"]
