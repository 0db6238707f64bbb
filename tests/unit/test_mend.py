"""MEND on tiny models, with an editor trained here for a few steps on a synthetic CounterFact-form
file: the gradient factors are the weight gradient's rank-one terms, the editor trains, caches and
reloads bit-identically, a training killed mid-way resumes to the uninterrupted editor, and the bad
inputs are refused (training/evaluation overlap, another model's editor, an edit it was trained on,
no editor). The registry-wide contract (target, undo, save/load, NaN rollback) is in
test_method_contract.py with an editor from :func:`tiny_editor`."""

import json

import pytest
import torch

import editscope as es
from editscope.editors import store
from editscope.editors.mend import default_layers, gradient_factors, inner_weights, weight_view
from editscope.editors.store import EditorError, MendSpec, RecordRange, load_editor, train_editor
from editscope.methods.training import continuation_nll, trainable, training_batch
from editscope.models import tiny_model
from editscope.scoring import encode_pairs

pytestmark = pytest.mark.usefixtures("tmp_cache")

NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi"]
CITIES = ["Paris", "Rome", "Berlin", "Madrid", "Vienna", "Oslo", "Lima", "Cairo"]


def synthetic_counterfact(path, n=40):
    recs = []
    for i in range(n):
        name, true, new = f"{NAMES[i % 8]} {i}", CITIES[i % 8], CITIES[(i * 3 + 1) % 8]
        recs.append({"case_id": i, "prompt": f"{name} was born in", "subject": name, "target_new": new,
                     "ground_truth": true, "rephrase_prompt": f"The birthplace of {name} is",
                     "locality_prompt": f"{NAMES[(i + 3) % 8]} lives in", "locality_ground_truth": CITIES[(i + 5) % 8]})
    path.write_text(json.dumps(recs))
    return str(path)


def tiny_spec(src, model="tiny", **kw):
    return MendSpec(model=model, train=(RecordRange(dataset="counterfact", source=src, offset=10),),
                    held_out=(RecordRange(dataset="counterfact", source=src, limit=10),),
                    **{"rank": 32, "steps": 8, "batch_size": 3, "lr": 1e-3, "checkpoint_every": 2, **kw})


def tiny_editor(arch, tmp_path):
    """A MEND editor trained for a few steps for ``tiny_model(arch)``; returns its folder."""
    src = synthetic_counterfact(tmp_path / "cf.json")
    return train_editor(tiny_spec(src, model=f"tiny-{arch}"), model=tiny_model(arch), progress=False)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_gradient_factors_are_the_weight_gradient(arch):
    m = tiny_model(arch)
    names = inner_weights(m, [m.n_layers - 1])
    pairs = encode_pairs(m, ["The capital of France is", "2+2="], [" Rome", "5"])
    factors = gradient_factors(m, pairs, names)
    params = dict(m.hf.named_parameters())
    with trainable(m, [params[n] for n in names]):
        continuation_nll(m, training_batch(m, pairs)).mean().backward()
        for n in names:
            grad = params[n].grad.T if m.arch.conv1d else params[n].grad  # [out, in]
            u, d = factors[n]
            assert torch.allclose(d.T @ u, grad, atol=1e-6), n
            assert weight_view(m, n).shape == grad.shape


def test_an_editor_trains_caches_reloads_and_edits(tmp_path):
    m = tiny_model("llama")
    src = synthetic_counterfact(tmp_path / "cf.json")
    spec = tiny_spec(src)
    folder = train_editor(spec, model=m, progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["train_records"] == 30 and len(manifest["losses"]) == 8
    assert manifest["model_fingerprint"] == m.base_fingerprint and manifest["train_seconds"] > 0
    assert manifest["weights"] == inner_weights(m, default_layers(m.n_layers))
    saved = load_editor(m, folder).editor.tensors()
    assert folder == train_editor(spec, model=m, progress=False)  # cached: not trained again
    again = load_editor(m, spec).editor.tensors()
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)
    h = es.apply_edit(m, [es.EditRequest("Zed was born in", "Tokyo")], "mend", editor=str(folder))
    assert h.info["target_loss_after"][0] < h.info["target_loss_before"][0]
    assert set(h.names) == set(manifest["weights"])
    # the default editor for a model is the only one trained for it
    h.undo()
    assert es.apply_edit(m, [es.EditRequest("Zed was born in", "Tokyo")], "mend").info["editor"] == str(folder)


def test_an_interrupted_training_resumes_to_the_same_editor(tmp_path, monkeypatch):
    src = synthetic_counterfact(tmp_path / "cf.json")
    whole = load_editor(tiny_model("llama"), train_editor(tiny_spec(src), model=tiny_model("llama"),
                                                          progress=False)).editor.tensors()
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "other"))
    real, calls = store.save_checkpoint, []

    def stop_after_two(*a, **kw):
        real(*a, **kw)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(store, "save_checkpoint", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_editor(tiny_spec(src), model=tiny_model("llama"), progress=False)
    folder = store.folder_of(tiny_spec(src))
    assert not folder.exists()  # never a half-written editor in the cache
    monkeypatch.setattr(store, "save_checkpoint", real)
    resumed = load_editor(tiny_model("llama"), train_editor(tiny_spec(src), model=tiny_model("llama"),
                                                            progress=False)).editor.tensors()
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_bad_inputs_are_refused(tmp_path):
    src = synthetic_counterfact(tmp_path / "cf.json")
    m = tiny_model("llama")
    with pytest.raises(EditorError, match="no trained mend editor"):
        es.apply_edit(m, [es.EditRequest("Zed was born in", "Tokyo")], "mend")
    overlap = tiny_spec(src).model_copy(update={"train": (RecordRange(dataset="counterfact", source=src, offset=5),)})
    with pytest.raises(EditorError, match="overlap the held-out .* in 5 edits"):
        train_editor(overlap, model=m, progress=False)
    folder = train_editor(tiny_spec(src), model=m, progress=False)
    with pytest.raises(EditorError, match="trained for tiny"):
        load_editor(tiny_model("gpt2"), folder)
    trained = es.EditRequest("Grace 14 was born in", CITIES[(14 * 3 + 1) % 8])
    key = m.state_key()
    with pytest.raises(EditorError, match="was trained on the edit"):
        es.apply_edit(m, [trained], "mend", editor=str(folder))
    assert m.state_key() == key
