"""Integration tests on the second built-in model, Gemma 3 270M (gemma3_text: sandwich norms, q/k norms,
sliding-window layers, scaled embeddings, tied head, a 262,144-token vocabulary): it loads from its
GGUF packages, editscope's scoring equals HF's own forward, and one method of every family edits it
and undoes exactly."""

import pytest
import torch

import editscope as es
from editscope.scoring import encode_pairs, encode_prompts

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
    prompts, conts = zip(*PROMPTS)
    batched = es.score_continuations(gemma_model, prompts, conts, batch_size=4, padding_side=side)
    for (p, c), b in zip(PROMPTS, batched):
        pair = encode_pairs(gemma_model, [p], [c])[0]
        with torch.no_grad():
            logits = gemma_model.hf(torch.tensor([pair.prompt_ids + pair.cont_ids])).logits[0]
        logp = torch.log_softmax(logits.float(), -1)
        n = len(pair.prompt_ids)
        ref = [float(logp[n - 1 + j, t]) for j, t in enumerate(pair.cont_ids)]
        assert b.token_logprobs == pytest.approx(ref, abs=1e-3)
        assert b.greedy_match == all(int(logits[n - 1 + j].argmax()) == t for j, t in enumerate(pair.cont_ids))


def test_greedy_batched_equals_generate(gemma_model):
    prompts = [p for p, _ in PROMPTS]
    gens = es.greedy_continuations(gemma_model, prompts, 5, batch_size=4, stop_at_eos=False)
    for p, g in zip(prompts, gens):
        ids = encode_prompts(gemma_model, [p])[0]
        with torch.no_grad():
            ref = gemma_model.hf.generate(torch.tensor([ids]), max_new_tokens=5, do_sample=False, eos_token_id=None,
                                          pad_token_id=gemma_model.tokenizer.pad_token_id)[0, len(ids):].tolist()
        assert list(g.token_ids) == ref


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
