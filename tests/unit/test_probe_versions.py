"""One probe version per comparison: probe digests in the store, reports that refuse mixed versions,
and a resumed run that re-evaluates the stale units (hand-built stores and a tiny study)."""

import json
import sqlite3

import pytest

from editscope.probe_versions import ProbeVersionError, probe_digest, row_digest, version_splits
from editscope.report.data.frame import RowFrame
from editscope.report.data.results import load_results
from editscope.requests import Probe
from editscope.runner import ResultsStore, parse_config, run_study

pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py

STUDY = {
    "name": "versions",
    "model": "tiny:llama",
    "seed": 0,
    "methods": ["ft-m", "rome"],
    "edits": [{"prompt": "2+2=", "target_new": "5", "subject": "2+2"},
              {"prompt": "3+1=", "target_new": "7", "subject": "3+1"}],
    "probes": [{"suite": "arithmetic", "args": {"n": 3}}],
}


def test_digest_covers_what_a_measurement_depends_on():
    p = Probe("2+2=", "4", "near", meta={"a": 2})
    assert probe_digest(p) == probe_digest(Probe("2+2=", "4", "near", meta={"a": 2}))
    others = [Probe("2+2 =", "4", "near", meta={"a": 2}), Probe("2+2=", "5", "near", meta={"a": 2}),
              Probe("2+2=", "4", "far", meta={"a": 2}), Probe("2+2=", "4", "near", meta={"a": 2, "aliases": ["four"]}),
              Probe("2+2=", "4", "near", meta={"a": 2}, sep=" "),
              Probe("2+2=", "4", "near", meta={"a": 2, "answer_rule": "text"})]
    assert len({probe_digest(p), *map(probe_digest, others)}) == 1 + len(others)
    # a stored row without a digest: computed from its fields, the separator resolved as at construction
    assert row_digest("2+2=", "4", "near", json.dumps({"a": 2})) == probe_digest(p)
    assert row_digest("2+2=", "4", "near", {"a": 2}) == probe_digest(p)


def _row(unit, index, prompt, digest=None, method="m"):
    return {"method": method, "unit": unit, "step": 0, "probe_set": "s", "index": index, "edit_index": 0,
            "category": "near", "prompt": prompt, "target": "4", "meta": {}, "probe_digest": digest}


def test_version_splits_name_the_units_and_the_differing_probes():
    rows = [_row(u, i, f"q{i}") for u in ("base", "edit-0000", "edit-0001") for i in range(4)]
    rows += [_row("edit-0002", i, f"q{i}" if i < 2 else f"Q{i}") for i in range(4)]
    splits = version_splits(RowFrame.of(rows).df)
    assert len(splits) == 1 and splits[0].n_probes == 2
    assert splits[0].groups == [["m/base", "m/edit-0000", "m/edit-0001"], ["m/edit-0002"]]
    assert "2 probes differ" in splits[0].describe()
    assert version_splits(RowFrame.of(rows[:12]).df) == []


def _fork_probe_version(store_path, units, index=0, pset="arithmetic#e0"):
    """Make ``units`` ((method, unit) pairs) look measured on an older version of probe ``index`` of the first edit's set:
    their rows point at a copy of the probe with another prompt and no stored digest."""
    db = sqlite3.connect(store_path)
    pid = db.execute("SELECT p.id FROM probes p WHERE p.probe_set = ? AND p.probe_index = ? LIMIT 1",
                     (pset, index)).fetchone()[0]
    cols = [r[1] for r in db.execute("PRAGMA table_info(probes)") if r[1] != "id"]
    rec = dict(zip(cols, db.execute(f"SELECT {', '.join(cols)} FROM probes WHERE id = ?", (pid,)).fetchone()))
    rec.update(prompt="What was " + rec["prompt"], probe_digest=None, digest="old")
    new = db.execute(f"INSERT INTO probes({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     list(rec.values())).lastrowid
    ids = [r[0] for r in db.execute("SELECT id, method, unit FROM units") if (r[1], r[2]) in units]
    db.execute(f"UPDATE measures SET probe_id = ? WHERE probe_set = ? AND probe_index = ? AND unit_id IN "
               f"({', '.join('?' * len(ids))})", (new, pset, index, *ids))
    db.commit()
    db.close()
    return pset


def test_mixed_versions_are_refused_then_resume_re_evaluates_only_the_stale_probes(tmp_path):
    cfg = parse_config(STUDY)
    run = run_study(cfg, tmp_path / "run", progress=False)
    before = load_results(run)
    rows_before = {(r["method"], r["unit"], r["probe_set"], r["index"]): r for r in before.frame.to_rows()}
    pset = _fork_probe_version(run / "results.sqlite", [("base", "base"), ("ft-m", "edit-0000")])

    with pytest.raises(ProbeVersionError, match=r"1 probes differ between \[(base/base, ft-m/edit-0000|"
                                                r"ft-m/edit-0000, base/base)\] and \[rome/edit-0000\]") as e:
        load_results(run)
    assert "--resume" in str(e.value)

    from typer.testing import CliRunner

    from editscope.cli import app

    r = CliRunner().invoke(app, ["report", str(run)], terminal_width=300)
    assert r.exit_code == 2 and "different versions of the same probes" in r.output and "Traceback" not in r.output

    run_study(cfg, run, resume=True, progress=False)
    after = load_results(run)  # one version again
    rows_after = {(r["method"], r["unit"], r["probe_set"], r["index"]): r for r in after.frame.to_rows()}
    assert rows_after.keys() == rows_before.keys()
    store = ResultsStore(run / "results.sqlite")
    try:
        events = [e for e in store.events() if e["kind"] == "reevaluated"]
        units = {(u.method, u.unit) for u in store.units()}
    finally:
        store.close()
    # the base and ft-m on edit-0000 measured the old version: exactly those two, one probe each
    assert sorted((e["method"], e["unit"]) for e in events) == [("base", "base"), ("ft-m", "edit-0000")]
    assert all(e["detail"]["probes"] == {pset: 1} for e in events)
    assert len(units) == 5  # nothing recomputed whole: the re-applied edits reproduced their states
    for key, r in rows_after.items():
        assert r["probe_digest"] is not None or key[3] != 0
        # the re-measured probe gives what the original run measured (same state, same probe)
        for f in ("greedy", "base_greedy", "unchanged", "top1"):
            assert r[f] == rows_before[key][f], (key, f)


def test_sequential_runs_with_stale_units_are_refused_with_the_fix(tmp_path):
    cfg = parse_config({**STUDY, "methods": ["ft-m"], "protocol": {"kind": "sequential", "eval_when": "each"}})
    run = run_study(cfg, tmp_path / "run", progress=False)
    _fork_probe_version(run / "results.sqlite", [("ft-m", "step-0001")])
    with pytest.raises(Exception, match="new --out folder"):
        run_study(cfg, run, resume=True, progress=False)


def test_a_re_applied_edit_is_checked_on_its_stored_measurements(tmp_path):
    """Where the re-applied state's fingerprint differs (float results of another machine), the unit
    is kept when its stored greedy outputs are reproduced on a sample, and computed again when not."""
    cfg = parse_config(STUDY)
    run = run_study(cfg, tmp_path / "run", progress=False)
    path = run / "results.sqlite"
    _fork_probe_version(path, [("ft-m", "edit-0000")], index=1)
    _fork_probe_version(path, [("ft-m", "edit-0001")], index=1, pset="arithmetic#e1")
    db = sqlite3.connect(path)
    db.execute("UPDATE units SET fingerprint = 'another machine' WHERE method = 'ft-m'")
    # ft-m/edit-0001's stored target output is not what its edit gives: it must be computed again
    pid = db.execute("SELECT m.probe_id FROM measures m JOIN units u ON u.id = m.unit_id JOIN probes p ON p.id = "
                     "m.probe_id WHERE u.method = 'ft-m' AND u.unit = 'edit-0001' AND p.category = 'target'"
                     ).fetchone()[0]
    db.execute("UPDATE measures SET greedy = 'not this' WHERE probe_id = ? AND unit_id = (SELECT id FROM units "
               "WHERE method = 'ft-m' AND unit = 'edit-0001')", (pid,))
    db.commit()
    db.close()
    run_study(cfg, run, resume=True, progress=False)
    store = ResultsStore(path)
    try:
        events = {(e["method"], e["unit"]): e["detail"] for e in store.events() if e["kind"] == "reevaluated"}
        units = {(u.method, u.unit): u for u in store.units()}
    finally:
        store.close()
    check = events[("ft-m", "edit-0000")]["reproduced"]
    assert check["state"] == "measurements" and check["agree"] == 1.0 and check["efficacy_checked"] >= 1
    assert ("ft-m", "edit-0001") not in events and units[("ft-m", "edit-0001")].fingerprint != "another machine"
    load_results(run)  # one version again


def test_a_suites_answer_rule_is_applied_to_its_probes_and_unknown_rules_are_refused():
    from editscope.runner import build_plan

    cfg = parse_config({**STUDY, "probes": [{"suite": "arithmetic", "args": {"n": 2}, "answer_rule": "text"}]})
    ps = build_plan(cfg).all_sets()["arithmetic#e0"][1]
    assert {p.meta["answer_rule"] for p in ps} == {"text"}
    plain = build_plan(parse_config(STUDY)).all_sets()["arithmetic#e0"][1]
    assert probe_digest(ps[0]) != probe_digest(plain[0])  # another rule: another probe version
    with pytest.raises(Exception, match=r"probes\[0\]\.answer_rule: unknown answer rule 'integr'\. Did you mean 'integer'"):
        parse_config({**STUDY, "probes": [{"suite": "arithmetic", "answer_rule": "integr"}]})
    with pytest.raises(Exception, match="equivalence_margin"):
        parse_config({**STUDY, "equivalence_margin": -0.1})


def test_free_generation_protocol_rewrites_probes_and_scores_exact_answers():
    from editscope.metrics.answers import text_exact_reaches
    from editscope.probes.protocols import free_generation
    from editscope.requests import ProbeSet

    ps = ProbeSet([Probe("The mother tongue of X is", "English", "target", meta={"aliases": ["english language"]}),
                   Probe("2+2=", "4", "near"), Probe("Y is a native speaker of", "French", "near")], name="case")
    gen = free_generation(ps, 20)
    assert [p.meta["gen_tokens"] for p in gen] == [20, 20, 20]
    assert [p.meta.get("answer_rule") for p in gen] == ["text-exact", None, "text-exact"]  # integers keep theirs
    assert probe_digest(gen[0]) != probe_digest(ps[0])  # another protocol: another probe version
    assert text_exact_reaches(" English. She was born", ["English"])
    assert not text_exact_reaches(" French and English", ["English"]) and not text_exact_reaches(" Englishman", ["English"])
    assert text_exact_reaches(" the English language, mostly", ["English", "english language"])
    with pytest.raises(ValueError, match="generate=0"):
        free_generation(ps, 0)
    cfg = parse_config({**STUDY, "edits": [{"dataset": "counterfact", "limit": 1, "generate": 20}], "probes": []})
    assert cfg.edits[0].generate == 20
