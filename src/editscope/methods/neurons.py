"""Knowledge neurons (KN; Dai et al., 2022, "Knowledge Neurons in Pretrained Transformers", ACL).

Read from EasyEdit's port (github.com/zjunlp/EasyEdit, ``easyeditor/models/kn/kn_main.py`` and
``knowledge_neurons/knowledge_neurons.py`` at 15e8306; configs ``hparams/KN/*.yaml``), which wraps
the ``knowledge-neurons`` package. For one request:

1. **Attribution** (integrated gradients). The answer the model holds now (``target_true`` when the
   request gives it, else the model's greedy continuation of as many tokens as ``target_new``) is
   teacher forced after the prompt. For every searched layer and every answer token, the MLP's
   intermediate activation ``a`` ``[d_ff]`` (the input of ``mlp_out``) at the position predicting
   that token is replaced by ``alpha * a`` for ``alpha`` in ``linspace(0, 1, steps)``; the score of
   neuron ``i`` is ``a_i / steps * sum_alpha dP(token)/d(alpha a)_i`` (a Riemann sum of the
   integrated gradient of the token's probability). Scores are averaged over answer tokens.
2. **Selection**: neurons whose score exceeds ``adaptive_threshold`` times the largest score over
   all searched layers (the paper's ``t``), at most ``max_neurons`` of the highest.
3. **Edit**: each selected neuron's value vector (its column of ``mlp_out``) gains
   ``scale * (mean_j E[target_new_j] - mean_j E[answer_j])``, ``E`` the input token embeddings:
   the old answer's embedding out, the new one's in.

Differences from the reference, deliberate: the activation is the input of the MLP's output
projection for every architecture (the reference patches ``gate_proj``'s pre-activation output for
Llama and ``c_fc``'s pre-GELU output for GPT-2; the paper's neurons are BERT's post-activation
intermediate units, which is what ``mlp_out`` reads); multi-token answers are teacher forced (the
reference re-runs the prompt per token and appends its greedy argmax); the edit uses the mean
embedding times ``scale``, which equals the reference for one- and two-token answers (it adds
``2 E`` for one token and each token's ``E`` once for several). The reference's refinement over
paraphrased prompts (``refine``) is off in every EasyEdit config and is not offered: an
:class:`~editscope.requests.EditRequest` carries one prompt. Defaults: ``steps`` 20 (the paper's
``m``; EasyEdit's Llama configs use 1, which evaluates the gradient only at a zero activation),
``adaptive_threshold`` 0.2 and ``scale`` 2 (EasyEdit's configs and code), every layer searched.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

import torch
from pydantic import Field, PositiveFloat

from ..hooks import capture_input
from ..models.model import Model
from ..requests import EditRequest
from ..scoring import EncodedPair, body_forward, encode_pairs, logits_from_hidden
from ..scoring.decoding import greedy_continuations

from .base import EditFailed, EditMethod, Hparams, HparamError, register_method
from .training import trainable


class KNHparams(Hparams):
    layers: list[int] | None = Field(None, description="layers whose MLP neurons are searched (default: all)")
    steps: int = Field(20, ge=2, description="integrated-gradient steps from 0 to the activation (paper m=20)")
    adaptive_threshold: float = Field(0.2, gt=0.0, le=1.0,
                                      description="keep neurons scoring above this fraction of the top score")
    max_neurons: int | None = Field(None, ge=1, description="keep at most this many of the highest-scoring neurons")
    scale: PositiveFloat = Field(2.0, description="multiple of the embedding difference added to each value vector")
    rows: int = Field(160, ge=1, description="forward rows per pass (layers x steps are packed into passes)")


@contextmanager
def _scaled_at(module: torch.nn.Module, rows: torch.Tensor, col: int, value: torch.Tensor) -> Iterator[None]:
    """``module``'s input at ``(rows, col)`` replaced by ``value`` ``[len(rows), d_ff]`` (differentiable)."""

    def hook(mod, args):
        x = args[0]
        return (x.index_put((rows, torch.full_like(rows, col)), value.to(x.dtype)), *args[1:])

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@register_method
class KnowledgeNeurons(EditMethod):
    name = "kn"
    family = "neurons"
    summary = ("knowledge neurons: integrated-gradient attribution to MLP neurons, then their value vectors "
               "moved from the old answer's embedding to the new one's (Dai et al., 2022)")
    Hparams = KNHparams
    one_at_a_time = True

    def _layers(self, model: Model, hp: KNHparams) -> list[int]:
        n = model.n_layers
        layers = list(range(n)) if hp.layers is None else hp.layers
        bad = [x for x in layers if not 0 <= x < n]
        if bad or not layers:
            raise HparamError(f"layers: {bad or layers} is not a non-empty list of layers of this model (0..{n - 1})")
        return sorted(set(layers))

    def check(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> None:
        self._layers(model, hp)

    def touched(self, model: Model, hp: Any) -> list[str]:
        return [f"{model.arch.name('mlp_out', layer)}.weight" for layer in self._layers(model, hp)]

    def _answer(self, model: Model, req: EditRequest, n_tokens: int) -> EncodedPair:
        """The answer the model holds now after the prompt (``target_true``, else its greedy continuation)."""
        if req.continuation_true is not None:
            return encode_pairs(model, [req.prompt], [req.continuation_true])[0]
        gen = greedy_continuations(model, [req.prompt], max_new_tokens=n_tokens, stop_at_eos=False)[0]
        return EncodedPair(encode_pairs(model, [req.prompt], [req.continuation])[0].prompt_ids, gen.token_ids)

    def attribution(self, model: Model, pair: EncodedPair, layers: Sequence[int],
                    hp: KNHparams) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrated-gradient scores ``[len(layers), d_ff]`` of every neuron for ``pair``'s continuation
        (mean over its tokens; units of probability), and the neurons' activations there (mean over
        the same positions, ``[len(layers), d_ff]``)."""
        seq = list(pair.prompt_ids + pair.cont_ids)
        n_p = len(pair.prompt_ids)
        modules = [model.module("mlp_out", layer) for layer in layers]
        dev = model.device
        ids = torch.tensor([seq], device=dev)
        with torch.no_grad(), ExitStack() as stack:
            seen = [stack.enter_context(capture_input(m)) for m in modules]
            body_forward(model, ids, None, torch.arange(len(seq), device=dev)[None], use_cache=False)
        acts = [s[0][0].float() for s in seen]  # [T, d_ff] per layer
        alphas = torch.linspace(0, 1, hp.steps, device=dev)
        per_pass = max(1, hp.rows // hp.steps)
        scores = torch.zeros(len(layers), acts[0].shape[-1], device=dev)
        for j, token in enumerate(pair.cont_ids):
            col = n_p - 1 + j
            prefix = torch.tensor([seq[:col + 1]], device=dev)
            for start in range(0, len(layers), per_pass):
                chunk = range(start, min(start + per_pass, len(layers)))
                scaled = [(alphas[:, None] * acts[k][col]).requires_grad_() for k in chunk]
                rows = len(chunk) * hp.steps
                with trainable(model, []), ExitStack() as stack:
                    for slot, k in enumerate(chunk):
                        which = torch.arange(slot * hp.steps, (slot + 1) * hp.steps, device=dev)
                        stack.enter_context(_scaled_at(modules[k], which, col, scaled[slot]))
                    hidden = body_forward(model, prefix.expand(rows, -1), None,
                                          torch.arange(col + 1, device=dev).expand(rows, -1),
                                          use_cache=False).last_hidden_state[:, col]
                    prob = torch.softmax(logits_from_hidden(model, hidden), -1)[:, token]
                    grads = torch.autograd.grad(prob.sum(), scaled)
                for slot, k in enumerate(chunk):
                    scores[k] += grads[slot].sum(0) * acts[k][col] / hp.steps
        cols = slice(n_p - 1, n_p - 1 + len(pair.cont_ids))
        return scores / len(pair.cont_ids), torch.stack([a[cols].mean(0) for a in acts])

    def run(self, model: Model, requests: Sequence[EditRequest], hp: Any) -> dict[str, Any]:
        (req,) = requests
        layers = self._layers(model, hp)
        target = encode_pairs(model, [req.prompt], [req.continuation])[0]
        answer = self._answer(model, req, len(target.cont_ids))
        scores, activation = self.attribution(model, answer, layers, hp)
        top = float(scores.max())
        if not top > 0:
            raise EditFailed(f"kn: no neuron raises the probability of the current answer {req.prompt!r} -> "
                             f"{model.tokenizer.decode(list(answer.cont_ids))!r} (top score {top:.3g}); nothing to edit")
        picked = (scores > hp.adaptive_threshold * top).nonzero().tolist()
        picked.sort(key=lambda li: -float(scores[li[0], li[1]]))
        if hp.max_neurons is not None:
            picked = picked[:hp.max_neurons]
        embed = model.module("lm_head").weight  # [V, d]: the input embeddings when tied
        with torch.no_grad():
            shift = hp.scale * (embed[list(target.cont_ids)].float().mean(0) - embed[list(answer.cont_ids)].float().mean(0))
            for k, i in picked:
                w = model.arch.weight_out_in(model.module("mlp_out", layers[k]))
                sign = 1.0 if activation[k, i] >= 0 else -1.0  # the neuron adds a_i * w[:, i]
                w[:, i] += sign * shift.to(device=w.device, dtype=w.dtype)
        by_layer: dict[int, int] = {}
        for k, _ in picked:
            by_layer[layers[k]] = by_layer.get(layers[k], 0) + 1
        return {"neurons": len(picked), "neurons_by_layer": by_layer, "top_score": top,
                "answer": model.tokenizer.decode(list(answer.cont_ids)), "shift_norm": float(shift.norm())}


__all__ = ["KNHparams", "KnowledgeNeurons"]
