"""Failing well: the CLI driven through bad inputs and faults, as a new user would meet them.

Every case asserts the exit code (2: bad input, 1: failure during work, 3: data, 130: interrupted), a
message naming the culprit, no traceback, and that no file outside the command's own output
changed (the scratch tree is hashed before and after). Cases run without the real model: each is
refused before any model would load, or loads a tiny model saved into the scratch folder.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import sqlite3
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from editscope.cli import app

GOOD_STUDY = {
    "name": "tiny-study",
    "model": "tiny:llama",
    "methods": ["ft-m"],
    "edits": [{"prompt": "2+2=", "target_new": "5"}],
    "probes": [{"suite": "arithmetic", "args": {"n": 2, "paraphrases": False}}],
}


def tree_digest(root: Path, skip: Path | None = None) -> dict[str, str]:
    """Path -> content hash (or "dir") of everything under ``root`` except ``skip``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        out[str(p.relative_to(root))] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A scratch folder with the files the cases point at; the cache lives outside it."""
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDITSCOPE_DEBUG", raising=False)
    s = tmp_path / "scratch"
    s.mkdir()
    (s / "notes.txt").write_text("the user's own file\n")
    (s / "foreign").mkdir()
    (s / "foreign" / "paper.tex").write_text("\\documentclass{article}\n")
    (s / "empty-store").mkdir()
    (s / "empty-store" / "results.sqlite").write_bytes(b"")
    (s / "junk-store").mkdir()
    (s / "junk-store" / "results.sqlite").write_bytes(os.urandom(4096))
    (s / "alien-store").mkdir()
    con = sqlite3.connect(s / "alien-store" / "results.sqlite")
    con.execute("CREATE TABLE accounts(id INTEGER, balance REAL)")
    con.commit()
    con.close()
    (s / "good.yaml").write_text(yaml.safe_dump(GOOD_STUDY))
    (s / "list.yaml").write_text("- just\n- a list\n")
    (s / "broken.yaml").write_text("name: [unclosed\n")
    (s / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (s / "binary.yaml").write_bytes(os.urandom(512))
    (s / "empty.yaml").write_text("")
    (s / "broken.json").write_text('[{"requested_rewrite": {"prompt": "x"')
    (s / "bad.xz").write_bytes(b"this is not xz")
    (s / "truncated.xz").write_bytes(lzma.compress(b"SQLite format 3\x00" + b"\x00" * 5000)[:40])
    (s / "template.md.in").write_text("# {{meta:name}}\n{{frobnicate}}\n")
    edit = s / "edit"
    edit.mkdir()
    (edit / "manifest.json").write_text(json.dumps({"format": "editscope-edit", "format_version": 1}))
    (edit / "delta.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":")  # truncated header
    bad_json = s / "edit-badjson"
    bad_json.mkdir()
    (bad_json / "manifest.json").write_text("{not json")
    (bad_json / "delta.safetensors").write_bytes(b"")
    model = s / "model-junk"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model / "model.safetensors").write_bytes(os.urandom(2048))
    model2 = s / "model-badconfig"
    model2.mkdir()
    (model2 / "config.json").write_text("{oops")
    (model2 / "model.safetensors").write_bytes(os.urandom(64))
    return s


def study(scratch: Path, filename: str, **changes) -> str:
    """Write GOOD_STUDY with ``changes`` (None removes a key) to ``scratch/filename``; returns the path."""
    spec = {**GOOD_STUDY, **changes}
    spec = {k: v for k, v in spec.items() if v is not None}
    path = scratch / filename
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def drive(scratch: Path, args: list[str], code: int, pattern: str, *, env: dict | None = None,
          may_write: str | None = None) -> str:
    """Run ``editscope ARGS`` in ``scratch``; assert the exit code, the message and an untouched tree
    (except ``may_write``, a path under scratch the command owns)."""
    skip = scratch / may_write if may_write else None
    before = tree_digest(scratch, skip)
    old = os.getcwd()
    os.chdir(scratch)
    try:
        r = CliRunner().invoke(app, args, env=env, terminal_width=200)
    finally:
        os.chdir(old)
    out = r.output
    flat = " ".join(out.split())
    assert r.exit_code == code, f"{args}: exit {r.exit_code}, expected {code}\n{out}\n{r.exception!r}"
    assert "Traceback" not in out, f"{args}: traceback\n{out}"
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise AssertionError(f"{args}: the exception escaped the CLI: {r.exception!r}\n{out}")
    assert __import__("re").search(pattern, flat), f"{args}: message does not match {pattern!r}:\n{out}"
    assert tree_digest(scratch, skip) == before, f"{args}: changed files it does not own"
    return flat


# (args, exit code, message pattern) for commands that need no model; {s} is the scratch folder
CASES = [
    # report: run folders, stores and templates
    (["report", "nowhere"], 2, r"no results store|does not exist|No such file"),
    (["report", "notes.txt"], 2, r"notes\.txt.*(not a run folder|not a folder)"),
    (["report", "empty-store"], 2, r"empty-store.*(empty|not an editscope results store)"),
    (["report", "junk-store"], 2, r"junk-store.*not an editscope results store"),
    (["report", "alien-store"], 2, r"alien-store.*SQLite file that is not"),
    (["report", "foreign"], 2, r"foreign.*no results store"),
    (["report", "empty-store", "--format", "pdf"], 2, r"--format.*'pdf'.*md, html, latex"),
    (["report", "empty-store", "--with", "x"], 2, r"STUDY=RUN_DIR"),
    # export / unpack
    (["export", "nowhere", "out.sqlite.xz"], 2, r"nowhere.*no results store|does not exist"),
    (["export", "junk-store", "junk.sqlite.xz"], 2, r"not an editscope results store"),
    (["unpack", "bad.xz", "restored"], 2, r"bad\.xz.*not an xz archive|bad\.xz.*damaged"),
    (["unpack", "truncated.xz", "restored2"], 2, r"truncated\.xz.*(truncated|damaged|not an xz)"),
    (["unpack", "missing.xz", "restored3"], 2, r"missing\.xz"),
    (["unpack", "bad.xz", "notes.txt"], 2, r"notes\.txt"),
    (["unpack", "bad.xz", "foreign"], 2, r"foreign"),
    # run: study files
    (["run", "missing.yaml"], 2, r"missing\.yaml.*no such study file"),
    (["run", "list.yaml"], 2, r"list\.yaml.*mapping"),
    (["run", "broken.yaml"], 2, r"broken\.yaml.*(YAML|yaml)"),
    (["run", "latin1.yaml"], 2, r"latin1\.yaml.*UTF-8"),
    (["run", "binary.yaml"], 2, r"binary\.yaml"),
    (["run", "empty.yaml"], 2, r"empty\.yaml.*empty"),
    (["run", "foreign"], 2, r"foreign.*(folder|directory)"),
    # methods / suites
    (["methods", "--arch", "bert"], 2, r"unknown architecture 'bert'"),
    (["methods", "--layers", "-3"], 2, r"--layers.*-3.*at least 1"),
    (["methods", "--layers", "0"], 2, r"--layers.*0.*at least 1"),
    (["methods", "--layers", "many"], 2, r"--layers.*valid integer"),
    # edit: everything checked before the model loads
    (["edit", "--method", "rmoe", "--prompt", "2+2=", "--target", "5"], 2, r"rmoe.*[Dd]id you mean 'rome'"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", "5", "--hparam", "layer"], 2, r"--hparam 'layer'.*NAME=VALUE"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", "5", "--hparam", "layr=3"], 2, r"layr.*[Dd]id you mean 'layer'"),
    (["edit", "--method", "ft-m", "--prompt", "2+2=", "--target", "5", "--hparam", "lr=fast"], 2, r"lr.*fast"),
    (["edit", "--method", "ft-m", "--prompt", "2+2=", "--target", "5", "--hparam", "steps=-4"], 2, r"steps"),
    (["edit", "--method", "rome", "--prompt", "", "--target", "5"], 2, r"prompt.*empty"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", ""], 2, r"target.*empty"),
    (["edit", "--method", "rome", "--prompt", "2+\udcff=", "--target", "5"], 2, r"prompt.*not valid UTF-8"),
    (["eval", "--suite", "arithmetic", "--prompt", "2+2=", "--target", "\udce9"], 2, r"target.*not valid UTF-8"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", "5", "--save", "notes.txt"], 2, r"--save.*notes\.txt.*not a folder"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", "5", "--save", "foreign"], 2, r"--save.*foreign.*holds other files"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", "5", "--save", "notes.txt/sub"], 2, r"--save.*notes\.txt"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", "5", "--dtype", "float8"], 2, r"dtype.*float8"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", "5", "--new-tokens", "0"], 2, r"--new-tokens.*at least 1"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", "5", "--model", "no-such-model"], 2, r"no-such-model"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", "5", "--model", "model-junk"], 2, r"model-junk.*(safetensors|damaged|not)"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", "5", "--model", "model-badconfig"], 2, r"model-badconfig.*config\.json"),
    (["edit", "--method", "rome", "--prompt", "2+2=", "--target", "5", "--model", "foreign"], 2, r"foreign.*safetensors"),
    # eval: suites, options and saved edits, before the model loads
    (["eval", "--suite", "arithmatic"], 2, r"arithmatic.*[Dd]id you mean 'arithmetic'"),
    (["eval", "--suite", "arithmetic", "--prompt", "2+2="], 2, r"--prompt and --target"),
    (["eval", "--suite", "arithmetic", "--n", "-2"], 2, r"--n.*-2"),
    (["eval", "--suite", "counterfact", "--limit", "-5"], 2, r"--limit.*-5"),
    (["eval", "--suite", "arithmetic", "--edit", "nowhere"], 2, r"nowhere.*not a saved edit"),
    (["eval", "--suite", "arithmetic", "--edit", "edit"], 2, r"edit.*(damaged|not a saved edit|manifest)"),
    (["eval", "--suite", "arithmetic", "--edit", "edit-badjson"], 2, r"manifest\.json.*not valid JSON"),
    (["eval", "--suite", "arithmetic", "--rows", "notes.txt/rows.jsonl"], 2, r"--rows.*notes\.txt"),
    (["eval", "--suite", "arithmetic", "--dtype", "int3"], 2, r"dtype.*int3"),
    (["eval", "--suite", "counterfact", "--source", "missing.json"], 2, r"missing\.json"),
    (["eval", "--suite", "counterfact", "--source", "notes.txt"], 2, r"notes\.txt"),
    (["eval", "--suite", "counterfact", "--source", "broken.json"], 2, r"broken\.json"),
    (["eval", "--suite", "counterfact", "--source", "foreign"], 2, r"foreign.*directory"),
    # ppl / downstream / peek
    (["ppl", "--corpus", "me_ppl_5O"], 2, r"me_ppl_5O"),
    (["ppl", "--corpus", "me_ppl_50", "--limit", "0"], 2, r"--limit.*at least 1"),
    (["ppl", "--corpus", "notes.txt/x.txt"], 2, r"notes\.txt"),
    (["downstream", "--task", "piqa", "--limit", "-1"], 2, r"--limit.*at least 1"),
    (["downstream", "--task", "piqq"], 2, r"--task .piqq.*[Dd]id you mean 'piqa'"),
    (["peek", "--k", "0"], 2, r"--k.*at least 1"),
    (["peek", "--new-tokens", "-1"], 2, r"--new-tokens.*at least 1"),
    (["peek", "--dtype", "fp64x"], 2, r"dtype.*fp64x"),
]


@pytest.mark.parametrize("args,code,pattern", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_refused_with_a_named_culprit(scratch, args, code, pattern):
    drive(scratch, args, code, pattern)


STUDY_CASES = [
    ({"methods": ["rmoe"]}, r"methods\[0\].*rmoe.*[Dd]id you mean 'rome'"),
    ({"methods": [{"method": "rome", "hparams": {"layr": 3}}]}, r"layr.*[Dd]id you mean 'layer'"),
    ({"methods": [{"method": "ft-q"}]}, r"ft-q.*[Dd]id you mean"),
    ({"methods": [{"method": "ft-m", "hparams": {"lr": "fast"}}]}, r"hparams\.lr.*'fast'"),
    ({"methods": [{"method": "placebo"}]}, r"placebo.*match"),
    ({"methods": ["ft-m", {"method": "placebo", "match": "ft-m", "draws": 0}]}, r"draws"),
    ({"edits": [{"dataset": "counterfact", "limit": -5}]}, r"edits\[0\].*limit.*-5"),
    ({"edits": [{"prompt": "2+2="}]}, r"edits\[0\].*target_new"),
    ({"edits": []}, r"edits"),
    ({"probes": [{"suite": "arithmatic"}]}, r"arithmatic.*[Dd]id you mean 'arithmetic'"),
    ({"name": "bad name!"}, r"name"),
    ({"seed": "zero"}, r"seed"),
    ({"protocol": {"kind": "parallel"}}, r"protocol.*parallel"),
    ({"colour": "red"}, r"colour.*unknown key"),
]


@pytest.mark.parametrize("changes,pattern", STUDY_CASES, ids=[str(c[0])[:60] for c in STUDY_CASES])
def test_bad_study_keys_are_refused_with_one_error_before_anything_runs(scratch, changes, pattern):
    path = study(scratch, "bad.yaml", **changes)
    flat = drive(scratch, ["run", path, "--out", "runs/bad"], 2, pattern)
    # one fault, one complaint: no false errors from the other kinds of entry
    assert flat.count("error") == 1 and "Field required" not in flat.replace("target_new: Field required", ""), flat
    assert "unknown key" not in flat or "colour" in flat, flat
    assert not (scratch / "runs").exists()


def test_run_output_folders_that_are_not_ours_are_refused(scratch):
    good = study(scratch, "good2.yaml")
    drive(scratch, ["run", good, "--out", "notes.txt"], 2, r"--out.*notes\.txt.*not a folder")
    drive(scratch, ["run", good, "--out", "foreign"], 2, r"--out.*foreign.*holds other files")
    drive(scratch, ["run", good, "--out", "foreign", "--force"], 2, r"--out.*foreign.*holds other files")
    drive(scratch, ["run", good, "--out", "empty-store"], 2, r"empty-store.*(empty|not an editscope results store)")
    drive(scratch, ["run", good, "--out", "alien-store", "--resume"], 2, r"alien-store.*SQLite file that is not")
    drive(scratch, ["run", good, "--out", "notes.txt/run"], 2, r"notes\.txt")


def test_an_unusable_cache_folder_is_named(scratch, tmp_path):
    blocker = tmp_path / "cache-file"
    blocker.write_text("x")
    for cache, pattern in [(str(blocker), r"EDITSCOPE_CACHE.*cache-file.*not a folder"),
                           (str(blocker / "sub"), r"EDITSCOPE_CACHE.*cache-file")]:
        drive(scratch, ["ppl", "--corpus", "me_ppl_50", "--limit", "1"], 2, pattern, env={"EDITSCOPE_CACHE": cache})


def test_data_that_is_nowhere_and_cannot_be_fetched_is_named_with_the_fix(scratch):
    for shared in (str(scratch / "nowhere"), str(scratch / "notes.txt"), ""):
        for args, name in ((["eval", "--suite", "counterfact", "--limit", "3"], "counterfact"),
                           (["ppl", "--corpus", "me_ppl_50"], "me_ppl")):
            drive(scratch, args, 3, rf"{name} \(.*MB\) is not in .*offline.*editscope data fetch {name}",
                  env={"EDITSCOPE_SHARED": shared, "EDITSCOPE_CACHE": str(scratch / "empty-cache"),
                       "EDITSCOPE_OFFLINE": "1"})


def test_debug_shows_the_traceback_and_exit_codes_are_documented(scratch):
    r = CliRunner().invoke(app, ["--debug", "report", str(scratch / "junk-store")])
    assert r.exit_code != 0 and r.exception is not None and not isinstance(r.exception, SystemExit)
    r = CliRunner().invoke(app, ["report", str(scratch / "junk-store")], env={"EDITSCOPE_DEBUG": "1"})
    assert r.exception is not None and not isinstance(r.exception, SystemExit)
    guide = (Path(__file__).resolve().parents[2] / "docs" / "guide" / "cli.md").read_text()
    assert "When something goes wrong" in guide and "--debug" in guide and "exit code" in guide.lower()


def test_ctrl_c_says_where_the_run_stopped_and_how_to_resume(scratch, monkeypatch):
    import editscope.runner as runner

    real = runner.run_study
    good = study(scratch, "good3.yaml", edits=[{"prompt": "2+2=", "target_new": "5"}, {"prompt": "1+1=", "target_new": "3"}])

    def interrupted(cfg, out, **kw):  # the base unit finishes, then Ctrl-C
        from editscope.runner import parse_config

        real(parse_config({**GOOD_STUDY, "methods": ["ft-m"], "edits": cfg.model_dump()["edits"][:1]}), out, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_study", interrupted)
    flat = drive(scratch, ["run", good, "--out", "runs/x"], 130, r"interrupted: \d+ of 3 units stored in runs/x.*--resume",
                 may_write="runs")
    assert "good3.yaml" in flat


def test_a_run_killed_before_its_first_unit_reports_what_it_has(scratch):
    from editscope.runner import parse_config
    from editscope.runner.execute import open_run

    store = open_run(scratch / "runs" / "killed", parse_config(GOOD_STUDY))  # created, then killed: no unit
    store.close()
    flat = drive(scratch, ["report", "runs/killed", "--format", "md"], 2, r"no finished unit.*--resume",
                 may_write="runs")
    assert "tiny-study" in flat


def test_a_run_stopped_after_the_base_model_reports_with_any_reference(scratch):
    from editscope.runner import parse_config, run_study

    cfg = parse_config({**GOOD_STUDY, "reference": "ft-m"})
    out = run_study(cfg, scratch / "runs" / "early", progress=False)
    con = sqlite3.connect(out / "results.sqlite")  # as if killed right after the base unit
    ids = [r[0] for r in con.execute("SELECT id FROM units WHERE method != 'base'")]
    for table in ("measures", "scalars"):
        con.executemany(f"DELETE FROM {table} WHERE unit_id = ?", [(i,) for i in ids])
    con.executemany("DELETE FROM units WHERE id = ?", [(i,) for i in ids])
    con.execute("UPDATE meta SET value = ? WHERE key = 'status'", (json.dumps("running"),))
    con.commit()
    con.close()
    for extra in ([], ["--reference", "base"]):
        flat = drive(scratch, ["report", "runs/early", "--format", "md", *extra], 0, r"PARTIAL RUN.*partial run",
                     may_write="runs")
        assert "base" in flat
    drive(scratch, ["report", "runs/early", "--format", "md", "--reference", "rome"], 2,
          r"--reference 'rome' has no results.*base", may_write="runs")


def test_version_prints_the_package_and_library_versions_without_a_command():
    from importlib.metadata import version

    from editscope import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"editscope {__version__} (") and f"torch {version('torch')}" in result.output
