"""One contract for every registered edit method (tiny Llama): the edit lowers the target loss (not
for controls, which aim at no target), changes only what it declares (weights: its touched tensors;
interventions: no weight), undoes to the exact base state, and saves and loads to the same state.
A method registered without an entry here fails the first test: new methods get the contract."""

import pytest
import torch

import editscope as es
from editscope.methods import get_method, load_edit
from editscope.methods.base import METHODS
from editscope.models import tiny_model
from locate_settings import EASY

pytestmark = pytest.mark.usefixtures("tmp_cache")

REQ = es.EditRequest("The capital of France is", "Rome", subject="France")
BATCH = [REQ, es.EditRequest("The sky is", "green and wet", subject="sky")]
#: per method: (fast hyperparameters, requests); "POOL" is the IKE demonstration pool fixture
CONTRACT = {
    "ft": ({"layers": [1], "lr": 1e-2}, [REQ]),
    "ft-constrained": ({"layers": [1], "lr": 1e-2, "anchors": [("3+3=", "6"), ("The sky is", "blue")]}, [REQ]),
    "ft-l": ({"lr": 1e-1, "linf": 0.5}, [REQ]),
    "ft-m": ({"lr": 1e-1}, [REQ]),
    "lora": ({"lr": 5e-2}, [REQ]),
    "locft-bf": ({"lr": 1e-2, "epochs": 10}, BATCH),
    "rome": ({"layer": 1, **EASY}, [REQ]),
    "memit": ({"layers": [0, 1], **EASY}, BATCH),
    "emmet": ({"layers": [0, 1], **EASY}, BATCH),
    "alphaedit": ({"layers": [0, 1], **EASY}, BATCH),
    "ultraedit": ({"lr": 0.1}, BATCH),
    "grace": ({"layer": 1}, [REQ]),
    "wise": ({"layer": 1, "n_templates": 2, "steps": 20}, [REQ]),
    "ike": ({"k": 2, "pool": "POOL"}, [es.EditRequest("2+2=", "5")]),  # in-context: a prompt like its pool
    "placebo": ({"match": "ft-m", "match_hparams": {"lr": 1e-1}, "draw": 0}, [REQ]),
    "identity": ({}, [REQ]),
}
CONTROLS = {"placebo", "identity"}


def test_every_registered_method_is_under_the_contract():
    assert set(METHODS) == set(CONTRACT), "give each registered method an entry in CONTRACT"


@pytest.mark.parametrize("method", sorted(CONTRACT))
def test_the_method_contract(method, pool, tmp_path):
    hp, reqs = CONTRACT[method]
    hp = {k: (pool if v == "POOL" else v) for k, v in hp.items()}
    m = tiny_model("llama")
    w0 = {n: p.detach().clone() for n, p in m.hf.named_parameters()}
    key = m.state_key()
    h = es.apply_edit(m, reqs, method, **hp)
    if method not in CONTROLS:
        assert sum(h.info["target_loss_after"]) < sum(h.info["target_loss_before"])
    changed = {n for n, p in m.hf.named_parameters() if not torch.equal(p, w0[n])}
    if get_method(method).kind == "weights":
        assert changed <= set(h.names)
    else:
        assert not changed and h.names == []
    edited = m.state_key()
    h.save(tmp_path / "edit")
    h.undo()
    assert m.state_key() == key and all(torch.equal(p, w0[n]) for n, p in m.hf.named_parameters())
    loaded = load_edit(m, tmp_path / "edit")
    assert m.state_key() == edited
    loaded.undo()
    assert m.state_key() == key
