"""Target residuals optimised for several edits in one batch equal each edit optimised alone, and
prepared residuals are used only while the weights are bit-identical."""

import pytest
import torch

import editscope as es
from editscope.methods.locate import (
    LocateHparams,
    ResidualProblem,
    context_templates,
    optimise_residual,
    optimise_residuals,
)
from editscope.models import StateWatch, tiny_model
from locate_settings import STATS

# different subjects, key positions, prefix and suffix lengths, and one that cannot finish early
REQS = [
    es.EditRequest("The capital of France is", "Rome", subject="France"),
    es.EditRequest("Paris is in", "Italy", subject="Paris"),
    es.EditRequest("The mother tongue of Danielle Darrieux is", "English", subject="Danielle Darrieux"),
]
HP = {**STATS, "v_lr": 0.5, "v_steps": 20, "v_fail_loss": 100.0, "clamp_norm_factor": 20, "v_stop_loss": 6.3}
#: tiny random models learn slowly: a stop loss per architecture that some requests reach early
#: (one at step 0 on GPT-2), some late and some never
STOP = {"llama": 6.3, "gpt2": 5.9}


pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_batched_residuals_equal_one_at_a_time(model_type):
    m = tiny_model(model_type, num_hidden_layers=4)
    hp = LocateHparams(**{**HP, "v_stop_loss": STOP[model_type]})
    templates = context_templates(m, hp.n_contexts, hp.context_len)
    alone = [optimise_residual(m, ResidualProblem(m, 1, r, templates, hp), r, hp) for r in REQS]
    together = optimise_residuals(m, [ResidualProblem(m, 1, r, templates, hp) for r in REQS], REQS, hp)
    steps = [info["v_steps"] for _, info in alone]
    assert len(set(steps)) > 1, f"every problem stopped at the same step {steps}: the per-problem stop is not exercised"
    for (d1, i1), (d2, i2) in zip(alone, together):
        assert i1["v_steps"] == i2["v_steps"]
        assert (d1.norm() > 0) == (i1["v_steps"] > 0)
        torch.testing.assert_close(d2, d1, rtol=1e-4, atol=1e-5)
        assert i2["v_loss_last"] == pytest.approx(i1["v_loss_last"], rel=1e-4, abs=1e-6)


def test_a_request_that_fails_alone_fails_in_the_batch_without_failing_the_others():
    m = tiny_model("llama", num_hidden_layers=4)
    hp = LocateHparams(**{**HP, "v_steps": 1, "v_fail_loss": 0.01})
    templates = context_templates(m, hp.n_contexts, hp.context_len)
    got = optimise_residuals(m, [ResidualProblem(m, 1, r, templates, hp) for r in REQS], REQS, hp)
    assert all(isinstance(g, es.EditFailed) for g in got)
    hp = LocateHparams(**HP)
    ok = optimise_residuals(m, [ResidualProblem(m, 1, r, templates, hp) for r in REQS[:1]], REQS[:1], hp)
    assert not isinstance(ok[0], es.EditFailed)


@pytest.mark.parametrize("method, kw", [("rome", {"layer": 1}), ("memit", {"layers": [0, 1]}),
                                        ("alphaedit", {"layers": [0, 1]})])
def test_prepared_edits_equal_plain_edits_in_an_edit_undo_loop(method, kw):
    m = tiny_model("llama", num_hidden_layers=4)
    kw = {**HP, **kw}
    plain = []
    for r in REQS:
        h = es.apply_edit(m, r, method, guard_tolerance=100, **kw)
        plain.append({n: p.detach().clone() for n, p in m.hf.named_parameters() if n in h.names})
        h.undo()
    es.prepare_edits(m, REQS, method, **kw)
    for r, ref in zip(REQS, plain):
        h = es.apply_edit(m, r, method, guard_tolerance=100, **kw)
        now = dict(m.hf.named_parameters())
        for n, w in ref.items():
            torch.testing.assert_close(now[n].detach(), w, rtol=1e-4, atol=1e-5)
        if method == "rome":
            assert h.info["prepared"] is True
        h.undo()
    assert not m.state.prepared_residuals  # each was taken once


def test_a_prepared_residual_is_not_used_once_the_weights_changed():
    m = tiny_model("llama", num_hidden_layers=4)
    kw = {**HP, "layer": 1}
    es.prepare_edits(m, REQS, "rome", **kw)
    other = es.apply_edit(m, es.EditRequest("The sky is", "green", subject="sky"), "rome", guard_tolerance=100, **kw)
    h = es.apply_edit(m, REQS[0], "rome", guard_tolerance=100, **kw)
    assert h.info["prepared"] is False
    assert not m.state.prepared_residuals  # stale entries of that batch dropped
    h.undo()
    other.undo()


def test_state_watch_holds_across_an_edit_and_its_undo_and_not_while_edited():
    m = tiny_model("llama", num_hidden_layers=4)
    watch = StateWatch.take(m)
    assert watch.holds(m)
    h = es.apply_edit(m, REQS[0], "rome", guard_tolerance=100, **{**HP, "layer": 1})
    assert not watch.holds(m)
    h.undo()
    assert watch.holds(m)
    g = es.apply_edit(m, REQS[0], "grace")
    assert not watch.holds(m)  # an intervention changes what the model computes, not its weights
    g.undo()
    assert watch.holds(m)
