"""PMET on tiny models: its two-delta objective equals plain full forwards (attention and MLP output
both changed at the key token), on one block without the attention delta it is MEMIT exactly, and
with it the attention delta is really optimised and the shortfall is spread by sqrt. The contract
(target, undo, save/load, NaN rollback) is in test_method_contract.py."""

import pytest
import torch

import editscope as es
from editscope.hooks import add_to_output, capture_output
from editscope.methods.locate import (LocateHparams, ResidualBatch, ResidualProblem, context_templates,
                                      key_positions)
from editscope.methods.training import continuation_nll, training_batch
from editscope.models import tiny_model
from editscope.scoring import body_forward, encode_pairs, encode_prompts
from locate_settings import EASY, REQ

pytestmark = pytest.mark.usefixtures("tmp_cache")


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gptj", "gemma3_text"])
def test_the_two_delta_objective_equals_full_forwards(model_type):
    m = tiny_model(model_type, num_hidden_layers=4)
    layer, templates = 1, context_templates(m, 3, 5)
    prob = ResidualProblem(m, layer, REQ, templates, LocateHparams(n_contexts=3, context_len=5, kl_factor=0))
    g = torch.Generator().manual_seed(2)
    delta = (torch.randn(m.config.hidden_size, generator=g) * 0.5).requires_grad_()
    adelta = (torch.randn(m.config.hidden_size, generator=g) * 0.5).requires_grad_()
    nll, _ = ResidualBatch([prob]).forward(delta[None], adelta[None])
    nll.sum().backward()
    grad = adelta.grad.clone()
    adelta.grad = None
    texts = [t.replace("{}", REQ.prompt) for t in templates]
    batch = training_batch(m, encode_pairs(m, texts, [REQ.continuation] * len(texts)))
    rows = torch.arange(len(texts))
    cols = torch.tensor(key_positions(m, texts, [REQ.prompt] * len(texts), [REQ] * len(texts), "subject_last"))
    with add_to_output(m.module("mlp_out", layer), rows, cols, delta), \
            add_to_output(m.module("attn_out", layer), rows, cols, adelta):
        ref = continuation_nll(m, batch).mean()
    ref.backward()
    assert torch.allclose(nll, ref, atol=1e-5)
    assert grad.norm() > 0 and torch.allclose(grad, adelta.grad, rtol=1e-4, atol=1e-6)
    with torch.no_grad(), capture_output(m.module("attn_out", layer)) as seen:  # the bare prompt's attention output
        ids = torch.tensor(encode_prompts(m, [REQ.prompt]))
        body_forward(m, ids, None, None, use_cache=False)
    assert torch.allclose(prob.a0, seen[0][0, cols[0]].float(), atol=1e-5)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_on_one_block_without_the_attention_delta_it_is_memit(model_type):
    hp = {**EASY, "layers": [1], "clamp_norm_factor": 4.0, "v_weight_decay": 1e-3, "mom2_weight": 100.0}
    m = tiny_model(model_type)
    h = es.apply_edit(m, [REQ], "memit", **hp)
    memit = {n: p.detach().clone() for n, p in m.hf.named_parameters()}
    h.undo()
    es.apply_edit(m, [REQ], "pmet", **hp, attn_delta=False)
    for n, p in m.hf.named_parameters():
        assert torch.allclose(p, memit[n], atol=1e-6), n


def test_the_attention_delta_is_optimised_and_the_shortfall_spread_by_sqrt():
    m = tiny_model("llama")
    h = es.apply_edit(m, [REQ], "pmet", **{**EASY, "layers": [0, 1]})
    (info,) = h.info["requests"]
    assert info["attn_delta_norm"] > 0 and info["attn_norm"] > 0
    first, second = h.info["layers"][0], h.info["layers"][1]
    # before any update the shortfall is the MLP delta itself
    assert first["shortfall_norm"] == pytest.approx(info["delta_norm"], rel=1e-4)
    assert second["shortfall_norm"] > 0
    h.undo()
    lin = es.apply_edit(m, [REQ], "pmet", **{**EASY, "layers": [0, 1]}, spread="linear")
    # the first block gets shortfall / sqrt(2) under PMET, / 2 under MEMIT's rule: a larger update
    assert first["update_norm"] > lin.info["layers"][0]["update_norm"]
