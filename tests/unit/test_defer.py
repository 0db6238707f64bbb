"""DEFER on a tiny model: the hard rule keeps the base output exactly wherever the gate stays below
the threshold, the edited prompt defers, and a later edit trains the same adaptor further (the
baseline's forgetting). The contract is in test_method_contract.py."""

import pytest
import torch

import editscope as es
from editscope.hooks import capture_input, capture_output
from editscope.interventions import installed
from editscope.models import tiny_model

pytestmark = pytest.mark.usefixtures("tmp_cache")

REQ = es.EditRequest("The capital of France is", "Rome")


def _adaptor(m):
    return next(iv for iv in installed(m).values() if iv.type_name == "defer")


def test_closed_gates_keep_the_base_output_and_the_edited_prompt_defers():
    m = tiny_model("llama")
    mod = m.module("mlp_out", 1)
    texts = ["2+2=", "A quick brown fox jumps", REQ.prompt]
    ids = [torch.tensor([m.tokenizer(t)["input_ids"]]) for t in texts]
    with torch.no_grad(), capture_output(mod) as base:
        for x in ids:
            m.hf(x)
    es.apply_edit(m, [REQ], "defer", layer=1, lr=0.01)
    ad = _adaptor(m)
    with torch.no_grad(), capture_output(mod) as after, capture_input(mod) as ins:
        for x in ids:
            m.hf(x)
    for i, (b, a, x) in enumerate(zip(base, after, ins)):
        gate = torch.sigmoid(x.float() @ ad.tensors()["w"] + ad.tensors()["b"])[0]
        closed = gate < 0.5
        if i < 2:  # the unrelated prompts: some positions keep their gate closed
            assert closed.any()
        assert torch.equal(a[0][closed], b[0][closed])  # exactly the base output where the gate is closed
    gate_edit = torch.sigmoid(ins[-1].float() @ ad.tensors()["w"] + ad.tensors()["b"])[0]
    assert gate_edit[-1] >= 0.5  # the edited prompt's last position defers


def test_a_later_edit_trains_the_same_adaptor():
    m = tiny_model("llama")
    es.apply_edit(m, [REQ], "defer", layer=1, lr=0.01)
    first = {k: v.clone() for k, v in _adaptor(m).tensors().items()}
    h = es.apply_edit(m, [es.EditRequest("The sky is", "green")], "defer", layer=1, lr=0.01)
    assert len(installed(m)) == 1 and not torch.equal(_adaptor(m).tensors()["V"], first["V"])
    h.undo()
    assert all(torch.equal(_adaptor(m).tensors()[k], first[k]) for k in first)
