"""MELO on tiny models: away from its keys the model is the base model exactly, the edited prompt routes
to its own adapter block, a second edit trains only a new block (the first is left as it was) and
undoes cleanly, routing per position keeps a full pass and KV-cached decoding equal, and bad
settings are refused. The contract (target, undo, save/load, NaN rollback) is in
test_method_contract.py."""

import pytest
import torch

import editscope as es
from editscope.interventions import installed
from editscope.methods import HparamError
from editscope.models import tiny_model
from editscope.scoring import greedy_continuations, next_token_logprobs

pytestmark = pytest.mark.usefixtures("tmp_cache")

HP = {"router": 0, "targets": [1], "lr": 0.05, "radius": 1.0}
REQ = es.EditRequest("The capital of France is", "Rome")


def _adapters(m):
    return next(iv for iv in installed(m).values() if iv.type_name == "melo")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_away_from_the_keys_the_model_is_the_base_and_the_prompt_routes_to_its_block(arch):
    m = tiny_model(arch)
    others = ["2+2=", "A quick brown fox"]
    base = next_token_logprobs(m, others)
    h = es.apply_edit(m, [REQ], "melo", **HP)
    assert h.info["block"] == 0 and h.info["clusters"] == 1
    assert torch.equal(next_token_logprobs(m, others), base)
    ad = _adapters(m)
    ids = torch.tensor([m.tokenizer(REQ.prompt)["input_ids"]])
    from editscope.hooks import capture_output

    with torch.no_grad(), capture_output(m.module("mlp_in[0]", 0)) as outs:
        m.hf(ids)
    assert ad.route(outs[0][0])[-1] == 0  # the edited prompt's last token routes to its block
    h.undo()
    assert not installed(m)


def test_a_second_edit_trains_a_new_block_only_and_undoes():
    m = tiny_model("llama")
    es.apply_edit(m, [REQ], "melo", **HP)
    first = {k: v.clone() for k, v in _adapters(m).tensors().items()}
    h2 = es.apply_edit(m, [es.EditRequest("The sky is", "green")], "melo", **HP)
    t = _adapters(m).tensors()
    assert h2.info["block"] == 1 and t["A"].shape[1] == 2 and t["keys"].shape[0] == 2
    assert torch.equal(t["A"][:, 0], first["A"][:, 0]) and torch.equal(t["B"][:, 0], first["B"][:, 0])
    assert t["B"][:, 1].abs().sum() > 0  # the new block trained
    h2.undo()
    assert all(torch.equal(_adapters(m).tensors()[k], first[k]) for k in first)


def test_per_position_routing_keeps_a_full_pass_and_cached_decoding_equal():
    m = tiny_model("llama")
    es.apply_edit(m, [REQ], "melo", **HP)
    gen = greedy_continuations(m, [REQ.prompt], max_new_tokens=4, stop_at_eos=False)[0]
    ids = m.tokenizer(REQ.prompt)["input_ids"]
    full = []
    for _ in range(4):  # token by token, each a full pass over everything so far
        with torch.no_grad():
            nxt = int(m.hf(torch.tensor([ids + full])).logits[0, -1].argmax())
        full.append(nxt)
    assert list(gen.token_ids) == full


@pytest.mark.parametrize("bad, match", [({"router": 1, "targets": [1]}, "after the router"),
                                         ({"router": 1, "targets": [5]}, "inside the model"),
                                         ({"rank": 0}, "rank")])
def test_bad_settings_are_refused(bad, match):
    m = tiny_model("llama")
    with pytest.raises(HparamError, match=match):
        es.apply_edit(m, [REQ], "melo", **{**HP, **bad})
    assert not installed(m)


def test_a_stacked_edit_with_other_settings_is_refused():
    m = tiny_model("llama", num_hidden_layers=3)
    es.apply_edit(m, [REQ], "melo", **HP)
    with pytest.raises(HparamError, match="edit with the same settings"):
        es.apply_edit(m, [es.EditRequest("The sky is", "green")], "melo", **{**HP, "targets": [1, 2]})
