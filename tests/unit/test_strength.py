"""Matched strength in a study: `strength: {p: ...}` per method, the achieved level stored per unit,
units that miss it reported and left out of every aggregate; bad levels refused at parse time."""

import pytest

from editscope.report.render import strength_units_table
from editscope.report.results import load_results
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
