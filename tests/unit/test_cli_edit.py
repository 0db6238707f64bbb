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


pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


def test_methods_lists_every_method_with_resolved_defaults():
    out = runner.invoke(app, ["methods", "--arch", "gpt2", "--layers", "12"], terminal_width=400)
    assert out.exit_code == 0, out.output
    for name in ("ft-constrained", "ft-l", "ft-m", "lora"):
        assert name in out.output
    assert "layer=4" in out.output  # ft-l/ft-m default for a 12-block model
    assert "easyedit" in out.output and "mom2_adjustment=False" in out.output  # the presets
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


def test_a_grace_edit_saves_and_evaluates_as_an_intervention(model_dir, tmp_path):
    out = runner.invoke(app, ["edit", "--model", str(model_dir), "--method", "grace", "--prompt", "2+2=",
                              "--target", "5", "--hparam", "layer=1", "--save", str(tmp_path / "g")], terminal_width=300)
    assert out.exit_code == 0, out.output
    man = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert man["kind"] == "module" and man["tensors"] == {} and list(man["interventions"]) == [
        "grace@model.layers.1.mlp.down_proj"]
    res = runner.invoke(app, ["eval", "--model", str(model_dir), "-s", "facts", "--edit", str(tmp_path / "g"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["fingerprint"] != data["base_fingerprint"], "the intervened model is not scored as the base"
    methods = runner.invoke(app, ["methods"], terminal_width=400)
    assert all(w in methods.output for w in ("grace", "wise", "ike", "module", "input", "sequential"))


@pytest.mark.parametrize("args, match", [
    (["--method", "grace", "--hparam", "eps=0"], "eps"),
    (["--method", "rome2"], "unknown edit method"),
    (["--method", "ft", "--hparam", "lrr=1"], "Did you mean 'lr'"),
    (["--method", "ft", "--hparam", "lr"], "NAME=VALUE"),
    (["--method", "rome", "--preset", "easyedt"], "Did you mean 'easyedit'"),
    (["--method", "grace", "--preset", "easyedit"], "no settings for method 'grace'"),
])
def test_edit_bad_input_is_a_clear_error(model_dir, args, match):
    out = runner.invoke(app, ["edit", "--model", str(model_dir), "--prompt", "2+2=", "--target", "5", *args],
                        terminal_width=300)
    assert out.exit_code == 2 and match in out.output, out.output


def test_wide_summary_splits_into_whole_tables_that_fit_the_terminal():
    import io

    from rich.console import Console
    from rich.table import Table

    from editscope.cli import column_groups

    header = ["method", "target", "paraphrase", "near", "far", "general", "says target", "ppl", "lambada", "piqa", "sst2"]
    rows = [[("ft-last4-mlp", False)] + [("0.968", False)] * 10, [("base", False)] + [("91.4", False)] * 10]
    groups = column_groups(header, rows, 80)
    assert [i for g in groups for i in g] == list(range(1, 11)) and len(groups) == 2
    for g in groups:  # each part renders within 80 columns with no cell cut short
        t = Table()
        for i in [0, *g]:
            t.add_column(header[i], no_wrap=i == 0)
        for r in rows:
            t.add_row(*[r[i][0] for i in [0, *g]])
        con = Console(width=80, record=True, file=io.StringIO())
        con.print(t)
        text = con.export_text()
        assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    assert column_groups(header[:4], rows, 200) == [[1, 2, 3]]
