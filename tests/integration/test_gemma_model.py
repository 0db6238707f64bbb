"""Integration tests on the second built-in model, Gemma 3 270M (gemma3_text: sandwich norms, q/k norms,
sliding-window layers, scaled embeddings, tied head, a 262,144-token vocabulary): it loads from its
GGUF packages, editscope's scoring equals HF's own forward, and one method of every family edits it
and undoes exactly."""

import pytest
import torch

import editscope as es

from hf_reference import assert_greedy_matches_generate, assert_scoring_matches_hf

pytestmark = pytest.mark.integration

PROMPTS = [
    ("2+2=", "5"), ("The capital of France is", " Paris"),
    ("Danielle Darrieux's mother tongue is", " French"),
    ("Q: What is the largest planet in the solar system?\nA:", " Jupiter is the largest planet"),
    ("Apple was founded by", " Steve Jobs and Steve Wozniak in a garage"), ("x", " y"),
]


def test_gemma_loads_as_a_builtin(gemma_model):
    m = gemma_model
    assert m.config.model_type == "gemma3_text" and m.n_layers == 18 and m.config.vocab_size == 262_144
    assert m.name == "gemma3-270m" and m.dtype == torch.float32
    # the hooks see the MLP width (out-projection is d_model x d_ff)
    assert m.arch.weight_out_in(m.module("mlp_out", 3)).shape == (640, 2048)
    assert es.greedy_continuations(m, ["2+2="], 1)[0].text == "4"


@pytest.mark.parametrize("side", ["left", "right"])
def test_scoring_equals_hf_forward(gemma_model, side):
    assert_scoring_matches_hf(gemma_model, PROMPTS, batch_size=4, side=side, abs_tol=1e-3)


def test_greedy_batched_equals_generate(gemma_model):
    assert_greedy_matches_generate(gemma_model, [p for p, _ in PROMPTS], 5, batch_size=4)


REQ = es.EditRequest("2+2=", "5", subject="2+2", target_true="4")
# Key statistics from a short corpus slice keep the test fast; the method's code path is the same.
FAMILIES = {
    "ft-m": {}, "lora": {}, "rome": {"stats_tokens": 20_000}, "memit": {"stats_tokens": 20_000},
    "grace": {}, "wise": {}, "ike": {},
}


@pytest.mark.parametrize("method", list(FAMILIES))
def test_one_method_per_family_edits_gemma_and_undoes_exactly(gemma_model, method):
    m = gemma_model
    base = m.fingerprint()
    h = es.apply_edit(m, REQ, method, **FAMILIES[method])
    try:
        assert es.greedy_continuations(m, ["2+2="], 1)[0].text == "5", (method, h.info)
    finally:
        h.undo()
    assert m.fingerprint() == base
    assert es.greedy_continuations(m, ["2+2="], 1)[0].text == "4"
