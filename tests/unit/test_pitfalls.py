"""The pitfalls survey's measures: hand-computed values, and the round-edit and conflict drivers."""

import math

import pytest
from scipy.spatial.distance import jensenshannon

import editscope as es
from editscope.analysis.pitfalls import (
    conflict_magnitude,
    conflict_pair,
    conflict_score,
    failure_rate,
    ignore_rate,
    js_divergence,
    object_probs,
    round_edit,
)
from editscope.models import tiny_model

pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


def test_conflict_score_and_magnitude_by_hand():
    assert conflict_score([0.6, 0.2], [0.3, 0.5]) == 0.5
    assert conflict_magnitude([0.8, 0.5], [0.2, 0.5]) == pytest.approx((0.75 + 0.0) / 2)
    assert conflict_magnitude([0.5], [0.6]) == pytest.approx(-0.2)  # the old fact gained: negative
    with pytest.raises(ValueError, match="did not take"):
        conflict_magnitude([0.0], [0.1])
    with pytest.raises(ValueError, match="2 pairs"):
        conflict_score([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        conflict_score([1.5], [0.1])


def test_js_divergence_ignore_and_failure_rates_by_hand():
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2))
    assert js_divergence([0.3, 0.7], [0.3, 0.7]) == 0.0
    # m = (0.5, 0.5): KL(p||m) = 0.75 ln 1.5 + 0.25 ln 0.5 = 0.130812 nats, the same for q
    assert js_divergence([0.75, 0.25], [0.25, 0.75]) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert js_divergence([3, 1], [1, 3]) == pytest.approx(js_divergence([0.75, 0.25], [0.25, 0.75]))  # renormalised
    assert js_divergence([0.2, 0.5, 0.3], [0.1, 0.1, 0.8]) == pytest.approx(
        jensenshannon([0.2, 0.5, 0.3], [0.1, 0.1, 0.8]) ** 2)
    assert ignore_rate([0.5, 0.2, 0.1], [0.4, 0.3, 0.1]) == pytest.approx(1 / 3)
    assert failure_rate([0.6, 0.5, 0.2]) == pytest.approx(1 / 3)  # more than half ignored: only the first
    with pytest.raises(ValueError, match="same non-zero length"):
        js_divergence([0.5, 0.5], [1.0])


def test_round_edit_and_conflict_pair_on_a_tiny_model_restore_it():
    m = tiny_model("llama")
    fp = m.fingerprint()
    req = es.EditRequest("The capital of France is", "Rome", target_true="Paris")
    objects = ["Paris", "Rome", "Lyon"]
    before = object_probs(m, req.prompt, objects)
    r = round_edit(m, "ft-m", req, objects, lr=0.05, steps=20, layer=1)
    assert m.fingerprint() == fp and r.p_before == pytest.approx(before)
    assert r.distortion == pytest.approx(js_divergence(r.p_before, r.p_after))
    assert r.ignore_rate == pytest.approx(ignore_rate(r.p_before, r.p_after))
    assert r.p_after[0] > r.p_before[0] * 0.5  # the round restored Paris (a strong edit back)
    c = conflict_pair(m, "ft-m", es.EditRequest("Anna's husband is", "Bob"), es.EditRequest("Bob's wife is", "Carol"),
                      prompt="Bob's wife is", old_answer="Anna", new_answer="Carol", lr=0.05, steps=20, layer=1)
    assert m.fingerprint() == fp
    assert 0 <= c.p_old_mid <= 1 and c.p_new_final > c.p_old_final  # the newer edit wins on its own prompt
    with pytest.raises(ValueError, match="target_true"):
        round_edit(m, "ft-m", es.EditRequest("x is", "y"), ["y"])
