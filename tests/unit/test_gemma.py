"""Every method family on a tiny Gemma 3 (sandwich norms, sliding-window layers, q/k norms)."""

import pytest
import torch

import editscope as es
from editscope.methods.locate import mlp_change_for, mlp_out_at
from editscope.models import tiny_model
from locate_settings import EASY, REQ, STATS

PROBES = es.ProbeSet([es.Probe("The capital of France is", "Rome", "target"), es.Probe("2+2=", "4", "far"),
                      es.Probe("The sky is", "blue", "far")], name="p")


pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


@pytest.fixture(scope="module")
def gemma():
    return tiny_model("gemma3_text", num_hidden_layers=4)


def test_the_spec_names_the_sandwich_norms(gemma):
    assert gemma.arch.mlp_post_norm and gemma.arch.attn_post_norm
    assert gemma.module("mlp_post_norm", 2) is gemma.hf.model.layers[2].post_feedforward_layernorm
    assert tiny_model("llama").arch.mlp_post_norm is None


def test_mlp_change_is_the_residual_change_itself_without_a_post_norm():
    m = tiny_model("llama", num_hidden_layers=3)
    change = torch.randn(1, m.config.hidden_size)
    assert torch.equal(mlp_change_for(m, 1, [REQ], "subject_last", change), change)


def test_mlp_change_through_a_post_norm_gives_the_asked_residual_change(gemma):
    """To first order: norm(m + u) - norm(m) == change, for a change the norm can make (an RMS
    norm cannot move along its input's own direction, so that component is taken out first)."""
    mo = mlp_out_at(gemma, 1, [REQ], "subject_last")
    g = torch.Generator().manual_seed(0)
    change = torch.randn(1, gemma.config.hidden_size, generator=g)
    norm = gemma.module("mlp_post_norm", 1)
    with torch.no_grad():
        base = norm(mo[None])[0]
    radial = base / base.norm()
    change = change - (change * radial).sum(-1, keepdim=True) * radial
    change = 1e-3 * change / change.norm() * base.norm()
    u = mlp_change_for(gemma, 1, [REQ], "subject_last", change)
    with torch.no_grad():
        got = norm((mo + u)[None])[0] - base
    assert (got - change).norm() < 0.05 * change.norm()
    assert not torch.allclose(u, change)  # the norm really is in the way


@pytest.mark.parametrize("method, hp", [("grace", {"layer": 1}), ("wise", {"layer": 1, "n_templates": 2, "steps": 20})])
def test_interventions_act_and_leave_weights_and_modules_as_they_were(gemma, method, hp):
    names, fp = [n for n, _ in gemma.hf.named_modules()], gemma.fingerprint()
    base = es.evaluate(gemma, PROBES).rows[0]["logprob"]
    h = es.apply_edit(gemma, REQ, method, **hp)
    try:
        assert gemma.fingerprint() == fp
        assert es.evaluate(gemma, PROBES).rows[0]["logprob"] > base
    finally:
        h.undo()
    assert [n for n, _ in gemma.hf.named_modules()] == names and gemma.fingerprint() == fp


def test_incremental_evaluation_equals_a_full_pass_after_a_rome_edit(gemma):
    es.evaluate(gemma, PROBES)
    h = es.apply_edit(gemma, REQ, "rome", layer=2, **{**EASY, **STATS})
    try:
        fast = es.evaluate(gemma, PROBES)
        full = es.evaluate(gemma, PROBES, incremental=False)
    finally:
        h.undo()
    assert [r["logprob"] for r in fast.rows] == [r["logprob"] for r in full.rows]
