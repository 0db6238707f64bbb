"""Study configs, protocols, the results store (kill -9 and resume), and reports, on tiny models."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from editscope.report import write_report
from system_tools import chromium, required_in_ci
from editscope.report.data.results import load_results
from editscope.runner import (
    ConfigError,
    ResultsStore,
    RunFolderError,
    StoreError,
    build_plan,
    load_config,
    parse_config,
    run_study,
)

EDITS = [{"prompt": f"{a}+{b}=", "target_new": str(a + b + 1), "subject": f"{a}+{b}"}
         for a, b in [(2, 2), (3, 1), (1, 2), (2, 3), (3, 3), (1, 1)]]
STUDY = {
    "name": "tiny",
    "model": "tiny:llama",
    "seed": 0,
    "methods": ["ft-m", {"method": "ft-m", "label": "ft-m-strong", "hparams": {"lr": 0.05, "steps": 30}}],
    "edits": EDITS[:3],
    "probes": [{"suite": "arithmetic", "args": {"n": 3, "paraphrases": False}}],
}


pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


def _rows(run: Path) -> list[tuple]:
    """Every stored result, timings and dates left out, in a canonical order."""
    s = ResultsStore(run / "results.sqlite")
    try:
        rows = sorted(tuple(json.dumps(r, sort_keys=True) for r in [x]) for x in s.rows())
        units = sorted((u.method, u.unit, u.status, u.fingerprint, json.dumps(u.edits)) for u in s.units())
        scalars = sorted((x["method"], x["unit"], x["name"], x["value"]) for x in s.scalars())
    finally:
        s.close()
    return [*units, *scalars, *rows]


# ---- config


@pytest.mark.parametrize("patch, match", [
    ({"methds": ["ft"]}, r"methds: unknown key"),
    ({"seed": "zero"}, r"seed: .*integer.*\(got \"zero\"\)"),
    ({"methods": ["rme"]}, r"methods\[0\]\.method: unknown edit method 'rme'. Did you mean 'rome'"),
    ({"probes": [{"suite": "arithmetc"}]}, r"arithmetic"),
    ({"methods": ["ft", "ft"]}, r"more than once.*label"),
    ({"protocol": {"kind": "single", "eval_when": "end"}}, r"eval_when='end' applies to kind='sequential'"),
    ({"edits": [{"prompt": "2+2=", "target": "5"}]}, r"edits\[0\]"),
])
def test_bad_configs_are_refused_with_the_key_path_and_the_fix(patch, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({**STUDY, **patch}, "study.yaml")


def test_config_file_errors_name_the_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nmethods: [ft]\nedits: [{prompt: '2+2=', target_new: '5'}]\nmodel: {name: m, dtyp: x}\n")
    with pytest.raises(ConfigError, match=r"(?s)s\.yaml.*model\.dtyp: unknown key"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such study file"):
        load_config(tmp_path / "missing.yaml")


def test_a_suite_that_yields_no_probes_or_cannot_use_the_edit_is_refused():
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        build_plan(parse_config({**STUDY, "probes": []}))
    cfg = parse_config({**STUDY, "edits": [{"prompt": "The capital of France is", "target_new": "Rome"}]})
    with pytest.raises(ConfigError, match="suite 'arithmetic' for edit"):
        build_plan(cfg)


def test_plan_units_per_protocol():
    single = build_plan(parse_config(STUDY))
    assert [u.unit for u in single.units_of("ft-m")] == ["edit-0000", "edit-0001", "edit-0002"]
    batch = build_plan(parse_config({**STUDY, "protocol": {"kind": "batch", "batch_size": 2}}))
    assert [u.edits for u in batch.units_of("ft-m")] == [(0, 1), (2,)]
    seq = build_plan(parse_config({**STUDY, "edits": EDITS, "protocol": {"kind": "sequential", "eval_when": "every_k",
                                                                           "k": 4}}))
    assert [u.step for u in seq.units_of("ft-m") if u.evaluate] == [4, 6]
    # sequential evaluations include every earlier edit's probes (retention)
    last = seq.units_of("ft-m")[-1]
    assert sorted({i for i, _ in seq.eval_sets(last).values()}) == list(range(6))


# ---- runs


def test_single_run_is_deterministic_and_undoes_every_edit(tmp_path):
    cfg = parse_config(STUDY)
    a, b = run_study(cfg, tmp_path / "a", progress=False), run_study(cfg, tmp_path / "b", progress=False)
    assert _rows(a) == _rows(b)
    s = ResultsStore(a / "results.sqlite")
    units = s.units()
    base_fp = s.get_meta("model_fingerprint")
    assert s.get_meta("status") == "complete" and s.get_meta("config_hash") == cfg.config_hash()
    assert [u.method for u in units] == ["base"] + ["ft-m"] * 3 + ["ft-m-strong"] * 3
    assert units[0].fingerprint == base_fp and all(u.fingerprint != base_fp for u in units[1:])
    n_probes = len(s.rows(unit_id=units[0].id))
    assert all(len(s.rows(unit_id=u.id)) == n_probes // 3 for u in units[1:])  # each edit: its own grid
    strong = [r for r in s.rows(method="ft-m-strong") if r["category"] == "target"]
    assert all(r["top1"] for r in strong)  # the strong setting reaches every target
    s.close()


def test_single_protocol_batches_rome_residuals_and_stores_what_one_at_a_time_gives(tmp_path, monkeypatch):
    import editscope.runner.units as units

    hp = {"layer": 1, "n_contexts": 2, "context_len": 4, "stats_tokens": 600, "stats_corpus": ["me_ppl_50"],
          "v_lr": 1.0, "v_steps": 6, "v_fail_loss": 100.0}
    spec = {**STUDY, "methods": [{"method": "rome", "hparams": hp}]}
    batched = run_study(parse_config(spec), tmp_path / "batched", progress=False)
    monkeypatch.setattr(units, "PREPARE_CHUNK", 1)  # a chunk of one: nothing to batch
    alone = run_study(parse_config(spec), tmp_path / "alone", progress=False)
    infos = {d: [u.info.get("prepared") for u in ResultsStore(d / "results.sqlite").units("rome")]
             for d in (batched, alone)}
    assert infos[batched] == [True] * 3 and infos[alone] == [False] * 3
    a, b = ResultsStore(batched / "results.sqlite").rows(method="rome"), ResultsStore(alone / "results.sqlite").rows(method="rome")
    assert [(r["unit"], r["index"], r["greedy"]) for r in a] == [(r["unit"], r["index"], r["greedy"]) for r in b]
    assert max(abs(x["logprob"] - y["logprob"]) for x, y in zip(a, b) if x["logprob"] is not None) < 1e-3
    # every ROME unit stores its update's anatomy: one touched matrix, rank one
    sc = [x for x in ResultsStore(batched / "results.sqlite").scalars() if x["method"] == "rome"]
    ranks = [x["value"] for x in sc if x["name"] == "delta:effective_rank"]
    assert len(ranks) == 3 and all(r == pytest.approx(1.0, abs=1e-3) for r in ranks)
    assert all(x["value"] > 0 for x in sc if x["name"] in ("delta:fro", "delta:relative"))
    from editscope.report.analyses.anatomy import anatomy_table
    from editscope.report.data.results import load_results

    (row,) = anatomy_table(load_results(batched))
    assert row.method == "rome" and row.n == 3 and row.effective_rank == pytest.approx(1.0, abs=1e-3)


def test_output_folders_are_never_overwritten(tmp_path):
    cfg = parse_config(STUDY)
    out = run_study(cfg, tmp_path / "run", progress=False)
    before = _rows(out)
    with pytest.raises(RunFolderError, match="--resume"):
        run_study(cfg, out, progress=False)
    other = parse_config({**STUDY, "name": "other"})
    with pytest.raises(RunFolderError, match="another study"):
        run_study(other, out, progress=False)
    assert _rows(out) == before
    run_study(other, out, force=True, progress=False)
    backups = list(out.glob("results.sqlite.*.bak"))
    assert len(backups) == 1
    shutil.copy(backups[0], tmp_path / "old.sqlite")
    assert _rows_of(tmp_path / "old.sqlite") == before
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "results.sqlite").write_text("not a database")
    with pytest.raises(StoreError, match="not an editscope results store"):
        run_study(cfg, junk, progress=False)
    with pytest.raises(StoreError, match="not an editscope results store"):
        ResultsStore(junk / "results.sqlite")
    alien = tmp_path / "alien"
    alien.mkdir()
    sqlite3.connect(alien / "results.sqlite").execute("CREATE TABLE t(x)").connection.commit()
    with pytest.raises(StoreError, match="SQLite file that is not"):
        run_study(cfg, alien, progress=False)
    folder = tmp_path / "folder"
    (folder / "results.sqlite").mkdir(parents=True)  # a folder where the store file goes
    for create in (False, True):
        with pytest.raises(StoreError, match="is not a file, not an editscope results store"):
            ResultsStore(folder / "results.sqlite", create=create)


def _resume_grown(grown, out):
    """Resume ``grown`` in ``out``; the store then carries its hash and is complete. Returns its units."""
    run_study(grown, out, resume=True, progress=False)
    s = ResultsStore(out / "results.sqlite")
    try:
        assert s.get_meta("config_hash") == grown.config_hash() and s.get_meta("status") == "complete"
        return s.units()
    finally:
        s.close()


def test_a_study_grown_by_appended_methods_resumes_in_place(tmp_path):
    first = parse_config({**STUDY, "methods": ["ft-m"]})
    out = run_study(first, tmp_path / "run", progress=False)
    before = _rows(out)
    grown = parse_config({**STUDY, "methods": ["ft-m", {"method": "ft-m", "label": "ft-m-2", "hparams": {"lr": 0.05}}]})
    with pytest.raises(RunFolderError, match="another study"):
        run_study(grown, out, progress=False)  # without --resume: refused as before
    units = _resume_grown(grown, out)
    assert sorted({u.method for u in units}) == ["base", "ft-m", "ft-m-2"]
    assert [u for u in units if u.method == "ft-m"] and len(units) == 1 + 2 * len(STUDY["edits"])
    after = _rows(out)
    assert set(before) <= set(after)  # every earlier result kept, none recomputed differently
    # anything else changed, or methods reordered/removed: still another study
    for other in ({**STUDY, "seed": 1, "methods": ["ft-m", "ft-l"]}, {**STUDY, "methods": ["ft-l", "ft-m"]},
                  {**STUDY, "methods": ["ft-m"]}):
        with pytest.raises(RunFolderError, match="another study"):
            run_study(parse_config(other), out, resume=True, progress=False)


def test_controls_added_to_a_stored_study_resume_in_place(tmp_path):
    first = parse_config({**STUDY, "methods": ["ft-m"], "edits": EDITS[:2]})
    out = run_study(first, tmp_path / "run", progress=False)
    before = _rows(out)
    grown = parse_config({**STUDY, "methods": ["ft-m", {"method": "placebo", "match": "ft-m"}],
                          "edits": EDITS[:2], "controls": {"unrelated": 1}})
    units = _resume_grown(grown, out)
    by_method = {}
    for u in units:
        by_method.setdefault(u.method, []).append(u.unit)
    assert sorted(by_method) == ["base", "ft-m", "placebo-ft-m", "unrelated-ft-m"]
    assert sorted(by_method["unrelated-ft-m"]) == ["edit-0000-u00", "edit-0001-u00"]
    assert set(before) <= set(_rows(out))  # the stored units kept as they were
    # more unrelated edits drawn: the first draws are the stored ones, only the new ones are added
    kept = _rows(out)
    more = parse_config({**STUDY, "methods": ["ft-m", {"method": "placebo", "match": "ft-m"}],
                         "edits": EDITS[:2], "controls": {"unrelated": 2}})
    units = _resume_grown(more, out)
    assert sorted(u.unit for u in units if u.method == "unrelated-ft-m") == [
        "edit-0000-u00", "edit-0000-u01", "edit-0001-u00", "edit-0001-u01"]
    assert set(kept) <= set(_rows(out))
    # controls otherwise changed once stored (fewer draws, other methods), or removed: another study
    meths = ["ft-m", {"method": "placebo", "match": "ft-m"}]
    for other in ({**STUDY, "methods": meths, "edits": EDITS[:2], "controls": {"unrelated": 1}},
                  {**STUDY, "methods": meths, "edits": EDITS[:2], "controls": {"unrelated": 3, "methods": ["ft-m"],
                                                                               "own_probes": False}},
                  {**STUDY, "methods": meths, "edits": EDITS[:2]}):
        with pytest.raises(RunFolderError, match="another study"):
            run_study(parse_config(other), out, resume=True, progress=False)


def _rows_of(path: Path):
    d = path.parent / "x"
    d.mkdir(exist_ok=True)
    shutil.copy(path, d / "results.sqlite")
    return _rows(d)


def test_sequential_run_with_the_collapse_guard(tmp_path):
    spec = {**STUDY, "edits": EDITS[:4], "methods": [{"method": "ft-m", "hparams": {"lr": 5e-3, "steps": 5}}]}
    skip = parse_config({**spec, "protocol": {"kind": "sequential", "guard": "skip", "threshold": 1.0,
                                              "guard_corpus": "me_ppl_50"}})
    out = run_study(skip, tmp_path / "skip", progress=False)
    s = ResultsStore(out / "results.sqlite")
    units = s.units("ft-m")
    assert [u.status for u in units] == ["skipped"] * 4  # ppl > 1 always: every edit undone
    assert all(u.fingerprint == s.get_meta("model_fingerprint") for u in units)
    assert [e["kind"] for e in s.events()] == ["collapse"] * 4
    s.close()
    stop = parse_config({**spec, "protocol": {"kind": "sequential", "guard": "stop", "threshold": 1.0}})
    out = run_study(stop, tmp_path / "stop", progress=False)
    s = ResultsStore(out / "results.sqlite")
    assert [u.status for u in s.units("ft-m")] == ["stopped"]
    assert s.rows(method="ft-m")  # the state it stopped in is evaluated
    s.close()
    off = parse_config({**spec, "protocol": {"kind": "sequential", "guard": "off", "eval_when": "end"}})
    out = run_study(off, tmp_path / "off", progress=False)
    res = load_results(out)
    s = ResultsStore(out / "results.sqlite")
    units = s.units("ft-m")
    assert [u.status for u in units] == ["done"] * 4
    assert len({u.fingerprint for u in units}) == 4  # edits accumulate
    assert {r["step"] for r in s.rows(method="ft-m")} == {4}
    assert {r["edit_index"] for r in s.rows(method="ft-m")} == {0, 1, 2, 3}  # retention of earlier edits
    s.close()
    assert res.protocol == "sequential"
    write_report(out, ("md",))
    assert (out / "figures" / "sequential.png").exists()


_CHILD = """
import sys, json
from editscope.runner import parse_config, run_study
run_study(parse_config(json.loads(sys.argv[1])), sys.argv[2], resume=sys.argv[3] == "1", progress=False)
"""


@pytest.mark.parametrize("protocol, resume_threads", [("single", "same"), ("sequential", "same"), ("sequential", "other")])
def test_kill_9_and_resume_give_exactly_the_rows_of_an_uninterrupted_run(tmp_path, protocol, resume_threads):
    spec = {**STUDY, "edits": EDITS, "methods": ["ft-m"], "protocol": {"kind": protocol, "guard": "off"}}
    full = run_study(parse_config(spec), tmp_path / "full", progress=False)
    out = tmp_path / "killed"
    import torch

    # the children compute at this process's torch thread count: float results depend on it
    n = str(torch.get_num_threads())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(spec), str(out), "0"], env=env)
    db = out / "results.sqlite"
    deadline = time.time() + 240
    n = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            c = sqlite3.connect(db)
            try:
                n = c.execute("SELECT COUNT(*) FROM units").fetchone()[0]
            except sqlite3.Error:
                n = 0
            finally:
                c.close()
            if n >= 3:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    s = ResultsStore(db)
    stored = len(s.units())
    assert s.get_meta("status") == "running" and 3 <= stored < 7, "the kill must land mid-run"
    s.close()
    write_report(out, ("md",))
    assert "PARTIAL RUN" in (out / "report.md").read_text()
    with pytest.raises(RunFolderError, match="--resume"):
        run_study(parse_config(spec), out, progress=False)
    if resume_threads == "other":  # resumed at another thread count: the chain replays at the recorded one
        m = "1" if torch.get_num_threads() > 1 else "2"
        env = {**env, "OMP_NUM_THREADS": m, "MKL_NUM_THREADS": m}
    resumed = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec), str(out), "1"], env=env, check=True,
                             capture_output=True, text=True)
    assert ("the resumed chains compute at" in resumed.stderr) == (resume_threads == "other"), resumed.stderr
    assert _rows(out) == _rows(full)


def test_batch_protocol_applies_a_batch_at_once(tmp_path):
    spec = {**STUDY, "methods": [{"method": "memit", "hparams": {"layers": [1, 2], "stats_tokens": 600,
                                                                  "stats_corpus": ["me_ppl_50"], "n_contexts": 2,
                                                                  "context_len": 4, "v_fail_loss": 100,
                                                                  "fact_token": "last"}}],
            "protocol": {"kind": "batch"}}
    out = run_study(parse_config(spec), tmp_path / "batch", progress=False)
    s = ResultsStore(out / "results.sqlite")
    units = s.units("memit")
    assert [u.edits for u in units] == [[0, 1, 2]]
    assert {r["edit_index"] for r in s.rows(unit_id=units[0].id)} == {0, 1, 2}
    s.close()


# ---- reports


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    os.environ["EDITSCOPE_CACHE"] = str(root / "cache")
    cfg = {**STUDY, "reference": "ft-m", "perplexity": {"corpus": "me_ppl_50", "limit": 5},
           "downstream": [{"task": "piqa", "limit": 4}], "probes": [{"suite": "arithmetic", "args": {"n": 3}}]}
    return run_study(parse_config(cfg), root / "run", progress=False)


def test_report_tables_intervals_bold_best_and_mcnemar(finished_run):
    paths = write_report(finished_run)
    md = paths["md"].read_text()
    res = load_results(finished_run)
    from editscope.metrics.edit_metrics import METRICS

    target = next(c for c in res.columns if c.key == "target/answer_hit")
    strong = [r for r in res.final_rows("ft-m-strong") if r["category"] == "target"]
    assert all(r["top1"] for r in strong)  # every target's first token is reached ...
    hits = [bool(METRICS["answer_hit"].fn(r)) for r in strong]  # ... the answer only where no digit follows it
    assert target.cells["ft-m-strong"].value == pytest.approx(sum(hits) / len(hits))
    assert hits == [r["greedy"].strip().isdigit() is False or r["greedy"].strip() == r["target"] for r in strong]
    best = target.best()
    assert f"| {best} | **{target.cells[best].value:.3f} [" in md  # best value in bold, with its interval
    assert any(c.key == "ppl:me_ppl_50" for c in res.columns)
    piqa = next(c for c in res.columns if c.key == "piqa:acc")
    assert piqa.cells["base"].n == 1 and piqa.cells["ft-m"].n == 3  # one value per unit
    assert "p (Holm)" in md and res.tests and all(t.method == "ft-m-strong" for t in res.tests)
    assert "Complete run" in md and "config hash" in md and "## detail" in md
    from editscope.report.formats.render import detail_table

    res.config["metrics"] = ["top1", "unchanged"]  # the study's `metrics:` choose the detail columns
    assert detail_table(res).header == ["method", "category", "n", "top1 (greedy)", "unchanged (greedy)"]
    assert (finished_run / "figures" / "blast_radius.png").stat().st_size > 5000
    assert (finished_run / "figures" / "categories.pdf").exists()


def test_locality_columns_criterion_and_frontier(finished_run, tmp_path):
    from editscope.metrics.edit_metrics import METRICS
    from editscope.report.formats.plots import frontier
    from editscope.report.formats.render import criterion_table
    from editscope.report.data.results import EFFICACY, criterion_rows

    res = load_results(finished_run)
    for m in ["base", *res.methods]:
        rows = [r for r in res.final_rows(m) if r["category"] not in EFFICACY]
        loc = next(c for c in res.columns if c.key == "locality/unchanged").cells[m]
        ans = next(c for c in res.columns if c.key == "locality/answer_unchanged").cells[m]
        assert loc.n == len(rows) and loc.value == pytest.approx(sum(r["unchanged"] for r in rows) / len(rows))
        assert ans.value == pytest.approx(sum(METRICS["answer_unchanged"].fn(r) for r in rows) / len(rows))
        assert ans.value >= loc.value  # an unchanged output keeps its answer
    assert any(t.column == "locality/unchanged" for t in res.tests)
    assert criterion_rows(res) == [] and criterion_table(res) is None  # the study sets no criterion

    # the criterion judges answer-level locality (the headline)
    loc = {m: next(c for c in res.columns if c.key == "locality/answer_unchanged").cells[m] for m in res.methods}
    bar = min(c.value for c in loc.values()) + 1e-9  # only the more local method(s) can clear it
    res.config["criterion"] = {"efficacy": 0.0, "paraphrase": 0.0, "locality": bar}
    rows = {r.method: r for r in criterion_rows(res)}
    for m, c in loc.items():
        assert rows[m].meets is (c.value >= bar)
        assert rows[m].meets_lower is (c.value >= bar and c.low >= bar)
    t = criterion_table(res)
    assert [r[0][0] for r in t.rows] == res.methods and "0.995" not in t.caption
    res.config["criterion"]["efficacy"] = 1.0  # one method reaches the target, the other does not
    target = next(c for c in res.columns if c.key == "target/answer_hit").cells
    assert {r.method for r in criterion_rows(res) if r.meets} <= {m for m in res.methods if target[m].value == 1.0}
    paths = frontier(res, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and paths[0].stat().st_size > 5000


def test_pareto_front():
    from editscope.report.formats.plots import pareto_front

    pts = {"a": (0.9, 0.1), "b": (0.5, 0.5), "c": (0.4, 0.4), "d": (0.1, 0.9), "e": (0.5, 0.2), "f": (0.9, 0.1)}
    assert pareto_front(pts) == ["d", "b", "a", "f"]  # c and e are dominated; ties stay


def test_criterion_is_report_only_and_can_change_on_resume(finished_run, tmp_path):
    from editscope.runner.execute import open_run

    cfg = {**STUDY, "reference": "ft-m", "perplexity": {"corpus": "me_ppl_50", "limit": 5},
           "downstream": [{"task": "piqa", "limit": 4}], "probes": [{"suite": "arithmetic", "args": {"n": 3}}]}
    crit = {**cfg, "criterion": {"locality": 0.9}}
    assert parse_config(cfg).config_hash() == parse_config(crit).config_hash()
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    store = open_run(run, parse_config(crit), resume=True)
    try:
        assert store.meta()["config"]["criterion"] == {"efficacy": 1.0, "paraphrase": 0.5, "locality": 0.9}
    finally:
        store.close()
    assert load_results(run).config["criterion"]["locality"] == 0.9
    with pytest.raises(ConfigError, match="criterion.locality"):
        parse_config({**cfg, "criterion": {"locality": 1.5}})


def test_html_report_renders_in_headless_chromium(finished_run, tmp_path):
    exe = chromium()
    if exe is None:
        required_in_ci("chromium")
    html_path = write_report(finished_run, ("html",))["html"]
    text = html_path.read_text()
    assert "src=\"http" not in text and "src='http" not in text and "data:image/png;base64," in text
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'prof'}"]
    subprocess.run([exe, *flags, f"--screenshot={shot}", "--window-size=1200,1600", html_path.as_uri()],
                   check=True, capture_output=True, timeout=120)
    dom = subprocess.run([exe, *flags, "--dump-dom", html_path.as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    assert 'id="table-main"' in dom and 'id="table-mcnemar"' in dom and "ft-m-strong" in dom
    from PIL import Image

    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert hi - lo > 100  # not blank: text and figures drawn
    hist = img.histogram()
    assert sum(hist[:200]) > 0.01 * img.width * img.height  # a real share of non-white pixels


def test_latex_bundle_has_the_paper_layout_and_compiles(finished_run):
    main = write_report(finished_run, ("latex",))["latex"]
    root = main.parent
    for rel in ("main.tex", "sections/results.tex", "tables/main.tex", "tables/mcnemar.tex", "commands/macros.tex",
                "figures/blast_radius.pdf"):
        assert (root / rel).exists(), rel
    table = (root / "tables" / "main.tex").read_text()
    assert r"\toprule" in table and r"\midrule" in table and r"\bottomrule" in table and r"{\bf " in table
    assert "|" not in table.split(r"\begin{tabular}")[1].split("}")[0]  # no vertical rules
    if shutil.which("pdflatex") is None:
        required_in_ci("pdflatex")
    from editscope.report import compile_latex

    pdf = compile_latex(main)
    assert pdf.read_bytes()[:4] == b"%PDF"


def test_yaml_example_files_validate():
    for path in sorted(Path(__file__).resolve().parents[2].joinpath("examples").glob("*.yaml")):
        cfg = load_config(path)
        assert yaml.safe_load(path.read_text())["name"] == cfg.name


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps lines at the console width


def test_cli_run_dry_run_run_and_report(tmp_path):
    from typer.testing import CliRunner

    from editscope.cli import app

    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({**STUDY, "methods": ["ft-m"], "edits": EDITS[:2]}))
    cli = CliRunner()
    r = cli.invoke(app, ["run", str(study), "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "2 edit(s) x 1 method(s) (0 of them controls) = 2 units" in _flat(r.output) and "estimated total" in _flat(r.output)
    out = tmp_path / "run"
    r = cli.invoke(app, ["run", str(study), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "report.html").exists() and (out / "latex" / "main.tex").exists()
    r = cli.invoke(app, ["run", str(study), "--out", str(out)])
    assert r.exit_code == 2 and "--resume" in _flat(r.output)
    r = cli.invoke(app, ["report", str(out), "--format", "md"])
    assert r.exit_code == 0 and "ft-m" in _flat(r.output) and "Complete" in (out / "report.md").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethods: [rme]\nedits: [{prompt: '2+2=', target_new: '5'}]\n")
    r = cli.invoke(app, ["run", str(bad), "--out", str(tmp_path / "never")])
    assert r.exit_code == 2 and "Did you mean 'rome'" in _flat(r.output)
    assert not (tmp_path / "never").exists()
    r = cli.invoke(app, ["report", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "no results store" in _flat(r.output)


def test_run_on_another_model_is_another_study_with_its_own_store(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from editscope.cli import app

    cfg = parse_config({**STUDY, "model": {"name": "tiny:llama", "revision": "abc123", "dtype": "float32"}})
    assert cfg.on_model("tiny:llama") is cfg
    other = cfg.on_model("tiny:gpt2")
    assert other.name == "tiny-tiny-gpt2" and other.model.name == "tiny:gpt2" and other.model.revision is None
    assert other.config_hash() != cfg.config_hash() and other.methods == cfg.methods
    assert cfg.on_model("/models/gemma-3-270m.Q4_K_M.gguf").name == "tiny-gemma-3-270m.Q4_K_M"
    with pytest.raises(ConfigError, match="--model: empty model name"):
        cfg.on_model(" ")
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({**STUDY, "methods": ["ft-m"], "edits": EDITS[:1]}))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["run", str(study), "--model", "tiny:gpt2", "--no-report"])
    assert r.exit_code == 0, r.output
    assert "model tiny:gpt2" in _flat(r.output) and not (tmp_path / "runs" / "tiny").exists()
    res = load_results(tmp_path / "runs" / "tiny-tiny-gpt2")
    assert res.meta["config"]["model"]["name"] == "tiny:gpt2" and res.meta["name"] == "tiny-tiny-gpt2"
    # the cross-model table of a write-up: both runs side by side, every cell from its own store
    from editscope.report.documents.document import DocumentError, referenced_studies, write_document

    r = CliRunner().invoke(app, ["run", str(study), "--no-report"])
    assert r.exit_code == 0, r.output
    tpl = tmp_path / "doc.md.in"
    tpl.write_text("{{models:tiny,tiny-tiny-gpt2}}\n")
    assert referenced_studies(tpl.read_text()) == ["tiny", "tiny-tiny-gpt2"]
    text = write_document(tmp_path / "runs" / "tiny", tpl, tmp_path / "doc.md").read_text()
    header, _, base, ftm = text.strip().splitlines()
    assert header.startswith("| method | tiny-llama target | tiny-llama paraphrase | tiny-llama locality | tiny-llama ppl |")
    assert "| tiny-gpt2 target |" in header
    llama = load_results(tmp_path / "runs" / "tiny")
    cells = [c.strip() for c in ftm.strip("|").split("|")]
    want = next(c for c in llama.columns if c.key == "target/answer_hit").cells["ft-m"]
    assert cells[0] == "ft-m" and cells[1].startswith(f"{want.value:.3f}")
    gpt2_loc = next(c for c in res.columns if c.key == "locality/answer_unchanged").cells["ft-m"]
    assert cells[7].startswith(f"{gpt2_loc.value:.3f}") and base.startswith("| base | 0.000 | - | 1.000 [")
    tpl.write_text("{{models:tiny}}\n")
    with pytest.raises(DocumentError, match="two or more models"):
        write_document(tmp_path / "runs" / "tiny", tpl, tmp_path / "doc.md")


def test_documents_take_every_number_from_the_run(finished_run, tmp_path):
    from editscope.metrics.edit_metrics import METRICS
    from editscope.report.documents.document import DocumentError, fill, write_document
    from editscope.report.formats.table import fmt_p

    tpl = tmp_path / "study.md.in"
    tpl.write_text("# Result\nconfig {{meta:config_hash}}; strong efficacy {{cell:ft-m-strong:target/top1}} "
                   "(n={{n:ft-m-strong:target/top1}}), far {{value:ft-m:far/answer_unchanged}}; "
                   "{{test:ft-m-strong:far/answer_unchanged}}\n\n{{table:main}}\n\n{{figure:blast_radius}}\n")
    out = write_document(finished_run, tpl, tmp_path / "doc" / "study.md")
    text = out.read_text()
    res = load_results(finished_run)
    far = next(c for c in res.columns if c.key == "far/answer_unchanged").cells["ft-m"]
    test = next(t for t in res.tests if t.method == "ft-m-strong" and t.column == "far/answer_unchanged")
    assert f"config {res.meta['config_hash']};" in text
    assert "strong efficacy 1.000 [" in text and f"far {far.value:.3f};" in text
    assert f"difference {test.diff:+.3f}, p (Holm) {fmt_p(test.p_holm)}" in text
    assert "| ft-m-strong |" in text and "![blast_radius](figures/tiny_blast_radius.png)" in text
    assert (tmp_path / "doc" / "figures" / "tiny_blast_radius.png").exists()
    assert "{{" not in text
    from editscope.report.formats.table import fmt_cell
    from editscope.report.data.results import breakdown, rate_cell

    by_op = fill("{{breakdown:locality:op}}\n{{table:criterion}}", res, str(finished_run))
    cells = breakdown(res, "locality", "op")
    assert set(cells) == {"+", "-", "*"} and by_op.endswith("(none)")  # no criterion in this study
    plus = cells["+"]["ft-m"]
    row = next(line for line in by_op.splitlines() if line.startswith("| ft-m |"))
    assert f" + (n={plus.n}) |" in by_op and row.endswith(f"| {plus.value:.3f} [{plus.low:.3f}, {plus.high:.3f}] |")
    rows = [r for r in res.final_rows("ft-m") if r["category"] not in ("target", "paraphrase") and r["meta"].get("op") == "+"]
    same = [METRICS["answer_unchanged"].fn(r) for r in rows]  # the headline: answer-level
    assert plus.n == len(rows) and plus.value == pytest.approx(sum(same) / len(rows))
    assert fill("{{slice:ft-m:locality:op:+}}", res, str(finished_run)) == f"{plus.value:.3f} [{plus.low:.3f}, {plus.high:.3f}]"
    # where: several conditions at once, any metric; recomputed here from the rows
    b0 = rows[0]["meta"]["b"]
    sub = [r for r in rows if r["meta"]["b"] == b0]
    got = fill(f"{{{{where:ft-m:locality:op=+,b={b0}:says_target}}}}", res, str(finished_run))
    says = sum(bool(r["says_target"]) for r in sub)
    from editscope.stats import wilson_interval

    # three edits: the interval is over edits (cluster bootstrap); where every edit gives the same
    # rate it is Wilson's over the 3 edits
    edits = {r["unit"] for r in sub}
    assert len(edits) == 3 and got.startswith(f"{says / len(sub):.3f} [") and got.endswith(f"(n={len(sub)})")
    if says in (0, len(sub)):
        iv = wilson_interval(round(says / len(sub) * 3), 3)
        assert got == f"{says / len(sub):.3f} [{iv.low:.3f}, {iv.high:.3f}] (n={len(sub)})"
    assert fill("{{where:ft-m:locality:op=+}}", res, str(finished_run)).endswith(f"(n={plus.n})")
    far = rate_cell(res, "ft-m", "far", "answer_unchanged")
    assert fill("{{rate:ft-m:far:answer_unchanged}}", res, str(finished_run)) == f"{fmt_cell(far)} (n={far.n})"
    assert far.n == sum(r["category"] == "far" for r in res.final_rows("ft-m"))
    # any CATEGORY/METRIC works in a cell, not only the report's columns; a paired test off the table says so
    out_far = rate_cell(res, "ft-m", "far", "unchanged")
    assert fill("{{cell:ft-m:far/unchanged}}", res, str(finished_run)) == fmt_cell(out_far)
    assert "p (single test, unadjusted)" in fill("{{test:ft-m-strong:far/unchanged}}", res, str(finished_run))
    for bad, match in [("{{cell:rome:far/unchanged}}", "no method 'rome'"), ("{{value:ft-m:far/top9}}", "no column"),
                       ("{{where:ft-m:locality:op=/}}", "matches"), ("{{where:ft-m:locality:op}}", "write"),
                       ("{{where:rome:locality:op=+}}", "no method 'rome'"),
                       ("{{where:ft-m:locality:op=+:top9}}", "unknown metric"),
                       ("{{rate:ft-m}}", "write"), ("{{rate:ft-m:nocat}}", "no 'nocat' probe"),
                       ("{{slice:ft-m:locality:op:/}}", "no 'locality' probe has op='/'"),
                       ("{{slice:ft-m:locality:op}}", "write"),
                       ("{{breakdown:near:nokey}}", "no 'near' probe has meta key"),
                       ("{{breakdown:near:relation:top9}}", "unknown metric"),
                       ("{{table:nope}}", "unknown table"), ("{{frobnicate}}", "unknown placeholder")]:
        with pytest.raises(DocumentError, match=match):
            fill(bad, res, str(finished_run))


def test_documents_read_companion_studies(finished_run, tmp_path):
    from typer.testing import CliRunner

    from editscope.cli import app
    from editscope.report.documents.document import DocumentError, fill, write_document

    main, companion = tmp_path / "runs" / "main", tmp_path / "runs" / "tiny"
    shutil.copytree(finished_run, main)
    shutil.copytree(finished_run, companion)
    renamed = tmp_path / "elsewhere" / "run"
    shutil.copytree(finished_run, renamed)
    s = ResultsStore(renamed / "results.sqlite")
    s.set_meta(name="not-tiny")
    s.close()
    tpl = tmp_path / "doc.md.in"
    tpl.write_text("own {{cell:ft-m:far/answer_unchanged}}; companion {{from:tiny:cell:ft-m:far/answer_unchanged}} "
                   "of {{from:tiny:meta:name}}\n")
    res = load_results(finished_run)
    own = fill("{{cell:ft-m:far/answer_unchanged}}", res, str(finished_run))
    # found beside the run's folder by default
    text = write_document(main, tpl, tmp_path / "doc" / "a.md").read_text()
    assert text == f"own {own}; companion {own} of tiny\n"
    # or given by name; a folder holding another study, a missing one and a name the template never reads are refused
    assert write_document(main, tpl, tmp_path / "doc" / "b.md", runs={"tiny": str(companion)}).read_text() == text
    for runs, match in [({"tiny": str(renamed)}, "holds the study 'not-tiny', not 'tiny'"),
                        ({"tiny": str(tmp_path / "none")}, "holds no run; pass its folder with --with tiny="),
                        ({"tiny": str(companion), "other": str(companion)}, "--with other: the template has no")]:
        with pytest.raises(DocumentError, match=match):
            write_document(main, tpl, tmp_path / "doc" / "c.md", runs=runs)
    for bad, match in [("{{from:tiny}}", "write"), ("{{from:nope:meta:name}}", "no stored study 'nope'"),
                       ("{{from:tiny:from:tiny:meta:name}}", "cannot nest"),
                       ("{{from:tiny:figure:nope}}", "the stored study 'tiny' has no figure 'nope'"),
                       ("{{from:tiny:cell:rome:far/unchanged}}", "no method 'rome'")]:
        with pytest.raises(DocumentError, match=match):
            fill(bad, res, str(main), others={"tiny": res})
    # a companion's figure is drawn from its own run and copied under its study's name
    figs = tmp_path / "doc" / "figures"
    shown = fill("{{from:tiny:figure:categories}}", res, str(main), figs, others={"tiny": load_results(companion)})
    assert shown == "![categories](figures/tiny_categories.png)"
    assert (figs / "tiny_categories.png").stat().st_size > 1000 and (companion / "figures" / "categories.png").is_file()
    cli = CliRunner()
    r = cli.invoke(app, ["report", str(main), "--format", "md", "--doc", str(tpl), "--doc-out",
                         str(tmp_path / "doc" / "d.md"), "--with", f"tiny={companion}"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "doc" / "d.md").read_text() == text
    r = cli.invoke(app, ["report", str(main), "--format", "md", "--doc", str(tpl), "--with", "tiny"])
    assert r.exit_code == 2 and "STUDY=RUN_DIR" in _flat(r.output)


def test_export_and_unpack_keep_every_result(finished_run, tmp_path):
    from typer.testing import CliRunner

    from editscope.cli import app

    cli = CliRunner()
    archive = tmp_path / "run.sqlite.xz"
    r = cli.invoke(app, ["export", str(finished_run), str(archive)])
    assert r.exit_code == 0, r.output
    assert archive.stat().st_size < (finished_run / "results.sqlite").stat().st_size / 3
    r = cli.invoke(app, ["unpack", str(archive), str(tmp_path / "back")])
    assert r.exit_code == 0, r.output
    assert _rows(tmp_path / "back") == _rows(finished_run)
    assert ResultsStore(tmp_path / "back" / "results.sqlite").meta() == ResultsStore(finished_run / "results.sqlite").meta()
    # refusals: an occupied folder, a file that is not an archive, a wrong archive name
    r = cli.invoke(app, ["unpack", str(archive), str(tmp_path / "back")])
    assert r.exit_code == 2 and "holds other files" in _flat(r.output)
    junk = tmp_path / "junk.sqlite.xz"
    junk.write_bytes(b"not xz at all")
    r = cli.invoke(app, ["unpack", str(junk), str(tmp_path / "j")])
    assert r.exit_code != 0 and "not an xz archive" in _flat(r.output)
    assert not (tmp_path / "j" / "results.sqlite").exists()
    r = cli.invoke(app, ["export", str(finished_run), str(tmp_path / "run.zip")])
    assert r.exit_code != 0 and "must end in .sqlite.xz" in _flat(r.output)


def test_the_lean_store_keeps_each_probe_once_and_reads_as_the_first_format(tmp_path):
    """Format 2 keeps prompts, targets and base outputs once per probe; its rows read exactly as the
    committed format-1 archive's, and it is smaller."""
    from editscope.runner.store import STORE_FORMAT, convert_store, unpack_archive

    archive = Path(__file__).resolve().parents[2] / "docs" / "studies" / "runs" / "two-plus-two-strength.sqlite.xz"
    old = unpack_archive(archive, tmp_path / "v1") / "results.sqlite"
    new = convert_store(old, tmp_path / "v2.sqlite")
    a, b = ResultsStore(old), ResultsStore(new)
    assert a.format == "editscope-results-1" and b.format == STORE_FORMAT == "editscope-results-2"
    assert b.rows() == a.rows() and b.scalars() == a.scalars() and b.events() == a.events()
    from dataclasses import astuple

    assert [astuple(u)[1:] for u in b.units()] == [astuple(u)[1:] for u in a.units()] and b.meta() == {**a.meta(), "format": STORE_FORMAT}
    n_probes = b.db.execute("SELECT COUNT(*) FROM probes").fetchone()[0]
    # one record per distinct probe content: at least one per (set, index), a few more where units
    # appended later carry base outputs measured again (float noise across runs), far fewer than rows
    distinct = len({(r["probe_set"], r["index"]) for r in a.rows()})
    assert distinct <= n_probes <= 1.1 * distinct and n_probes < len(a.rows()) / 5
    for s in (a, b):
        s.db.execute("VACUUM")
        s.close()
    assert new.stat().st_size < 0.8 * old.stat().st_size
    with pytest.raises(StoreError, match="exists"):
        convert_store(old, new)


def test_a_store_written_before_the_token_columns_gains_them_and_reads_none(tmp_path):
    """Stores of either format written before ``token_acc``/``token_agree`` existed are opened,
    read (None there) and written to; format 2's view is rebuilt with the new columns."""
    from editscope.runner.store import FILENAME

    row = {"index": 0, "category": "near", "prompt": "p", "target": "t", "meta": {}, "logprob": -1.0,
           "n_tokens": 1, "top1": True, "greedy": " t", "base_greedy": " t", "token_acc": 0.5, "token_agree": 1.0}
    for fmt, table in (("editscope-results-2", "measures"), ("editscope-results-1", "rows")):
        path = tmp_path / fmt / FILENAME
        s = ResultsStore(path, create=True)
        if fmt != s.format:  # make a first-format store
            s.close()
            path.unlink()
            db = sqlite3.connect(path)
            db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
            db.execute("INSERT INTO meta VALUES ('format', ?)", (json.dumps(fmt),))
            db.commit()
            db.close()
            s = ResultsStore(path)
        s.add_unit("base", "base", 0, [], "done", rows={"p": [row]})
        s.close()
        db = sqlite3.connect(path)  # as an older version left it: no token columns
        if table == "measures":
            db.execute("DROP VIEW rows")
        db.execute(f"ALTER TABLE {table} DROP COLUMN token_acc")
        db.execute(f"ALTER TABLE {table} DROP COLUMN token_agree")
        db.commit()
        db.close()
        s = ResultsStore(path)
        (old,) = s.rows()
        assert old["token_acc"] is None and old["token_agree"] is None and old["logprob"] == -1.0
        s.add_unit("m", "edit-0000", 0, [0], "done", rows={"p": [row]})
        new = s.rows(method="m")[0]
        assert (new["token_acc"], new["token_agree"]) == (0.5, 1.0), fmt
        s.close()


def test_fluency_is_measured_on_each_units_edit_prompts(tmp_path):
    """``fluency:`` stores KnowEdit's n-gram entropy per unit: the base over the study's edit
    prompts, an edited unit over its own edit's prompt (recomputed here by hand)."""
    from editscope.metrics.fluency import ngram_entropy
    from editscope.runner.prepare import load_study_model
    from editscope.scoring import greedy_continuations

    cfg = parse_config({**STUDY, "methods": ["ft-m"], "edits": EDITS[:2], "fluency": {"max_new_tokens": 5}})
    run_study(cfg, tmp_path / "run")
    s = ResultsStore(tmp_path / "run" / "results.sqlite")
    flu = {(x["method"], x["unit"]): x for x in s.scalars() if x["name"] == "fluency:ngram_entropy"}
    s.close()
    assert set(flu) == {("base", "base"), ("ft-m", "edit-0000"), ("ft-m", "edit-0001")}
    assert flu[("base", "base")]["detail"]["prompts"] == 2 and flu[("ft-m", "edit-0000")]["detail"]["prompts"] == 1
    m = load_study_model(cfg)
    texts = [p + g.text for p, g in zip(["2+2=", "3+1="], greedy_continuations(m, ["2+2=", "3+1="], 5))]
    assert flu[("base", "base")]["value"] == pytest.approx(sum(ngram_entropy(t) for t in texts) / 2)


def test_a_one_at_a_time_method_applies_a_cases_chained_requests_and_measures_them_together(tmp_path):
    """An MQuAKE case (4 chained rewrites) under ROME (one request per call): the unit applies them
    one after another, its anatomy is the change of all four (weights now minus before the first),
    and the report's MQuAKE table reads the unit."""
    from editscope.report.data.results import load_results
    from editscope.report.formats.render import mquake_table

    hp = {"stats_tokens": 600, "stats_corpus": ["me_ppl_50"], "n_contexts": 2, "context_len": 4,
          "fact_token": "last", "v_lr": 1.0, "v_steps": 5, "v_fail_loss": 100.0}
    cfg = parse_config({"name": "mq", "model": "tiny:llama", "methods": [{"method": "rome", "hparams": hp}],
                        "edits": [{"dataset": "mquake", "limit": 1}]})
    run_study(cfg, tmp_path / "run", progress=False)
    s = ResultsStore(tmp_path / "run" / "results.sqlite")
    (unit,) = s.units(method="rome")
    fro = {x["name"]: x["value"] for x in s.scalars() if x["method"] == "rome"}
    s.close()
    assert unit.status == "done" and unit.edits == [0] and fro["delta:fro"] > 0
    t = mquake_table(load_results(tmp_path / "run"))
    assert [r[0][0] for r in t.rows] == ["base", "rome"]


def test_a_new_store_appears_whole_to_a_reader_polling_for_it(tmp_path):
    """A store is built under a private name and linked into place: a reader that opens it as soon
    as the file exists (``editscope status`` on a starting run) never finds an empty or format-less
    file, and the creator leaves no temporary file behind."""
    import subprocess
    import sys

    from editscope.runner.store import FILENAME

    paths = [tmp_path / f"r{i}" / FILENAME for i in range(20)]
    script = ("import sys; from editscope.runner.store import ResultsStore\n"
              "for p in sys.argv[1:]: ResultsStore(p, create=True).close()")
    maker = subprocess.Popen([sys.executable, "-c", script, *map(str, paths)])
    seen = set()
    while len(seen) < len(paths):
        for p in paths:
            if p not in seen and p.exists():
                ResultsStore(p).close()  # raises StoreError on a half-made file
                seen.add(p)
        assert maker.poll() in (None, 0)
    assert maker.wait(timeout=60) == 0
    assert sorted(q.name for q in tmp_path.rglob("*") if q.is_file() and q.suffix == ".new") == []


def test_an_edit_refused_as_a_no_op_is_left_out_of_every_number(tmp_path):
    """Its unit is stored as failed with the base model's rows, which would count as a success:
    the report leaves it out (and keeps an edit that was attempted and failed, as not edited)."""
    from editscope.models import tiny_model
    from editscope.report.data.results import load_results, rate_cell
    from editscope.scoring import greedy_continuations

    first = greedy_continuations(tiny_model("llama", seed=0, num_hidden_layers=4), ["7+8="], 1,
                                 stop_at_eos=False)[0].text  # the study's model
    assert first.strip(), "the tiny model's first greedy token should be visible text"
    noop = {"prompt": "7+8=", "target_new": first.strip(), "subject": "7+8",
            "sep": first[: len(first) - len(first.lstrip())]}
    cfg = parse_config({**STUDY, "methods": ["ft-m"], "edits": [EDITS[0], noop]})
    out = run_study(cfg, tmp_path / "run", progress=False)
    s = ResultsStore(out / "results.sqlite")
    (failed,) = [u for u in s.units("ft-m") if u.status == "failed"]
    assert "is a no-op" in failed.info["error"] and s.rows(unit_id=failed.id)  # stored, with base rows
    s.close()
    res = load_results(out)
    units = set(res.frame.df.loc[res.frame.df["method"] == "ft-m", "unit"])
    assert units == {"edit-0000"}
    assert rate_cell(res, "ft-m", "target").n == 1
