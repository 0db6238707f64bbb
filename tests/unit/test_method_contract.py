"""One contract for every registered edit method, on a tiny model of every supported architecture:
the edit lowers the target loss (not for controls, which aim at no target), changes only what it
declares (weights: its touched tensors; interventions: no weight) and changes the model's
state_key, undoes to the exact base state, saves and loads to the same state, refuses an unknown
hyperparameter before touching anything, and is rolled back when it leaves a NaN. A method
registered without an entry in CONTRACT fails the first test: new methods and plugins get the
contract. Per-family tests keep only what is specific to their family."""

import sys

import pytest
import torch

import editscope as es
from editscope.interventions import installed
from editscope.methods import HparamError, get_method, load_edit
from editscope.methods.base import METHODS
from editscope.models import TINY_MODEL_TYPES, tiny_model
from editscope.registry import load_plugins
from locate_settings import EASY
from test_mend import tiny_editor
from test_serac import tiny_classifier

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
    "adalora": ({"lr": 5e-2}, [REQ]),
    "locft-bf": ({"lr": 1e-2, "epochs": 10}, BATCH),
    "rome": ({"layer": 1, **EASY}, [REQ]),
    "memit": ({"layers": [0, 1], **EASY}, BATCH),
    "emmet": ({"layers": [0, 1], **EASY}, BATCH),
    "pmet": ({"layers": [0, 1], **EASY}, BATCH),
    # tiny Gemma keys leave no null space at the default 1e-2 (AlphaEdit then refuses): a wider one
    "alphaedit": ({"layers": [0, 1], "nullspace_threshold": 0.1, **EASY}, BATCH),
    "ultraedit": ({"lr": 0.1}, BATCH),
    # KN subtracts the embedding of the answer it attributes: given, not a random model's greedy
    # answer (tiny Qwen2 answers " R...", the target's own first token)
    "mend": ({"editor": "EDITOR"}, [REQ]),
    # a scope classifier trained here (test_serac.tiny_classifier); the random model reads the edit in
    # context no better than IKE does (guard room as for ike)
    "serac": ({"editor": "CLASSIFIER", "guard_tolerance": 10.0}, [REQ]),  # an editor trained here for a few steps (test_mend.tiny_editor)
    "kn": ({}, [es.EditRequest("The capital of France is", "Rome", subject="France", target_true="Paris")]),
    "grace": ({"layer": 1}, [REQ]),
    "defer": ({"layer": 1, "lr": 0.01}, [REQ]),
    "melo": ({"router": 0, "targets": [1], "lr": 0.05, "radius": 1.0}, [REQ]),
    "wise": ({"layer": 1, "n_templates": 2, "steps": 20}, [REQ]),
    # in-context, a prompt like its pool; a random model may even score the target lower with the
    # demonstrations in front (tiny GPT-J), so the guard gets room
    "ike": ({"k": 2, "pool": "POOL", "guard_tolerance": 5.0}, [es.EditRequest("2+2=", "5")]),
    "placebo": ({"match": "ft-m", "match_hparams": {"lr": 1e-1}, "draw": 0}, [REQ]),
    "identity": ({}, [REQ]),
}
CONTROLS = {"placebo", "identity"}
#: no loss clause on random tiny models: in-context editing (IKE, SERAC's counterfactual) needs a model that learns in context
#: (IKE's efficacy is checked on the default model in tests/integration/test_methods_default.py)
NO_TARGET_ON_TINY = CONTROLS | {"ike", "serac"}


def _weights(m):
    return {n: p.detach().clone() for n, p in m.hf.named_parameters()}


def _same(m, w0):
    return all(torch.equal(p, w0[n]) for n, p in m.hf.named_parameters())


def _poisoned_run(method):
    """The method's ``run``, then a NaN in what it changed: a touched weight or an intervention tensor."""
    real = type(method).run

    def run(self, model, reqs, hp):
        info = real(self, model, reqs, hp)
        names = self.touched(model, hp)
        if self.kind == "weights" and names:
            dict(model.hf.named_parameters())[names[0]].data.view(-1)[0] = float("nan")
        for iv in installed(model).values():
            t = next((t for t in iv.tensors().values() if t.is_floating_point()), None)
            if t is not None:
                t.view(-1)[0] = float("nan")
                break
        return info

    return run


def check_contract(method: str, hp: dict, reqs: list, arch: str, tmp_path, monkeypatch) -> None:
    """Assert the contract for ``method`` on a tiny ``arch`` model (AssertionError names the clause)."""
    m = tiny_model(arch)
    w0, key = _weights(m), m.state_key()
    with pytest.raises(HparamError, match="no_such_setting"):
        es.apply_edit(m, reqs, method, **hp, no_such_setting=1)
    assert m.state_key() == key and _same(m, w0), "a refused hyperparameter left a change"
    h = es.apply_edit(m, reqs, method, **hp)
    if method not in NO_TARGET_ON_TINY:
        assert sum(h.info["target_loss_after"]) < sum(h.info["target_loss_before"]), "the target loss did not fall"
    changed = {n for n, p in m.hf.named_parameters() if not torch.equal(p, w0[n])}
    if get_method(method).kind == "weights":
        assert changed <= set(h.names), f"changed undeclared tensors {sorted(changed - set(h.names))}"
    else:
        assert not changed and h.names == [], "an intervention changed weights"
    assert all(p.requires_grad for p in m.hf.parameters()), "training flags were not restored"
    edited = m.state_key()
    assert (edited != key) == (method != "identity"), "state_key does not follow the edit"
    h.save(tmp_path / "edit")
    h.undo()
    assert m.state_key() == key and _same(m, w0), "undo did not restore the base exactly"
    loaded = load_edit(m, tmp_path / "edit")
    assert m.state_key() == edited, "the saved edit loads to another state"
    loaded.undo()
    assert m.state_key() == key and _same(m, w0), "undo of the loaded edit did not restore the base"
    meth = get_method(method)
    if meth.kind != "input" and method != "identity":  # a prompt transform and the identity hold no numbers
        monkeypatch.setattr(type(meth), "run", _poisoned_run(meth))
        with pytest.raises(es.EditFailed, match="non-finite"):
            es.apply_edit(m, reqs, method, **hp)
        monkeypatch.undo()
        assert m.state_key() == key and _same(m, w0) and not installed(m), "a NaN edit was not rolled back"


def test_every_registered_method_is_under_the_contract():
    assert set(METHODS) == set(CONTRACT), "give each registered method an entry in CONTRACT"


@pytest.mark.parametrize("arch", TINY_MODEL_TYPES)
@pytest.mark.parametrize("method", sorted(CONTRACT))
def test_the_method_contract(method, arch, pool, tmp_path, monkeypatch):
    hp, reqs = CONTRACT[method]
    resolve = {"POOL": lambda: pool, "EDITOR": lambda: str(tiny_editor(arch, tmp_path)),
               "CLASSIFIER": lambda: str(tiny_classifier(tmp_path))}
    hp = {k: (resolve[v]() if isinstance(v, str) and v in resolve else v) for k, v in hp.items()}
    check_contract(method, hp, reqs, arch, tmp_path, monkeypatch)


BROKEN_PLUGIN = '''
from editscope.methods.base import EditMethod, Hparams, register_method


class _NoHp(Hparams):
    lr: float = 0.5


@register_method
class Leaky(EditMethod):
    """Declares one MLP matrix but also writes the embeddings: its undo cannot restore them."""
    name = "leaky-plugin"
    family = "test"
    summary = "a broken plugin method"
    Hparams = _NoHp

    def touched(self, model, hp):
        return [model.arch.name("mlp_out", 1) + ".weight"]

    def run(self, model, requests, hp):
        model.module("mlp_out", 1).weight.data.add_(hp.lr)
        model.hf.get_input_embeddings().weight.data.add_(hp.lr)
'''


def test_the_contract_catches_a_broken_plugin_method(tmp_path, monkeypatch):
    (tmp_path / "leaky_plugin.py").write_text(BROKEN_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        load_plugins(["leaky_plugin"], entry_points=False)  # as a study's `plugins: [leaky_plugin]` does
        assert "leaky-plugin" in METHODS and "leaky-plugin" not in CONTRACT
        with pytest.raises(AssertionError, match="changed undeclared tensors"):
            check_contract("leaky-plugin", {}, [REQ], "llama", tmp_path, monkeypatch)
    finally:
        METHODS.unregister("leaky-plugin")
        sys.modules.pop("leaky_plugin", None)
