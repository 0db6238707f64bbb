"""`editscope methods`, `editscope edit` and `editscope eval --edit` on a tiny model saved to disk."""

import json

import pytest
from typer.testing import CliRunner

from editscope.cli import app
from editscope.models import tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    m = tiny_model("llama")
    m.hf.save_pretrained(d, safe_serialization=True)
    m.tokenizer.save_pretrained(d)
    return d


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))


def test_methods_lists_every_method_with_resolved_defaults():
    out = runner.invoke(app, ["methods", "--arch", "gpt2", "--layers", "12"], terminal_width=400)
    assert out.exit_code == 0, out.output
    for name in ("ft-constrained", "ft-l", "ft-m", "lora"):
        assert name in out.output
    assert "layer=4" in out.output  # ft-l/ft-m default for a 12-block model
    bad = runner.invoke(app, ["methods", "--arch", "bert"])
    assert bad.exit_code == 2 and "unknown architecture" in bad.output


def test_edit_saves_and_eval_with_the_saved_edit_reports_changes(model_dir, tmp_path):
    out = runner.invoke(app, ["edit", "--model", str(model_dir), "--method", "ft-m", "--prompt", "2+2=",
                              "--target", "5", "--hparam", "lr=0.2", "--hparam", "steps=40",
                              "--save", str(tmp_path / "e")], terminal_width=300)
    assert out.exit_code == 0, out.output
    assert "before" in out.output and "after" in out.output and "saved to" in out.output
    assert (tmp_path / "e" / "manifest.json").is_file()
    res = runner.invoke(app, ["eval", "--model", str(model_dir), "-s", "facts", "--edit", str(tmp_path / "e"),
                              "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["fingerprint"] != data["base_fingerprint"] and data["edit"] == str(tmp_path / "e")
    assert data["summary"]["all"]["unchanged"]["n"] == data["n_probes"]


@pytest.mark.parametrize("args, match", [
    (["--method", "rome2"], "unknown edit method"),
    (["--method", "ft", "--hparam", "lrr=1"], "Did you mean 'lr'"),
    (["--method", "ft", "--hparam", "lr"], "NAME=VALUE"),
])
def test_edit_bad_input_is_a_clear_error(model_dir, args, match):
    out = runner.invoke(app, ["edit", "--model", str(model_dir), "--prompt", "2+2=", "--target", "5", *args],
                        terminal_width=300)
    assert out.exit_code == 2 and match in out.output, out.output
