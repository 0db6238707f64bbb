"""MELO (Yu et al., 2024, "MELO: Enhancing Model Editing with Neuron-Indexed Dynamic LoRA", AAAI).

Each edit (a batch of requests) gets its own low-rank adapter block in the MLP input projections of
a few blocks; a vector database at an earlier block routes to it. The database keys are the output
of the MLP input projection of the *router* block at the edited prompt's last token, each with a
radius; a position whose router output lies within the radius of its nearest key uses that key's
adapter block in every adapted module, any other position uses none, so the model away from the
edits is exactly the base model. Only the new block trains (Adam on the target's teacher-forced
NLL); earlier blocks are left as they are.

Read from EasyEdit's port (github.com/zjunlp/EasyEdit, ``easyeditor/models/melo/melo.py`` and
``peft_egg/src/peft/tuners/melo.py`` at 0c4d4d8; ``hparams/MELO/gpt2-xl.yaml``): router
``transformer.h.35.mlp.c_fc`` and adapters in ``h.36`` and ``h.37``'s ``mlp.c_fc`` of 48 blocks
(scaled here by depth), 2 ranks per block, radius 0.5 (Euclidean), 50 steps at lr 1e-3, cold start
(adapter ``B`` at zero, ``A`` as LoRA initialises it), every new key a new cluster (the reference's
conflict handling is commented out; nearest key wins, ties to the newest).

Deviations, deliberate: routing is per position (as editscope's GRACE), not one block per sequence
chosen from its last token: a full pass and KV-cached decoding then agree, and a position routes by
its own state; the reference's inference path activates every block at once (``lora_block_mapping =
list(range(len(self.VecDB)))``), which is not the method the paper describes and is not copied. The
adapter scale is 1 (the reference multiplies by ``sqrt(max_rank / rank_per_block)``, a constant the
learning rate absorbs). Training stops early at ``stop_loss``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field, PositiveFloat

from ..hooks import capture_output
from ..interventions import InterventionError, ModuleIntervention, installed, put, register_intervention
from ..models.arch import ArchSpec
from ..models.model import Model
from ..requests import EditRequest
from ..scoring import encode_pairs, encode_prompts, forward_until, pad_batch, pad_id

from .base import EditMethod, HparamError, Hparams, register_method
from .training import frozen_below, optimise, pairs_objective, trainable, training_batch

ROLE = "mlp_in[0]"


@register_intervention
class MeloAdapters(ModuleIntervention):
    """Router keys ``[n, d_key]``, radii ``[n]`` and blocks ``[n]`` at the router module; adapter
    factors ``A`` ``[n_targets, n_blocks, r, d_in]`` and ``B`` ``[n_targets, n_blocks, d_out, r]``
    in the modules of ``config["targets"]`` (float32)."""

    type_name = "melo"

    @classmethod
    def empty(cls, model: Model, router: int, targets: list[int], rank: int) -> MeloAdapters:
        w = model.arch.weight_out_in(model.module(ROLE, router))
        t = model.arch.weight_out_in(model.module(ROLE, targets[0]))
        d_out, d_in = int(t.shape[0]), int(t.shape[1])
        return cls({"role": ROLE, "layer": router, "module": model.arch.name(ROLE, router), "targets": targets,
                    "target_modules": [model.arch.name(ROLE, x) for x in targets], "rank": rank, "labels": []},
                   {"keys": torch.zeros(0, int(w.shape[0])), "radii": torch.zeros(0), "blocks": torch.zeros(0, dtype=torch.long),
                    "A": torch.zeros(len(targets), 0, rank, d_in), "B": torch.zeros(len(targets), 0, d_out, rank)})

    def __init__(self, config: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None):
        super().__init__(config, tensors)
        self._route: torch.Tensor | None = None
        self._training: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (block, A, B) being trained

    def hooked(self) -> list[tuple[str, int]]:
        return [(ROLE, self.layer), *((ROLE, int(x)) for x in self.config["targets"])]

    def bind(self, model: Model) -> None:
        super().bind(model)
        for x, name in zip(self.config["targets"], self.config["target_modules"]):
            if not self.layer < int(x) < model.n_layers or model.arch.name(ROLE, int(x)) != name:
                raise InterventionError(f"melo: adapter module {name!r} (block {x}) does not fit this model after "
                                        f"router block {self.layer}")

    @property
    def n_blocks(self) -> int:
        return int(self._tensors["A"].shape[1])

    def route(self, keys_out: torch.Tensor) -> torch.Tensor:
        """The adapter block of each position (``[...]``, -1: none) from the router output ``[..., d_key]``."""
        t = self._tensors
        lead = keys_out.shape[:-1]
        if t["keys"].shape[0] == 0:
            return torch.full(lead, -1, dtype=torch.long, device=keys_out.device)
        d = torch.cdist(keys_out.reshape(-1, keys_out.shape[-1]).float(), t["keys"].to(keys_out.device),
                        compute_mode="donot_use_mm_for_euclid_dist")
        dist, rev = d.flip(-1).min(-1)
        idx = d.shape[-1] - 1 - rev  # ties: the newest key
        hit = dist <= t["radii"].to(dist.device)[idx]
        return torch.where(hit, t["blocks"].to(dist.device)[idx], torch.full_like(idx, -1)).reshape(lead)

    def output(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return self.output_at(0, inputs, output)

    def output_at(self, k: int, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        if k == 0:
            self._route = self.route(output)
            return output
        route = self._route
        if k == len(self.config["targets"]):
            self._route = None  # consumed: a later forward must route again at the router
        if route is None or route.shape != output.shape[:-1]:
            raise RuntimeError(f"melo: adapter block {self.config['targets'][k - 1]} ran without its router block "
                               f"{self.layer} in the same forward (a computation that skips the blocks below it); "
                               "undo the MELO edit before running it")
        if not bool((route >= 0).any()):
            return output
        delta = torch.zeros_like(output)
        for b in route.unique().tolist():
            if b < 0:
                continue
            if self._training is not None and self._training[0] == b:
                a, bb = self._training[1][k - 1], self._training[2][k - 1]
            else:
                a, bb = self._tensors["A"][k - 1, b], self._tensors["B"][k - 1, b]
            mask = route == b
            x = inputs[mask].float()
            a, bb = a.to(x.device), bb.to(x.device)
            delta = delta.index_put(tuple(mask.nonzero().T), ((x @ a.T) @ bb.T).to(output.dtype))
        return output + delta

    def add_block(self, keys: torch.Tensor, labels: list[str], radius: float) -> int:
        """A new adapter block (``A`` as LoRA initialises it, ``B`` zero) and a cluster per key."""
        t = self._tensors
        b = self.n_blocks
        n_t, _, r, d_in = t["A"].shape
        a = torch.empty(n_t, 1, r, d_in)
        for i in range(n_t):
            torch.nn.init.kaiming_uniform_(a[i, 0], a=math.sqrt(5))
        t["A"] = torch.cat([t["A"], a], 1)
        t["B"] = torch.cat([t["B"], torch.zeros(n_t, 1, t["B"].shape[2], r)], 1)
        t["keys"] = torch.cat([t["keys"], keys.float().cpu()])
        t["radii"] = torch.cat([t["radii"], torch.full((keys.shape[0],), float(radius))])
        t["blocks"] = torch.cat([t["blocks"], torch.full((keys.shape[0],), b, dtype=torch.long)])
        self.config["labels"] = [*self.config["labels"], *labels]
        return b


class MELOHparams(Hparams):
    router: int | None = Field(None, ge=0, description="block whose MLP input projection's output is the key; "
                                                       "default 35/48 of the depth (the reference's GPT-2 XL)")
    targets: list[int] | None = Field(None, min_length=1, description="blocks whose MLP input projection gets "
                                                                      "adapters; default the two after the router")
    rank: int = Field(2, ge=1, le=256, description="ranks per adapter block (num_rank_per_block)")
    radius: PositiveFloat = Field(0.5, description="initial cluster radius (Euclidean, router-output units)")
    lr: PositiveFloat = Field(1e-3, description="Adam learning rate of the new block (edit_lr)")
    steps: int = Field(50, ge=1, le=10_000, description="training steps per edit (num_iter)")
    stop_loss: float = Field(0.01, ge=0)


@register_method
class MELO(EditMethod):
    name = "melo"
    family = "memory"
    summary = ("MELO: a new low-rank adapter block per edit in a few MLPs, used only where a vector database at an "
               "earlier block routes to it (Yu et al., 2024)")
    Hparams = MELOHparams
    kind = "module"

    @classmethod
    def arch_defaults(cls, arch: ArchSpec, n_layers: int) -> dict[str, Any]:
        router = max(0, min(n_layers - 2, round(35 * n_layers / 48)))
        return {"router": router, "targets": [x for x in (router + 1, router + 2) if x < n_layers]}

    def check(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        bad = [x for x in hp.targets if not hp.router < x < model.n_layers]
        if hp.router >= model.n_layers or bad:
            raise HparamError(f"router={hp.router}, targets={hp.targets}: the adapted blocks must come after the router "
                              f"and inside the model (0..{model.n_layers - 1})")
        live = installed(model).get(self._site(model, hp))
        if live is not None and (live.config["targets"] != list(hp.targets) or live.config["rank"] != hp.rank):
            raise HparamError(f"this model's MELO adapters at router block {hp.router} use targets "
                              f"{live.config['targets']} and rank {live.config['rank']}; edit with the same settings")

    @staticmethod
    def _site(model: Model, hp: Any) -> str:
        return f"{MeloAdapters.type_name}@{model.arch.name(ROLE, hp.router)}"

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        site = self._site(model, hp)
        live = installed(model).get(site)
        mem = live.copy() if live is not None else MeloAdapters.empty(model, hp.router, list(hp.targets), hp.rank)
        router = model.module(ROLE, hp.router)
        ids = encode_prompts(model, [r.prompt for r in requests])
        x, _, pos, _ = pad_batch(ids, pad_id(model), "right", model.device)
        with torch.no_grad(), capture_output(router) as outs:
            forward_until(model, router, x, pos)
        keys = outs[0][torch.arange(len(ids)), torch.tensor([len(s) - 1 for s in ids])]
        b = mem.add_block(keys, [r.continuation for r in requests], hp.radius)
        a = mem._tensors["A"][:, b].to(model.device).clone().requires_grad_(True)
        bb = mem._tensors["B"][:, b].to(model.device).clone().requires_grad_(True)
        mem._training = (b, a, bb)
        put(model, site, mem)
        pairs = encode_pairs(model, [r.prompt for r in requests], [r.continuation for r in requests])
        try:
            with trainable(model, []), frozen_below(model, training_batch(model, pairs), hp.router):
                info = optimise([a, bb], pairs_objective(model, pairs), lr=hp.lr, steps=hp.steps, stop_loss=hp.stop_loss)
        finally:
            mem._training = None
            mem._tensors["A"][:, b] = a.detach().cpu()
            mem._tensors["B"][:, b] = bb.detach().cpu()
        return {"block": b, "clusters": int(mem._tensors["keys"].shape[0]), **info}


__all__ = ["MELO", "MELOHparams", "MeloAdapters"]
