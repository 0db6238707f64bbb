"""SERAC with a scope classifier trained here for a few steps on a synthetic CounterFact-form file: the
classifier learns the scope (paraphrases in, neighbours and other records out), prompts out of
scope are read exactly as the base model reads them, a prompt in scope reads the edit in context,
edits stack and undo, and the bad inputs are refused (an edit the classifier was trained on, a
folder that is not a classifier, mixing classifiers). The contract is in test_method_contract.py."""

import json

import pytest
import torch
from safetensors.torch import load_file

import editscope as es
from editscope.editors.store import EditorError, RecordRange, SeracSpec, train_editor
from editscope.interventions import installed, transform_prompt
from editscope.models import tiny_model
from editscope.scoring import next_token_logprobs
from test_mend import CITIES, synthetic_counterfact

pytestmark = pytest.mark.usefixtures("tmp_cache")

_TRAINED: dict[str, str] = {}


def tiny_classifier(tmp_path) -> str:
    """A scope classifier trained once per test session (it reads text only: every model shares it)."""
    if "folder" not in _TRAINED:
        src = synthetic_counterfact(tmp_path / "serac-cf.json")
        spec = SeracSpec(model="any", train=(RecordRange(dataset="counterfact", source=src, offset=10),),
                         held_out=(RecordRange(dataset="counterfact", source=src, limit=10),),
                         steps=12, batch_size=8, lr=1e-4, checkpoint_every=6)
        _TRAINED["folder"] = str(train_editor(spec, progress=False))
    return _TRAINED["folder"]


def _memory(m):
    return next(iv for iv in installed(m).values() if iv.type_name == "serac")


def test_the_classifier_learns_the_scope(tmp_path):
    folder = tiny_classifier(tmp_path)
    manifest = json.loads(open(f"{folder}/manifest.json").read())
    assert manifest["kind"] == "serac" and manifest["model_fingerprint"] is None and manifest["train_records"] == 30
    assert manifest["loss_columns"] == ["step", "loss", "accuracy"]
    assert manifest["losses"][-1][1] < manifest["losses"][0][1]
    m = tiny_model("llama")
    es.apply_edit(m, [es.EditRequest("Zed 99 was born in", "Tokyo")], "serac", editor=folder, guard_tolerance=10.0)
    iv = _memory(m)
    assert iv.scope("Zed 99 was born in")[0] == 0
    assert iv.scope("The birthplace of Zed 99 is")[0] == 0  # a paraphrase: in scope
    assert iv.scope("2+2=")[0] is None and iv.scope("Bob 3 lives in")[0] is None


def test_out_of_scope_is_the_base_model_exactly_and_in_scope_reads_the_edit(tmp_path):
    folder = tiny_classifier(tmp_path)
    m = tiny_model("gpt2")
    outside = ["2+2=", "Bob 3 lives in"]
    base = next_token_logprobs(m, outside)
    h = es.apply_edit(m, [es.EditRequest("Zed 99 was born in", "Tokyo")], "serac", editor=folder, guard_tolerance=10.0)
    assert torch.equal(next_token_logprobs(m, outside), base)
    assert transform_prompt(m, "The birthplace of Zed 99 is") == (
        "New Fact: Zed 99 was born in Tokyo\nPrompt: The birthplace of Zed 99 is")
    # edits stack: the memory grows, undo takes the last edit's facts away
    h2 = es.apply_edit(m, [es.EditRequest("Yan 98 was born in", "Lima")], "serac", editor=folder, guard_tolerance=10.0)
    assert _memory(m).config["facts"] == ["Zed 99 was born in Tokyo", "Yan 98 was born in Lima"]
    assert _memory(m).tensors()["keys"].shape[0] == 2
    h2.undo()
    assert _memory(m).config["facts"] == ["Zed 99 was born in Tokyo"]
    h.undo()
    assert not installed(m) and torch.equal(next_token_logprobs(m, outside), base)


def test_bad_inputs_are_refused(tmp_path):
    folder = tiny_classifier(tmp_path)
    m = tiny_model("llama")
    key = m.state_key()
    with pytest.raises(EditorError, match="was trained on the edit"):  # record 14 is in the training split
        es.apply_edit(m, [es.EditRequest("Grace 14 was born in", CITIES[(14 * 3 + 1) % 8])], "serac", editor=folder, guard_tolerance=10.0)
    with pytest.raises(EditorError, match="not a trained editor"):
        es.apply_edit(m, [es.EditRequest("Zed 99 was born in", "Tokyo")], "serac", editor=str(tmp_path))
    assert m.state_key() == key
    with pytest.raises(EditorError, match="no trained serac editor"):
        es.apply_edit(m, [es.EditRequest("Zed 99 was born in", "Tokyo")], "serac")


def test_an_interrupted_training_resumes_to_the_same_classifier(tmp_path, monkeypatch):
    from editscope.editors import store

    src = synthetic_counterfact(tmp_path / "cf.json", n=20)
    spec = SeracSpec(model="any", train=(RecordRange(dataset="counterfact", source=src, offset=10),),
                     held_out=(RecordRange(dataset="counterfact", source=src, limit=10),),
                     steps=4, batch_size=4, lr=1e-4, checkpoint_every=2)
    whole = load_file(str(train_editor(spec, progress=False) / "editor.safetensors"))
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "other"))
    real = store.save_checkpoint

    def stop_after_first(*a, **kw):
        real(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "save_checkpoint", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        train_editor(spec, progress=False)
    monkeypatch.setattr(store, "save_checkpoint", real)
    resumed = load_file(str(train_editor(spec, progress=False) / "editor.safetensors"))
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)


def test_the_cli_trains_a_classifier_and_refuses_bad_settings(tmp_path):
    from typer.testing import CliRunner

    from editscope.cli import app

    src = synthetic_counterfact(tmp_path / "cf.json", n=16)
    train = json.dumps([{"dataset": "counterfact", "source": src, "offset": 8}])
    held = json.dumps([{"dataset": "counterfact", "source": src, "limit": 8}])
    args = ["train-editor", "serac", "--steps", "2", "--set", "batch_size=4", "--set", f"train={train}",
            "--set", f"held_out={held}"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "trained on 8 records" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["train-editor", "serac", "--set", "bacth_size=4"])
    assert r.exit_code != 0 and "bacth_size" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["train-editor", "rome"])
    assert r.exit_code != 0 and "use: mend, serac" in " ".join(r.output.split())
