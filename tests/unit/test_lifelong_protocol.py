"""The lifelong protocol: a sequential chain applying batches of edits, each step scored on its own
edits right after it and every edit after the last step (the AlphaEdit protocol's two readouts,
labelled as such), general ability every few steps (tiny models)."""

import json

import pytest

from editscope.report.analyses.lifelong import lifelong_table, readout_cell, readout_index
from editscope.report.data.results import load_results
from editscope.runner import ConfigError, build_plan, parse_config, run_study

EDITS = [{"prompt": f"{a}+{b}=", "target_new": f"q{a}{b}x", "subject": f"{a}+{b}"}
         for a, b in [(2, 2), (3, 1), (1, 2), (2, 3), (3, 3)]]
STUDY = {
    "name": "tiny-lifelong", "model": "tiny:llama", "seed": 0,
    "methods": [{"method": "ft-m", "hparams": {"lr": 0.05, "steps": 30}}],
    "edits": EDITS,
    "probes": [{"suite": "arithmetic", "args": {"n": 3, "paraphrases": False}}],
    "protocol": {"kind": "sequential", "batch_size": 2, "score_on": "batch", "guard": "off"},
}


def test_a_batched_chain_lays_out_steps_and_scores_each_on_its_own_edits():
    plan = build_plan(parse_config({**STUDY, "protocol": {**STUDY["protocol"], "general_every": 2}}))
    units = plan.units_of("ft-m")
    assert [u.edits for u in units] == [(0, 1), (2, 3), (4,)]
    assert [u.unit for u in units] == ["step-0001", "step-0002", "step-0003"]
    assert [u.general for u in units] == [False, True, True]  # every 2 steps, and after the last
    edits_of = lambda p, u: sorted({i for i, _ in p.eval_sets(u).values() if i is not None})  # noqa: E731
    assert edits_of(plan, units[0]) == [0, 1] and edits_of(plan, units[1]) == [2, 3]
    assert edits_of(plan, units[2]) == [0, 1, 2, 3, 4]  # after all edits
    tracked = build_plan(parse_config({**STUDY, "protocol": {**STUDY["protocol"], "track_first": 1}}))
    assert [edits_of(tracked, u) for u in tracked.units_of("ft-m")] == [[0, 1], [0, 2, 3], [0, 1, 2, 3, 4]]
    so_far = build_plan(parse_config({**STUDY, "protocol": {**STUDY["protocol"], "score_on": "so_far"}}))
    assert [edits_of(so_far, u) for u in so_far.units_of("ft-m")] == [[0, 1], [0, 1, 2, 3], [0, 1, 2, 3, 4]]


def test_one_edit_per_step_is_the_sequential_protocol_as_before():
    seq = {**STUDY, "protocol": {"kind": "sequential", "guard": "off"}}
    units = build_plan(parse_config(seq)).units_of("ft-m")
    assert [u.edits for u in units] == [(i,) for i in range(5)] and all(u.general for u in units)
    dumped = json.dumps(parse_config(seq).model_dump(mode="json"))
    assert parse_config(seq).config_hash() == parse_config(json.loads(dumped)).config_hash()
    assert parse_config({**seq, "protocol": {**seq["protocol"], "score_on": "so_far"}}).config_hash() \
        != parse_config(seq).config_hash()  # set: part of what was asked


@pytest.mark.parametrize("protocol, word", [
    ({"kind": "single", "batch_size": 2}, "batch_size applies"),
    ({"kind": "batch", "score_on": "batch"}, "score_on, general_every and track_first apply"),
    ({"kind": "single", "track_first": 3}, "track_first apply"),
    ({"kind": "sequential", "score_on": "later"}, "score_on"),
    ({"kind": "sequential", "general_every": 0}, "general_every"),
])
def test_bad_lifelong_settings_are_refused_naming_the_field(protocol, word):
    with pytest.raises(ConfigError, match=word):
        parse_config({**STUDY, "protocol": protocol})


def test_both_readouts_of_a_stored_chain_are_labelled_and_cover_every_edit(tmp_path):
    out = run_study(parse_config(STUDY), tmp_path / "run", progress=False)
    res = load_results(out)
    df = res.frame.df
    after = readout_index(res, "ft-m", "after-batch")
    pairs = set(zip(df.loc[after, "unit"], df.loc[after, "edit_index"].astype(int)))
    assert {e for _, e in pairs} == set(range(5))  # every edit, right after its own step
    assert all((u, e) in {("step-0001", 0), ("step-0001", 1), ("step-0002", 2), ("step-0002", 3),
                          ("step-0003", 4)} for u, e in pairs)
    final = readout_index(res, "ft-m", "after-all")
    assert set(df.loc[final, "unit"]) == {"step-0003"} and set(df.loc[final, "edit_index"].astype(int)) == set(range(5))
    now, later = readout_cell(res, "ft-m", "after-batch", "target"), readout_cell(res, "ft-m", "after-all", "target")
    assert now is not None and later is not None and now.n == later.n == 5
    t = lifelong_table(res)
    assert t is not None and t.rows[0][0][0] == "ft-m"
    assert "efficacy: right after its batch" in t.header and "specificity: after all edits" in t.header
    with pytest.raises(ValueError, match="readout"):
        readout_index(res, "ft-m", "sometime")
    # per-tensor weight norms along the chain, with the base's (norm growth tracks collapse)
    from editscope.runner import ResultsStore

    s = ResultsStore(out / "results.sqlite")
    norms = [(r["value"], r["detail"]) for r in s.scalars() if r["name"] == "weight_norm:fro"]
    s.close()
    assert len(norms) == 3 and all(set(d["now"]) == set(d["base"]) for _, d in norms)
    assert all(d["now"] != d["base"] for _, d in norms)


def test_an_unquoted_yaml_off_is_the_guard_off():
    import yaml

    cfg = parse_config({**STUDY, "protocol": yaml.safe_load("{kind: sequential, guard: off}")})
    assert cfg.protocol.guard == "off"


def test_a_stopped_batched_chain_resumes_to_the_rows_of_an_uninterrupted_one(tmp_path):
    """The chain stops after its first batch (as a kill between steps would leave it); the resumed run
    re-applies that batch (checking it reproduces the stored state) and ends with the same rows."""
    from editscope.runner import ResultsStore

    def rows(out):
        s = ResultsStore(out / "results.sqlite")
        try:
            return sorted((r["unit"], r["probe_set"], r["index"], r["greedy"], r["unchanged"]) for r in s.rows())
        finally:
            s.close()

    cfg = parse_config(STUDY)
    full = run_study(cfg, tmp_path / "full", progress=False)
    part = run_study(cfg, tmp_path / "part", progress=False, max_units=2)  # base and the first step
    s = ResultsStore(part / "results.sqlite")
    assert [u.unit for u in s.units("ft-m")] == ["step-0001"]
    s.close()
    run_study(cfg, part, resume=True, progress=False)
    assert rows(part) == rows(full)
