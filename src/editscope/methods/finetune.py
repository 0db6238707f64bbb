"""The fine-tuning family: ``ft``, ``ft-constrained``, ``ft-l``, ``ft-m``, and ``locft-bf`` (lifelong).

The first four run :func:`editscope.methods.training.optimise` on a set of block parameters:

| method | parameters | objective |
|---|---|---|
| ``ft`` | every parameter of the chosen blocks (default: all blocks) | target tokens, teacher forced, prompt masked |
| ``ft-constrained`` | as ``ft`` | target loss + ``anchor_weight`` x mean loss on anchors; optional L-inf box (Zhu et al., 2020) |
| ``ft-l`` | one block's MLP output projection | every target token predicted from the last prompt position, L-inf box (ROME paper's FT-L) |
| ``ft-m`` | one block's MLP output projection | target tokens, teacher forced, prompt masked (KnowEdit's FT-M) |
| ``locft-bf`` | one block's MLP output projection (weight) | as ``ft-m`` with EOS appended, breadth-first: shuffled mini-batches of all edits per epoch |

Anchors keep the model's behaviour elsewhere: by default their targets are the *base model's own*
greedy continuations (what locality is measured against), drawn from a probe suite.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

import torch

from pydantic import Field, PositiveFloat

from ..models.arch import ArchSpec
from ..models.model import Model
from ..requests import EditRequest, resolve_sep
from ..scoring import EncodedPair, encode_pairs, encode_prompts, greedy_continuations
from .base import EditMethod, Hparams, HparamError, register_method
from .handle import parameters
from .training import pairs_objective, target_objective, optimise, trainable
from ..probes.registry import get_suite, suite_info

Modules = Literal["all", "mlp", "mlp_out", "attn"]


def block_parameter_names(model: Model, layers: Sequence[int], modules: Modules = "all") -> list[str]:
    """Names of the parameters of ``modules`` (``all``, ``mlp``, ``mlp_out``, ``attn``) in ``layers``."""
    roles = {"all": "layer", "mlp": "mlp", "mlp_out": "mlp_out", "attn": "attn"}[modules]
    prefixes = tuple(model.arch.name(roles, i) + "." for i in layers)
    return [n for n, _ in model.hf.named_parameters() if n.startswith(prefixes)]


def check_layers(model: Model, field: str, layers: Sequence[int]) -> None:
    bad = [i for i in layers if not 0 <= i < model.n_layers]
    if bad:
        raise HparamError(f"{field}={list(layers)}: layer(s) {bad} are outside the model; "
                          f"{model.name} has layers 0..{model.n_layers - 1}")


def _layers(model: Model, layers: Any) -> list[int]:
    return list(range(model.n_layers)) if layers == "all" else list(layers)


class FTHparams(Hparams):
    """Plain fine-tuning: Adam on the chosen blocks' parameters."""

    layers: list[int] | Literal["all"] = "all"
    modules: Modules = "all"
    lr: PositiveFloat = 1e-5
    steps: int = Field(30, ge=1, le=100_000)
    stop_loss: float = Field(0.01, ge=0, description="stop once the target loss (nats/token) is this low")
    linf: PositiveFloat | None = Field(None, description="L-inf bound on each weight's change")
    optimizer: Literal["adam", "adamw"] = Field("adam", description="adamw: decoupled weight decay (the published "
                                                                    "2+2=5 study's AdamW: weight_decay 0.01)")
    weight_decay: float = Field(0.0, ge=0)


class _BlockFT(EditMethod):
    family = "fine-tuning"
    mode = "teacher"

    def check(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        check_layers(model, "layers" if hasattr(hp, "layers") else "layer", self._layer_list(model, hp))

    def _layer_list(self, model: Model, hp: Any) -> list[int]:
        return _layers(model, hp.layers) if hasattr(hp, "layers") else [hp.layer]

    def touched(self, model: Model, hp: Any) -> list[str]:
        return block_parameter_names(model, self._layer_list(model, hp), getattr(hp, "modules", "mlp_out"))

    def anchors(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> list[EncodedPair]:
        return []

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        anchor_pairs = self.anchors(model, requests, hp)  # before any weight changes (base targets)
        params = list(parameters(model, self.touched(model, hp)).values())
        objective = target_objective(model, requests, self.mode)
        extra = pairs_objective(model, anchor_pairs) if anchor_pairs else None
        with trainable(model, params):
            info = optimise(params, objective, lr=hp.lr, steps=hp.steps, stop_loss=hp.stop_loss,
                            linf=hp.linf, extra=extra, weight=getattr(hp, "anchor_weight", 1.0),
                            optimizer=getattr(hp, "optimizer", "adam"), weight_decay=getattr(hp, "weight_decay", 0.0))
        if anchor_pairs:
            info["n_anchors"] = len(anchor_pairs)
        return info


@register_method
class FT(_BlockFT):
    name = "ft"
    summary = "fine-tune block parameters on the target (naive FT; all blocks by default)"
    Hparams = FTHparams


class FTConstrainedHparams(FTHparams):
    """FT plus an anchor loss on examples whose outputs should not change."""

    anchors: list[tuple[str, str]] | None = Field(None, description="(prompt, target) pairs to keep; "
                                                   "targets ignored with anchor_targets='base'")
    anchor_suite: str | None = "facts"
    anchor_suite_args: dict[str, Any] = Field(default_factory=dict)
    n_anchors: int = Field(32, ge=1, le=100_000)
    anchor_weight: PositiveFloat = 1.0
    anchor_targets: Literal["base", "gold"] = "base"
    seed: int = 0


@register_method
class FTConstrained(_BlockFT):
    name = "ft-constrained"
    summary = "FT + weighted loss on anchor examples (base outputs kept) + optional L-inf box (Zhu et al.)"
    Hparams = FTConstrainedHparams

    def check(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        super().check(model, requests, hp)
        if not hp.anchors and not hp.anchor_suite:
            raise HparamError("ft-constrained needs anchors=[(prompt, target), ...] or anchor_suite=NAME")
        self._anchor_candidates(requests, hp)  # suite name, arguments and emptiness checked up front

    def _anchor_candidates(self, requests: Sequence[EditRequest], hp: Any) -> list[tuple[str, str]]:
        edited = {r.prompt.strip() for r in requests}
        if hp.anchors:
            for i, (p, t) in enumerate(hp.anchors):
                if not p.strip() or not t.strip():
                    raise HparamError(f"anchors[{i}] must be a (prompt, target) pair of non-empty strings")
            cands = [(p, resolve_sep(p, t) + t) for p, t in hp.anchors]
        else:
            try:
                info = suite_info(hp.anchor_suite)
            except KeyError as e:
                raise HparamError(f"anchor_suite: {e}") from None
            kwargs = dict(hp.anchor_suite_args)
            if info.needs_edit:
                kwargs.setdefault("edit", requests[0])
            try:
                suite = get_suite(hp.anchor_suite, **kwargs)
            except TypeError as e:
                raise HparamError(f"anchor_suite_args={hp.anchor_suite_args}: {e}") from None
            cands = [(p.prompt, p.continuation) for p in suite if p.category not in ("target", "paraphrase")]
        cands = [(p, t) for p, t in cands if p.strip() not in edited]
        if not cands:
            raise HparamError("no anchors left after removing the edited prompts; give other anchors")
        rng = random.Random(hp.seed)
        return rng.sample(cands, min(hp.n_anchors, len(cands)))

    def anchors(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> list[EncodedPair]:
        chosen = self._anchor_candidates(requests, hp)
        prompts = [p for p, _ in chosen]
        gold = encode_pairs(model, prompts, [c for _, c in chosen])
        if hp.anchor_targets == "gold":
            return gold
        # the base model's own greedy continuation, as long as the gold target
        out: list[EncodedPair] = []
        prompt_ids = encode_prompts(model, prompts)
        by_len: dict[int, list[int]] = {}
        for i, g in enumerate(gold):
            by_len.setdefault(len(g.cont_ids), []).append(i)
        own: dict[int, tuple[int, ...]] = {}
        for n, idx in by_len.items():
            gens = greedy_continuations(model, [prompts[i] for i in idx], n, stop_at_eos=False)
            own.update({i: g.token_ids for i, g in zip(idx, gens)})
        for i in range(len(prompts)):
            out.append(EncodedPair(tuple(prompt_ids[i]), tuple(own[i])))
        return out


class LayerFTHparams(Hparams):
    """Fine-tuning of one block's MLP output projection."""

    layer: int | None = Field(None, description="block index; default per architecture")
    lr: PositiveFloat = 5e-4
    steps: int = Field(25, ge=1, le=100_000)
    stop_loss: float = Field(0.01, ge=0)
    linf: PositiveFloat | None = None


class FTLHparams(LayerFTHparams):
    linf: PositiveFloat | None = 5e-3


def _mid_layer(arch: ArchSpec, n_layers: int) -> dict[str, Any]:
    # A third of the way up: where ROME-style causal traces of small Llama/GPT models put the
    # subject's MLP recall; see the per-method tests for the efficacy this reaches on the default.
    return {"layer": max(0, min(n_layers - 1, n_layers // 3))}


class _LayerFT(_BlockFT):
    """One block's MLP out-projection, the block chosen per architecture."""

    @classmethod
    def arch_defaults(cls, arch: ArchSpec, n_layers: int) -> dict[str, Any]:
        return _mid_layer(arch, n_layers)


@register_method
class FTL(_LayerFT):
    name = "ft-l"
    summary = "one block's MLP out-projection; all target tokens from the last prompt position; L-inf box (ROME's FT-L)"
    Hparams = FTLHparams
    mode = "prompt_last"


@register_method
class FTM(_LayerFT):
    name = "ft-m"
    summary = "one block's MLP out-projection; teacher-forced target loss, prompt masked (KnowEdit's FT-M)"
    Hparams = LayerFTHparams


class LocFTBFHparams(Hparams):
    """LocFT-BF (Yang et al., 2025, "Fine-tuning done right in model editing", arXiv 2509.22072):
    settings of the authors' code (github.com/ICT-STAR/LocFT at f5bde34, ``fine-tune.py`` and
    ``hparams/llama3-8b.yaml``)."""

    layer: int | None = Field(None, description="block whose MLP out-projection is tuned; default: the reference's "
                                                "Llama-3-8B layer 22 of 32, scaled by depth")
    lr: PositiveFloat = Field(5e-4, description="Adam learning rate (reference 5e-4)")
    batch_size: int = Field(100, ge=1, description="edits per mini-batch (reference 100)")
    epochs: int = Field(25, ge=1, le=10_000, description="passes over all pending edits (reference num_steps 25)")
    stop_loss: float = Field(0.01, ge=0, description="a mini-batch below this loss takes no step; an epoch whose "
                                                     "mean is below it ends training (reference 1e-2)")
    weight_decay: float = Field(0.0, ge=0)
    eos: bool = Field(True, description="append the end-of-sequence token to every target, as the reference does")
    seed: int = Field(0, description="seeds the per-epoch shuffle of the edits")


@register_method
class LocFTBF(_BlockFT):
    """Breadth-first fine-tuning: every epoch shuffles all pending edits and takes one Adam step per
    mini-batch (depth-first FT would train each edit to convergence before the next). One call edits
    its requests together; in a stream each batch of the stream is one call."""

    name = "locft-bf"
    family = "lifelong"
    summary = ("fine-tuning done breadth-first: Adam on one block's MLP out-projection over shuffled mini-batches "
               "of all pending edits, EOS appended (Yang et al., 2025)")
    Hparams = LocFTBFHparams

    @classmethod
    def arch_defaults(cls, arch: ArchSpec, n_layers: int) -> dict[str, Any]:
        return {"layer": max(0, min(n_layers - 1, round(22 * n_layers / 32)))}

    def _layer_list(self, model: Model, hp: Any) -> list[int]:
        return [hp.layer]

    def touched(self, model: Model, hp: Any) -> list[str]:
        return [model.arch.name("mlp_out", hp.layer) + ".weight"]  # the weight only, as the reference

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        params = list(parameters(model, self.touched(model, hp)).values())
        pairs = encode_pairs(model, [r.prompt for r in requests], [r.continuation for r in requests])
        eos = model.tokenizer.eos_token_id
        if hp.eos and eos is not None:
            pairs = [EncodedPair(p.prompt_ids, p.cont_ids + (eos,), p.exact) for p in pairs]
        rng = random.Random(hp.seed)
        opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        order, means, steps = list(range(len(pairs))), [], 0
        with trainable(model, params):
            for _ in range(hp.epochs):
                rng.shuffle(order)
                total = 0.0
                for start in range(0, len(order), hp.batch_size):
                    idx = order[start:start + hp.batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = pairs_objective(model, [pairs[i] for i in idx])()
                    total += loss.item() * len(idx)
                    if loss.item() >= hp.stop_loss:
                        loss.backward()
                        opt.step()
                        steps += 1
                means.append(total / len(order))
                if means[-1] < hp.stop_loss:
                    break
        return {"epochs": len(means), "steps": steps, "epoch_loss": means}
