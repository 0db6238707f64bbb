"""Knowledge neurons (KN) on tiny models: the attribution is an integrated gradient (its scores of one
layer add up to the change of the answer's probability when that layer's activation goes from zero
to its value: completeness), the edit moves exactly the selected neurons' value vectors by the
embedding difference, and bad settings are refused. The registry-wide contract (reaches the target,
undo, save/load, NaN rollback) is in test_method_contract.py."""

import pytest
import torch

import editscope as es
from editscope.hooks import capture_input
from editscope.methods import HparamError, get_method
from editscope.models import tiny_model
from editscope.scoring import body_forward, encode_pairs, logits_from_hidden

pytestmark = pytest.mark.usefixtures("tmp_cache")

REQ = es.EditRequest("The capital of France is", "Rome", target_true="Paris")


def _prob(m, pair, layer=None, zero_at=None):
    """P(first answer token) with ``mlp_out``'s input at ``zero_at`` zeroed in ``layer`` (or untouched)."""
    seq = list(pair.prompt_ids + pair.cont_ids[:1])
    ids = torch.tensor([seq])
    mod = m.module("mlp_out", layer) if layer is not None else None

    def hook(_, args):
        x = args[0].clone()
        x[:, zero_at] = 0
        return (x, *args[1:])

    handle = mod.register_forward_pre_hook(hook) if mod is not None else None
    try:
        with torch.no_grad():
            h = body_forward(m, ids, None, torch.arange(len(seq))[None], use_cache=False).last_hidden_state
            return float(torch.softmax(logits_from_hidden(m, h[0, len(pair.prompt_ids) - 1]), -1)[pair.cont_ids[0]])
    finally:
        if handle is not None:
            handle.remove()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_attribution_is_complete_per_layer(arch):
    m = tiny_model(arch)
    kn = get_method("kn")
    pair = encode_pairs(m, [REQ.prompt], [REQ.continuation_true])[0]
    pair = type(pair)(pair.prompt_ids, pair.cont_ids[:1])
    hp = kn.resolve_hparams(m.arch, m.n_layers, {"steps": 400, "rows": 400})
    scores, activation = kn.attribution(m, pair, range(m.n_layers), hp)
    full = _prob(m, pair)
    col = len(pair.prompt_ids) - 1
    for layer in range(m.n_layers):
        drop = full - _prob(m, pair, layer, col)
        # a Riemann sum over 400 steps of the integrated gradient: sum of scores = P(a) - P(0)
        assert scores[layer].sum().item() == pytest.approx(drop, rel=0.05, abs=1e-5)
    with torch.no_grad(), capture_input(m.module("mlp_out", 0)) as seen:
        ids = torch.tensor([list(pair.prompt_ids + pair.cont_ids)])
        body_forward(m, ids, None, torch.arange(ids.shape[1])[None], use_cache=False)
    assert torch.allclose(activation[0], seen[0][0, col].float())


def test_the_edit_moves_exactly_the_selected_value_vectors_by_the_embedding_difference():
    m = tiny_model("llama")
    w0 = {layer: m.module("mlp_out", layer).weight.detach().clone() for layer in range(m.n_layers)}
    h = es.apply_edit(m, [REQ], "kn", max_neurons=3)
    assert h.info["neurons"] == 3 and sum(h.info["neurons_by_layer"].values()) == 3
    emb = m.module("lm_head").weight
    t = encode_pairs(m, [REQ.prompt], [REQ.continuation])[0].cont_ids
    a = encode_pairs(m, [REQ.prompt], [REQ.continuation_true])[0].cont_ids
    shift = 2.0 * (emb[list(t)].mean(0) - emb[list(a)].mean(0))
    moved = 0
    for layer, w in w0.items():
        diff = m.module("mlp_out", layer).weight.detach() - w  # [d, d_ff]
        cols = (diff.abs().sum(0) > 0).nonzero().flatten().tolist()
        assert len(cols) == h.info["neurons_by_layer"].get(layer, 0)
        for i in cols:  # +shift or -shift (the neuron's sign): |diff| = |shift| per column
            assert torch.allclose(diff[:, i].abs(), shift.detach().abs(), atol=1e-5)
        moved += len(cols)
    assert moved == 3
    assert h.info["target_loss_after"][0] < h.info["target_loss_before"][0]


def test_without_target_true_the_model_s_greedy_answer_is_attributed():
    m = tiny_model("llama")
    from editscope.scoring.decoding import greedy_continuations
    gen = greedy_continuations(m, [REQ.prompt], max_new_tokens=len(
        encode_pairs(m, [REQ.prompt], [REQ.continuation])[0].cont_ids), stop_at_eos=False)[0]
    h = es.apply_edit(m, [es.EditRequest(REQ.prompt, REQ.target_new)], "kn")
    assert h.info["answer"] == m.tokenizer.decode(list(gen.token_ids))


@pytest.mark.parametrize("bad, field", [({"layers": [99]}, "layers"), ({"steps": 1}, "steps"),
                                         ({"adaptive_threshold": 0.0}, "adaptive_threshold"),
                                         ({"max_neurons": 0}, "max_neurons")])
def test_bad_settings_are_refused_before_any_change(bad, field):
    m = tiny_model("llama")
    key = m.state_key()
    with pytest.raises(HparamError, match=field):
        es.apply_edit(m, [REQ], "kn", **bad)
    assert m.state_key() == key
