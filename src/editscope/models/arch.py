"""Architecture specs: where each part of a causal LM lives, per transformers ``model_type``.

This module is the only place that knows module names. Everything else (methods, hooks, scoring)
asks the :class:`ArchSpec` of a loaded model. Templates are dotted paths into the
``AutoModelForCausalLM`` module tree; ``{}`` stands for the layer index.

Weight layout: ``torch.nn.Linear`` stores ``weight`` as ``[out_features, in_features]``; GPT-2's
``Conv1D`` stores it transposed, ``[in_features, out_features]``. ``ArchSpec.conv1d`` says which,
and :meth:`ArchSpec.weight_out_in` always returns the ``[out, in]`` view so that callers never branch.
"""

from __future__ import annotations

from ..registry import Registry

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError


class UnsupportedArchitectureError(InputError, ValueError):
    """The model's ``model_type`` has no :class:`ArchSpec`."""


@dataclass(frozen=True)
class ArchSpec:
    """Module templates of one architecture family.

    Attributes:
        model_types: transformers ``config.model_type`` values this spec covers.
        body: the base model (embeddings, blocks, final norm); its ``last_hidden_state`` is already
            final-normed, so ``lm_head(body(...).last_hidden_state)`` are the logits.
        embed: token embedding, ``[vocab, hidden]``.
        layers: the list of transformer blocks (``nn.ModuleList``).
        layer: one block, ``{}`` = index.
        attn: the attention module of a block.
        attn_out: the attention output projection, ``hidden <- hidden`` (GQA-agnostic).
        mlp: the MLP module of a block.
        mlp_in: MLP input projection(s), ``intermediate <- hidden``; gated MLPs list gate and up.
        mlp_out: MLP output ("down") projection, ``hidden <- intermediate``. Its input is the key
            space of locate-then-edit methods (ROME/MEMIT).
        final_norm: the norm applied before the head.
        lm_head: the output projection, ``vocab <- hidden``.
        conv1d: weights are GPT-2 ``Conv1D`` (``[in, out]``) rather than ``nn.Linear``.
        parallel_block: attention and MLP read the same residual (GPT-J, NeoX with
            ``use_parallel_residual``); informational for tracing.
        block_returns_tuple: a block returns ``(hidden_states, ...)`` rather than a tensor.
        attn_post_norm, mlp_post_norm: "sandwich" norms (Gemma 2/3) applied to the attention and
            MLP outputs before they are added to the residual stream; None where the outputs are
            added as they are. With them, a change of ``mlp_out``'s output reaches the residual
            through a normalisation, not one to one (see ``methods/locate.py``).
        edit_depth: ROME's default block as a fraction of the depth (``round(edit_depth * n_layers)``;
            MEMIT/AlphaEdit spread over the five blocks ending there), chosen per family from a
            CounterFact layer sweep (``benchmarks/bench_locate.py --layer-sweep``; README).
    """

    model_types: tuple[str, ...]
    body: str
    embed: str
    layers: str
    layer: str
    attn: str
    attn_out: str
    mlp: str
    mlp_in: tuple[str, ...]
    mlp_out: str
    final_norm: str
    lm_head: str
    conv1d: bool = False
    parallel_block: bool = False
    block_returns_tuple: bool = False
    attn_post_norm: str | None = None
    mlp_post_norm: str | None = None
    edit_depth: float = 1 / 6

    def templates(self) -> dict[str, str]:
        """All single-module templates by role name (``mlp_in`` expanded as ``mlp_in[i]``)."""
        out = {
            "body": self.body, "embed": self.embed, "layers": self.layers, "layer": self.layer,
            "attn": self.attn, "attn_out": self.attn_out, "mlp": self.mlp, "mlp_out": self.mlp_out,
            "final_norm": self.final_norm, "lm_head": self.lm_head,
        }
        for i, t in enumerate(self.mlp_in):
            out[f"mlp_in[{i}]"] = t
        for role in ("attn_post_norm", "mlp_post_norm"):
            if getattr(self, role) is not None:
                out[role] = getattr(self, role)
        return out

    def name(self, role: str, layer: int | None = None) -> str:
        """Dotted module name of ``role`` (a field name, or ``mlp_in[i]``) at ``layer``."""
        template = self.templates().get(role)
        if template is None:
            raise KeyError(f"unknown ArchSpec role {role!r}; known: {sorted(self.templates())}")
        if "{}" in template:
            if layer is None:
                raise ValueError(f"role {role!r} is per layer; pass layer=")
            return template.format(layer)
        return template

    def module(self, model: nn.Module, role: str, layer: int | None = None) -> nn.Module:
        """Resolve ``role`` at ``layer`` to the module inside the HF ``model``."""
        name = self.name(role, layer)
        if layer is not None:
            n = num_layers(model)
            if not 0 <= layer < n:
                raise IndexError(f"layer={layer} is outside the model (0..{n - 1})")
        try:
            return model.get_submodule(name)
        except AttributeError as e:
            raise UnsupportedArchitectureError(
                f"ArchSpec for {self.model_types} names {name!r}, which this "
                f"{type(model).__name__} does not have; the spec needs updating for this version"
            ) from e

    def weight_out_in(self, module: nn.Module) -> torch.Tensor:
        """The module's weight as ``[out_features, in_features]`` (a view, not a copy)."""
        w = module.weight
        return w.T if self.conv1d and not isinstance(module, nn.Linear) else w


def num_layers(model: nn.Module) -> int:
    """Number of transformer blocks (``config.num_hidden_layers``; aliased for GPT-2/J)."""
    return int(model.config.num_hidden_layers)


def max_positions(config) -> int | None:
    """Longest sequence the model's position scheme supports, in tokens, or None if unbounded."""
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        v = getattr(config, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


_LLAMA_LIKE = ArchSpec(
    model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "olmo2"),
    body="model",
    embed="model.embed_tokens",
    layers="model.layers",
    layer="model.layers.{}",
    attn="model.layers.{}.self_attn",
    attn_out="model.layers.{}.self_attn.o_proj",
    mlp="model.layers.{}.mlp",
    mlp_in=("model.layers.{}.mlp.gate_proj", "model.layers.{}.mlp.up_proj"),
    mlp_out="model.layers.{}.mlp.down_proj",
    final_norm="model.norm",
    lm_head="lm_head",
)

# Gemma 2/3: Llama's module names plus sandwich norms around attention and MLP, q/k norms inside
# attention, embeddings scaled by sqrt(d) inside the embedding module, sliding-window layers and a
# tied head; the logit soft-cap (Gemma 2) is applied by ``scoring.logits_from_hidden``.
_GEMMA_SANDWICH = ArchSpec(
    **{**_LLAMA_LIKE.__dict__, "model_types": ("gemma2", "gemma3_text"),
       "attn_post_norm": "model.layers.{}.post_attention_layernorm",
       "mlp_post_norm": "model.layers.{}.post_feedforward_layernorm",
       # ROME at block 1 of 18: on the first 20 CounterFact records, ES and PS were 1.00 at blocks 1, 3,
       # 5 and 7, but NS fell with depth (0.75, 0.40, 0.05, 0.20; base 0.80): deeper edits spill onto
       # the relation's other subjects (README, "Gemma 3 270M")
       "edit_depth": 1 / 18},
)

_GPT2 = ArchSpec(
    model_types=("gpt2",),
    body="transformer",
    embed="transformer.wte",
    layers="transformer.h",
    layer="transformer.h.{}",
    attn="transformer.h.{}.attn",
    attn_out="transformer.h.{}.attn.c_proj",
    mlp="transformer.h.{}.mlp",
    mlp_in=("transformer.h.{}.mlp.c_fc",),
    mlp_out="transformer.h.{}.mlp.c_proj",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    conv1d=True,
)

_GPTJ = ArchSpec(
    model_types=("gptj",),
    body="transformer",
    embed="transformer.wte",
    layers="transformer.h",
    layer="transformer.h.{}",
    attn="transformer.h.{}.attn",
    attn_out="transformer.h.{}.attn.out_proj",
    mlp="transformer.h.{}.mlp",
    mlp_in=("transformer.h.{}.mlp.fc_in",),
    mlp_out="transformer.h.{}.mlp.fc_out",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    parallel_block=True,
    block_returns_tuple=True,
)

_GPT_NEOX = ArchSpec(
    model_types=("gpt_neox",),
    body="gpt_neox",
    embed="gpt_neox.embed_in",
    layers="gpt_neox.layers",
    layer="gpt_neox.layers.{}",
    attn="gpt_neox.layers.{}.attention",
    attn_out="gpt_neox.layers.{}.attention.dense",
    mlp="gpt_neox.layers.{}.mlp",
    mlp_in=("gpt_neox.layers.{}.mlp.dense_h_to_4h",),
    mlp_out="gpt_neox.layers.{}.mlp.dense_4h_to_h",
    final_norm="gpt_neox.final_layer_norm",
    lm_head="lm_head",  # "embed_out" before transformers 5
    parallel_block=True,
)

ARCH_SPECS: Registry[ArchSpec] = Registry("architecture", {
    t: spec for spec in (_LLAMA_LIKE, _GEMMA_SANDWICH, _GPT2, _GPTJ, _GPT_NEOX) for t in spec.model_types
})


def arch_for(config) -> ArchSpec:
    """The :class:`ArchSpec` for a transformers config, or a clear error on an unknown family."""
    model_type = getattr(config, "model_type", None)
    spec = ARCH_SPECS.get(model_type) if isinstance(model_type, str) else None
    if spec is None:
        raise UnsupportedArchitectureError(
            f"model_type={model_type!r} has no ArchSpec (supported: {', '.join(sorted(ARCH_SPECS))}). "
            "To add one, define an ArchSpec with that model's module templates in "
            "editscope/models/arch.py and register it in ARCH_SPECS (or call "
            "editscope.models.register_arch(spec)); tests/unit/test_arch.py shows how to verify it."
        )
    return spec


def register_arch(spec: ArchSpec) -> None:
    """Register a user-defined :class:`ArchSpec` for its ``model_types`` (overrides built-ins)."""
    for t in spec.model_types:
        ARCH_SPECS.register(t, spec, overwrite=True)
