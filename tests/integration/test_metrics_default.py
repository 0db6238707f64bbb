"""Downstream tasks and perplexity on the real default model (smollm2-135m): well-formed results."""

import math

import pytest

from editscope.metrics import is_collapsed, perplexity, run_task

pytestmark = pytest.mark.integration


def test_piqa_50_is_well_formed(default_model):
    r = run_task(default_model, "piqa", limit=50)
    assert r.n == 50 and r.n_skipped == 0 and r.details.n == 50
    for name in ("acc", "acc_norm"):
        value, iv = r.metrics[name], r.intervals[name]
        assert 0.0 <= value <= 1.0 and iv.n == 50
        assert iv.low <= value <= iv.high and iv.value == value
    assert all(len(lls) == 2 and all(ll < 0 for ll in lls) for lls in r.details.logprobs)


def test_lambada_30_runs(default_model):
    r = run_task(default_model, "lambada", limit=30)
    assert r.n == 30 and 0.0 <= r.metrics["acc"] <= 1.0
    assert math.isfinite(r.metrics["ppl"]) and r.metrics["ppl"] > 1.0
    iv = r.intervals["acc"]
    assert iv.low <= r.metrics["acc"] <= iv.high


def test_me_ppl_is_finite_and_not_collapsed(default_model):
    r = perplexity(default_model, "me_ppl_50", limit=5)
    assert r.n_documents == 5 and r.n_tokens > 50
    assert 1.0 < r.ppl < 1000.0 and not is_collapsed(r.ppl)
