"""Symmetric unrelated-edit controls: each unrelated edit measured on its own neighbourhood, the
unpaired excess over edits and draws, and a stored study repaired on resume (tiny models)."""

import numpy as np
import pytest

from editscope.report.analyses import attribution
from editscope.report.analyses.attribution import excess, excess_rows, failed_controls
from editscope.report.formats.render import excess_table
from editscope.report.data.results import LOCALITY, is_locality, load_results
from editscope.runner import ResultsStore, build_plan, parse_config, run_study
from editscope.runner.config import ControlsSpec
from editscope.stats import symmetric_excess

STUDY = {
    "name": "tiny-symmetric",
    "model": "tiny:llama",
    "seed": 0,
    "methods": [{"method": "ft-m", "hparams": {"lr": 0.05, "steps": 30}}],
    "edits": [{"prompt": "2+2=", "target_new": "5", "subject": "2+2", "target_true": "4"},
              {"prompt": "3+1=", "target_new": "7", "subject": "3+1", "target_true": "4"}],
    "probes": [{"suite": "arithmetic", "args": {"n": 3, "paraphrases": False}}, "facts"],
    "controls": {"unrelated": 2},
}


# ---------------------------------------------------------------------------------------------
# the statistic


def test_symmetric_excess_hand_computed_value_and_rates():
    m = [[1, 0, 0, 0], [1, 1, 0, 0]]  # rates 0.25, 0.5
    c = [[[0, 0, 1], [0, 0, 0, 0, 0, 0]], [[1, 0], [0, 0]]]  # per edit: mean(1/3, 0), mean(1/2, 0)
    r = symmetric_excess(m, c, n_resamples=500, seed=1)
    assert r.method_rate == pytest.approx(0.375)
    assert r.control_rate == pytest.approx((1 / 6 + 1 / 4) / 2)
    assert r.value == pytest.approx(0.375 - (1 / 6 + 1 / 4) / 2)
    assert (r.n, r.n_clusters, r.draws, r.method) == (8, 2, 2, "unpaired-bootstrap")
    assert r.low <= r.value <= r.high


def test_symmetric_excess_constant_rates_give_a_point_interval():
    # every edit and draw has the same rates: resampling edits and draws cannot move the excess
    m = [[1, 0], [0, 1], [1, 0]]
    c = [[[0, 0, 0, 0]] * 3] * 3
    r = symmetric_excess(m, c, n_resamples=300)
    assert r.value == r.low == r.high == pytest.approx(0.5)
    assert r.pvalue < 0.01 and r.p_equivalence > 0.5


def test_symmetric_excess_one_edit_resamples_probes_as_binomials():
    rng = np.random.default_rng(0)
    m = [rng.random(400) < 0.30]
    c = [[rng.random(400) < 0.10 for _ in range(10)]]
    r = symmetric_excess(m, c, n_resamples=4000, seed=0)
    p_m, p_c = m[0].mean(), np.mean([d.mean() for d in c[0]])
    # the method side dominates: its binomial standard error sets the width (the control mean is over 10 draws)
    se = np.sqrt(p_m * (1 - p_m) / 400 + p_c * (1 - p_c) / 4000)
    assert (r.high - r.low) == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert r.low > 0.1 and r.pvalue < 0.001


def test_symmetric_excess_equivalent_when_the_same_process():
    rng = np.random.default_rng(3)
    m = [rng.random(3000) < 0.05 for _ in range(8)]
    c = [[rng.random(3000) < 0.05 for _ in range(10)] for _ in range(8)]
    r = symmetric_excess(m, c, n_resamples=2000, margin=0.02)
    assert abs(r.value) < 0.01 and r.p_equivalence < 0.05 and r.pvalue > 0.05


@pytest.mark.parametrize("m, c, word", [
    ([], [], "at least one edit"),
    ([[1, 0]], [], "one entry per edit"),
    ([[]], [[[1]]], "empty"),
    ([[1]], [[]], "at least one draw"),
    ([[1]], [[[]]], "at least one draw"),
])
def test_symmetric_excess_bad_input(m, c, word):
    with pytest.raises(ValueError, match=word):
        symmetric_excess(m, c)


# ---------------------------------------------------------------------------------------------
# the plan and a real (tiny) study


def test_unrelated_edits_get_their_own_neighbourhood_in_the_plan():
    plan = build_plan(parse_config(STUDY))
    sets = plan.control_sets
    assert len(sets) == 4  # 2 edits x 2 unrelated edits
    for name, (_, ps) in sets.items():
        cats = [p.category for p in ps]
        assert cats[0] == "control-target"
        assert {"control-near", "control-far"} <= set(cats)  # built around the unrelated edit itself
        edit = plan.edits[int(name.split("#e")[1].split("-")[0])].requests[0]
        near = [p for p in ps if p.category == "control-near"]
        assert all(p.meta["relation"] for p in near)  # related to the unrelated edit's own query
        study_near = {p.prompt for _, s in plan.eval_sets(plan.units[1]).items() for p in s[1] if p.category == "near"}
        assert {p.prompt for p in near} != study_near and edit.prompt != ps[0].prompt
        assert not any(is_locality(c) for c in cats)  # never pooled into locality
    off = build_plan(parse_config({**STUDY, "controls": {"unrelated": 2, "own_probes": False}}))
    assert all(len(ps) == 1 for _, ps in off.control_sets.values())
    # the control-target probe is the same either way (stored studies keep its digest)
    assert [ps[0] for _, ps in off.control_sets.values()] == [ps[0] for _, ps in sets.values()]


def test_own_probes_unset_keeps_the_config_hash():
    base = parse_config(STUDY)
    explicit = parse_config({**STUDY, "controls": {"unrelated": 2, "own_probes": True}})
    assert base.config_hash() == parse_config({**STUDY}).config_hash()
    assert explicit.config_hash() != base.config_hash()  # set: part of what was asked


@pytest.fixture(scope="module")
def symmetric_run(tmp_path_factory):
    return run_study(parse_config(STUDY), tmp_path_factory.mktemp("sym") / "run", progress=False)


def test_symmetric_excess_leaves_out_control_edits_that_did_not_take(symmetric_run):
    res = load_results(symmetric_run)
    # the tiny model's unrelated edits answer "512" for "5", "99" for "9": none takes, none is compared
    failed = failed_controls(res, "unrelated-ft-m")
    assert failed == {"edit-0000-u00", "edit-0000-u01", "edit-0001-u00", "edit-0001-u01"}
    assert excess(res, "ft-m", "unrelated-own", "near") is None
    assert excess_table(res, "unrelated-own") is None
    assert attribution.control_take(res, "unrelated-ft-m") == attribution.ControlTake(units=4, took=0, refused=0,
                                                                                        missed=4)


def _all_taken(monkeypatch):
    monkeypatch.setattr(attribution, "failed_controls", lambda res, control: set())


def test_symmetric_excess_of_a_stored_study_and_its_table(symmetric_run, monkeypatch):
    _all_taken(monkeypatch)
    res = load_results(symmetric_run)
    df = res.frame.df
    own = df[df["category"].str.startswith("control-") & (df["category"] != "control-target")]
    assert set(own["method"]) == {"base", "unrelated-ft-m"}
    e = excess(res, "ft-m", "unrelated-own", "near")
    assert e is not None and e.method == "unpaired-bootstrap" and e.n_clusters == 2
    # by hand: the method's changed near rate per edit minus its unrelated edits' own near rates
    changed = 1 - res.frame.metric("answer_unchanged")
    mine = df[(df["method"] == "ft-m") & (df["category"] == "near")]
    theirs = df[(df["method"] == "unrelated-ft-m") & (df["category"] == "control-near")]
    m_rate = changed[mine.index].groupby(mine["root"]).mean().mean()
    c_rate = changed[theirs.index].groupby([theirs["root"], theirs["unit"]]).mean().groupby(level=0).mean().mean()
    assert e.method_rate == pytest.approx(m_rate) and e.control_rate == pytest.approx(c_rate)
    # the pooled cell reads the categories both sides have (the written facts have no "own" counterpart
    # around an unrelated edit); the paired excess is untouched by own probes
    assert (df.loc[res.final_index("ft-m"), "category"] == "general").any()
    pooled = excess(res, "ft-m", "unrelated-own", LOCALITY)
    assert pooled is not None and pooled.n == len(mine) + len(df[(df["method"] == "ft-m") & (df["category"] == "far")])
    paired = excess(res, "ft-m", "unrelated", LOCALITY)
    assert paired.method == "two-level-bootstrap"
    assert not res.frame.df.loc[res.final_index("ft-m"), "category"].str.startswith("control-").any()
    rows = excess_rows(res, "unrelated-own")
    assert [r.method for r in rows] == ["ft-m"]
    t = excess_table(res, "unrelated-own")
    assert t is not None and t.name == "excess-unrelated-own" and "own neighbourhood" in t.caption
    # the main table has no column for the controls' own neighbourhood
    assert not any(c.key.startswith("control-near") for c in res.columns)
    # on the probes the base model knows (here: every other probe, both sides), by hand again
    known = (df["index"] % 2 == 0).astype(float)
    res.frame.__dict__.setdefault("_metric", {})["base_known"] = known
    k = excess(res, "ft-m", "unrelated-own", "near+known")
    mine_k, theirs_k = mine[mine["index"] % 2 == 0], theirs[theirs["index"] % 2 == 0]
    assert k.method_rate == pytest.approx(changed[mine_k.index].groupby(mine_k["root"]).mean().mean())
    assert k.control_rate == pytest.approx(
        changed[theirs_k.index].groupby([theirs_k["root"], theirs_k["unit"]]).mean().groupby(level=0).mean().mean())


def test_a_control_that_did_not_take_drops_only_its_own_edits_draw(symmetric_run, monkeypatch):
    """With several study edits, an unrelated edit that did not take leaves out that edit's draw,
    not the same-numbered draw of every edit (draws are not matched across edits)."""
    monkeypatch.setattr(attribution, "failed_controls", lambda res, control: {"edit-0001-u01"})
    res = load_results(symmetric_run)
    df = res.frame.df
    e = excess(res, "ft-m", "unrelated")
    assert e is not None and e.draws == 2
    changed = 1 - res.frame.metric("answer_unchanged")
    loc = df["category"].map(is_locality).astype(bool)
    theirs = df[(df["method"] == "unrelated-ft-m") & loc & (df["unit"] != "edit-0001-u01")]
    mine = df[(df["method"] == "ft-m") & loc]
    # each probe's control rate: the mean over its edit's draws that took
    per_probe = changed[theirs.index].groupby([theirs["root"], theirs["probe_set"], theirs["index"]]).mean()
    keys = list(zip(mine["root"], mine["probe_set"], mine["index"]))
    assert e.control_rate == pytest.approx(float(np.mean([per_probe[k] for k in keys])))
    assert e.method_rate == pytest.approx(float(changed[mine.index].mean()))


def test_a_study_stored_before_own_probes_is_repaired_on_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(ControlsSpec, "measures_own", property(lambda self: False))
    run_study(parse_config(STUDY), out, progress=False)
    res = load_results(out)
    assert excess(res, "ft-m", "unrelated-own", "near") is None  # nothing to compare yet
    before = {u.unit: u.fingerprint for u in ResultsStore(out / "results.sqlite").units("unrelated-ft-m")}
    monkeypatch.undo()
    run_study(parse_config(STUDY), out, resume=True, progress=False)
    _all_taken(monkeypatch)
    store = ResultsStore(out / "results.sqlite")
    after = {u.unit: u.fingerprint for u in store.units("unrelated-ft-m")}
    assert after == before  # re-measured in place, not recomputed
    assert any(e["kind"] == "reevaluated" for e in store.events())
    store.close()
    res = load_results(out)
    e = excess(res, "ft-m", "unrelated-own", "near")
    assert e is not None and e.n_clusters == 2


def test_unrelated_edits_drawn_by_an_older_rule_are_computed_again_whole(tmp_path, monkeypatch):
    """A control whose drawn edit changed must not keep rows measured under the old edit: a
    re-applied other edit that changes little could pass the reproduction check."""
    import dataclasses

    import editscope.control_draws as controls

    real = controls._arith_edits

    def older_rule(*a, **kw):  # the same prompts, other wrong answers
        return [dataclasses.replace(r, target_new=str((int(r.target_new) + 1) % 10)) for r in real(*a, **kw)]

    out = tmp_path / "run"
    monkeypatch.setattr(controls, "_arith_edits", older_rule)
    run_study(parse_config(STUDY), out, progress=False)
    store = ResultsStore(out / "results.sqlite")
    before = {u.unit: (u.id, u.fingerprint) for u in store.units("unrelated-ft-m")}
    old_targets = {r["target"] for r in store.rows(method="unrelated-ft-m") if r["category"] == "control-target"}
    store.close()
    monkeypatch.undo()
    run_study(parse_config(STUDY), out, resume=True, progress=False)
    store = ResultsStore(out / "results.sqlite")
    after = {u.unit: (u.id, u.fingerprint) for u in store.units("unrelated-ft-m")}
    rows = store.rows(method="unrelated-ft-m")
    assert after.keys() == before.keys()
    assert all(after[k][1] != before[k][1] for k in after)  # other edits, other weights: computed again
    new_targets = {r["target"] for r in rows if r["category"] == "control-target"}
    assert new_targets and not new_targets & old_targets
    assert not [e for e in store.events() if e["kind"] == "reevaluated" and "unrelated" in str(e)]
    assert len(rows) == len({(r["unit"], r["probe_set"], r["index"]) for r in rows})  # nothing doubled
    store.close()
