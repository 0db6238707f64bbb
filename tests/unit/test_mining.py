"""editscope mine on a tiny model: resumable, a threshold splits known cases, provenance, bad input."""

import json

import pytest

from editscope.mining import mine
from editscope.runner.store import FILENAME, ResultsStore
from editscope.probes.datasets import load_counterfact

HP = {"lr": 0.05, "steps": 3}  # ft-m: a few steps, enough to move perplexity differently per edit


pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


def _unit_ppl(store):
    s = ResultsStore(store / FILENAME)
    try:
        return {x["unit"]: x["value"] for x in s.scalars() if x["name"] == "ppl:me_ppl_50" and x["method"] != "base"}
    finally:
        s.close()


def test_a_threshold_splits_the_cases_and_the_file_loads_with_provenance(tmp_path, capsys):
    out = tmp_path / "hard.json"
    first = mine("counterfact", "ft-m", out, model="tiny:llama", limit=4, hparams=HP, threshold=1e12, progress=False)
    assert first.kept == [] and first.n_cases == 4 and json.loads(out.read_text()) == []
    ppl = _unit_ppl(first.store)
    assert len(ppl) == 4 and len(set(ppl.values())) == 4
    cut = sorted(ppl.values())[2]  # the two highest reach it
    again = mine("counterfact", "ft-m", out, model="tiny:llama", limit=4, hparams=HP, threshold=cut, force=True,
                 progress=False)
    assert _unit_ppl(again.store) == ppl  # resumed from the store, nothing edited twice
    assert sorted(r["mined"]["unit"] for r in again.kept) == sorted(u for u, v in ppl.items() if v >= cut)
    raw = {r["case_id"]: r for r in json.loads(open(load_counterfact(limit=4).report.source).read())[:4]}
    for rec in again.kept:
        assert {k: v for k, v in rec.items() if k != "mined"} == raw[rec["case_id"]]  # the record as it was
        assert rec["mined"]["method"] == "ft-m" and rec["mined"]["threshold"] == cut and rec["mined"]["ppl"] >= cut
    loaded = load_counterfact(out)
    assert len(loaded) == 2 and all("mined" in c.meta for c in loaded)
    # a study of the mined file on another model is warned
    from editscope.runner.config import parse_config
    from editscope.runner.execute import run_study

    for rec in again.kept:
        rec["mined"]["model_fingerprint"] = "0" * 32
    other = tmp_path / "other.json"
    other.write_text(json.dumps(again.kept))
    run_study(parse_config({"name": "m", "model": "tiny:llama", "methods": [{"method": "ft-m", "hparams": HP}],
                            "edits": [{"dataset": "counterfact", "source": str(other), "case_probes": False}],
                            "perplexity": {"corpus": "me_ppl_50", "limit": 2}}),
              tmp_path / "run", progress=False)
    assert "mined on a model with fingerprint 000000" in capsys.readouterr().err


def test_ratio_keeps_edits_that_double_perplexity(tmp_path):
    res = mine("counterfact", "ft-m", tmp_path / "r.json", model="tiny:llama", limit=2, hparams=HP, ratio=1.0000001,
               threshold=1e12, progress=False)
    ppl = _unit_ppl(res.store)
    assert len(res.kept) == sum(v >= 1.0000001 * res.base_ppl for v in ppl.values())


def test_top_keeps_the_highest_perplexity_edits_in_order(tmp_path):
    res = mine("counterfact", "ft-m", tmp_path / "t.json", model="tiny:llama", limit=4, hparams=HP, threshold=1e12,
               top=2, progress=False)
    ppl = _unit_ppl(res.store)
    ranked = sorted(ppl, key=lambda u: -ppl[u])
    assert [r["mined"]["unit"] for r in res.kept] == ranked[:2]
    assert [(r["mined"]["rank"], r["mined"]["of"], r["mined"]["top"]) for r in res.kept] == [(1, 4, 2), (2, 4, 2)]
    assert [r["mined"]["unit"] for r in json.loads((tmp_path / "t.json").read_text())] == ranked[:2]
    # a preset is recorded in the study as a YAML study's `preset:` key is, and in the provenance
    pre = mine("counterfact", "ft-m", tmp_path / "p.json", model="tiny:llama", limit=1, hparams=HP, preset="easyedit",
               top=1, progress=False)
    s = ResultsStore(pre.store / FILENAME)
    try:
        stored = s.get_meta("config")
    finally:
        s.close()
    assert stored["methods"][0]["preset"] == "easyedit" and stored["methods"][0]["hparams"]["steps"] == 3
    assert pre.kept[0]["mined"]["preset"] == "easyedit" and pre.kept[0]["mined"]["hparams"]["lr"] == 0.05
    with pytest.raises(Exception, match="top=0"):
        mine("counterfact", "ft-m", tmp_path / "u.json", model="tiny:llama", limit=4, hparams=HP, top=0, progress=False)


@pytest.mark.parametrize("kw, error, match", [
    ({"threshold": 0}, ValueError, "threshold"),
    ({"ratio": 0.5}, ValueError, "ratio"),
    ({"dataset": "wiki"}, Exception, "mine one of"),
])
def test_bad_input_is_refused_before_any_edit(tmp_path, kw, error, match):
    args = {"dataset": "counterfact", **kw}
    with pytest.raises(error, match=match):
        mine(args.pop("dataset"), "ft-m", tmp_path / "x.json", model="tiny:llama", limit=1, progress=False, **args)
    assert not (tmp_path / "x.json.mining").exists()


def test_an_existing_output_needs_force_and_records_without_fields_are_named(tmp_path):
    out = tmp_path / "x.json"
    out.write_text("[]")
    with pytest.raises(FileExistsError, match="--force"):
        mine("counterfact", "ft-m", out, model="tiny:llama", limit=1, progress=False)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"case_id": 1, "prompt": "x"}]))
    with pytest.raises(Exception, match="no records loaded|no record"):
        mine("counterfact", "ft-m", tmp_path / "y.json", model="tiny:llama", source=str(bad), progress=False)


def test_the_mine_command_writes_the_file_and_refuses_bad_input(tmp_path):
    from typer.testing import CliRunner

    from editscope.cli import app

    runner = CliRunner()
    out = tmp_path / "hard.json"
    args = ["mine", "counterfact", "--out", str(out), "--method", "ft-m", "--model", "tiny:llama", "--limit", "2",
            "--hparam", "lr=0.05", "--hparam", "steps=3", "--ratio", "1.0000001", "--threshold", "1e12"]
    got = runner.invoke(app, args, terminal_width=200)
    assert got.exit_code == 0, got.output
    assert "of 2 edits kept" in got.output and out.exists()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output
    bad = runner.invoke(app, [*args[:-4], "--threshold", "-1", "--force"])
    assert bad.exit_code == 2 and "threshold" in bad.output
    typo = runner.invoke(app, ["mine", "counterfact", "--out", str(tmp_path / "z.json"), "--method", "rme"])
    assert typo.exit_code == 2 and "rome" in typo.output


@pytest.mark.parametrize("example, preset", [("butterfly_mine.yaml", None), ("butterfly_mine_rome_code.yaml", "rome-paper")])
def test_the_example_mining_studies_are_the_studies_mine_runs(example, preset):
    from pathlib import Path

    from editscope.mining import mine_config
    from editscope.runner.config import load_config

    yaml_study = load_config(Path(__file__).resolve().parents[2] / "examples" / example)
    assert yaml_study.config_hash() == mine_config("counterfact", "rome", limit=1000, preset=preset).config_hash()
