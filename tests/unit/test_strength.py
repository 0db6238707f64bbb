"""Matched strength in a study: `strength: {p: ...}` per method, the achieved level stored per unit,
units that miss it reported and left out of every aggregate; bad levels refused at parse time."""

import pytest

from editscope.report.analyses.attribution import pairwise_tests, strength_level
from editscope.report.formats.render import pairwise_table, strength_units_table
from editscope.report.data.results import load_results
from editscope.runner import parse_config, run_study

pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py

STUDY = {
    "name": "strength", "model": "tiny:llama", "seed": 0,
    "methods": [{"method": "ft", "label": "ft-p", "hparams": {"lr": 1e-2, "steps": 40}, "strength": {"p": 0.1}},
                # the tiny random model's P(target) saturates near 0.5: this level is out of reach
                {"method": "ft", "label": "ft-high", "hparams": {"lr": 1e-2, "steps": 40}, "strength": {"p": 0.95}}],
    "edits": [{"prompt": "The capital of France is", "target_new": "Rome"}],
    "probes": ["facts"],
}


def test_units_at_matched_strength_store_their_level_and_misses_are_left_out(tmp_path):
    run = run_study(parse_config(STUDY), tmp_path / "run", progress=False)
    res = load_results(run)
    info = {u.method: u.info for u in res.strength_units}
    assert info["ft-p"]["strength_reached"] and abs(info["ft-p"]["p_target"] - 0.1) <= 0.01
    assert info["ft-p"]["strength_scale"] < 1 and info["ft-p"]["update_norm"] > 0
    assert not info["ft-high"]["strength_reached"] and info["ft-high"]["p_target"] < 0.95
    df = res.frame.df
    assert (df["method"] == "ft-p").any() and not (df["method"] == "ft-high").any()  # never averaged in
    t = strength_units_table(res)
    assert [r[0][0] for r in t.rows] == ["ft-p", "ft-high"] and t.rows[1][-1] == ("NO", True)
    assert "1 of 2 did not reach it" in t.caption


@pytest.mark.parametrize("patch, match", [
    ({"strength": {"p": 1.5}}, r"methods\[0\]\.strength\.p: .*strictly between 0 and 1"),
    ({"strength": {"p": 0}}, r"strictly between 0 and 1"),
    ({"method": "grace", "hparams": {}, "strength": {"p": 0.5}}, "weight-delta methods"),
])
def test_bad_strength_settings_are_refused_when_the_config_is_read(patch, match):
    cfg = {**STUDY, "methods": [{**STUDY["methods"][0], **patch}]}
    with pytest.raises(Exception, match=match):
        parse_config(cfg)


def test_methods_at_matched_strength_are_paired_only_at_the_same_level(tmp_path):
    hp = {"lr": 1e-2, "steps": 40}
    cfg = {**STUDY, "methods": [{"method": "ft", "label": "ft-a", "hparams": hp, "strength": {"p": 0.1}},
                                {"method": "ft-m", "label": "ftm-a", "hparams": hp, "strength": {"p": 0.1}},
                                {"method": "ft", "label": "ft-b", "hparams": hp, "strength": {"p": 0.2}},
                                {"method": "ft", "label": "ft-default", "hparams": hp}]}
    res = load_results(run_study(parse_config(cfg), tmp_path / "run", progress=False))
    assert [strength_level(res, m) for m in ("ft-a", "ftm-a", "ft-b", "ft-default")] == [0.1, 0.1, 0.2, None]
    reached = {u.method for u in res.strength_units if u.info["strength_reached"]}
    assert {"ft-a", "ftm-a"} <= reached
    pairs = [t.method for t in pairwise_tests(res)]
    assert pairs == ["ft-a vs ftm-a"]  # ft-b (0.2) and ft-default have no partner at their level
    t = pairwise_table(res)
    assert "paired only with methods run to the same level" in t.caption


def test_a_placebo_matched_to_a_strength_unit_matches_its_scaled_delta(tmp_path):
    cfg = {**STUDY, "methods": [STUDY["methods"][0], {"method": "placebo", "match": "ft-p"}]}
    res = load_results(run_study(parse_config(cfg), tmp_path / "run", progress=False))
    edit = next(u for u in res.units if u.method == "ft-p")
    placebo = next(u for u in res.units if u.method == "placebo-ft-p")
    assert edit.info["strength_scale"] < 1  # scaled down to P(target) 0.1
    assert placebo.info["matched_norm"] == pytest.approx(edit.info["update_norm"], rel=1e-4)
