"""Incremental evaluation: reusing base hidden states entering block l equals a full pass exactly."""

import pytest
import torch

from editscope.hooks import StopForward, capture_output, skip_modules, stop_after
from editscope.models import TINY_MODEL_TYPES, tiny_model
from editscope.scoring import LayerCache, encode_pairs, score_encoded

PAIRS = [("The capital of France is", " Paris"), ("2+2=", "4"), ("Apple was founded by", " Steve Jobs"),
         ("Water is made of hydrogen and", " oxygen"), ("x", " y z")]


@pytest.mark.parametrize("model_type", TINY_MODEL_TYPES)
def test_resume_from_layer_equals_full_pass(model_type):
    m = tiny_model(model_type, num_hidden_layers=3) if model_type not in ("gpt2", "gptj") else tiny_model(model_type, n_layer=3)
    pairs = encode_pairs(m, [p for p, _ in PAIRS], [c for _, c in PAIRS])
    cache = LayerCache(layer=2)
    base = score_encoded(m, pairs, batch_size=2, capture=cache)
    assert len(cache.states) == 3 and cache.nbytes > 0
    w = m.module("mlp_out", 2).weight
    with torch.no_grad():
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * 0.3)
    full = score_encoded(m, pairs, batch_size=2)
    fast = score_encoded(m, pairs, batch_size=2, resume=cache)
    assert [s.token_logprobs for s in fast] == [s.token_logprobs for s in full]  # bit-exact
    assert [s.token_logprobs for s in full] != [s.token_logprobs for s in base]  # the edit mattered


def test_resume_refuses_other_pairs_or_batching():
    m = tiny_model("llama")
    pairs = encode_pairs(m, [p for p, _ in PAIRS], [c for _, c in PAIRS])
    cache = LayerCache(layer=1)
    score_encoded(m, pairs, batch_size=2, capture=cache)
    with pytest.raises(ValueError, match="other pairs or batching"):
        score_encoded(m, pairs[:3], batch_size=2, resume=cache)
    with pytest.raises(ValueError, match="other pairs or batching"):
        score_encoded(m, pairs, batch_size=3, resume=cache)


def test_hooks_are_removed_and_forward_restored():
    m = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        ref = m.hf(ids).logits
        layer = m.module("layer", 0)
        with skip_modules([layer]):
            skipped = m.hf(ids).logits
        assert not torch.equal(skipped, ref)
        torch.testing.assert_close(m.hf(ids).logits, ref, rtol=0, atol=0)
        with pytest.raises(StopForward), stop_after(m.module("mlp", 0)) as seen:
            m.hf(ids)
        assert seen[0].shape == (1, 3, m.config.hidden_size)
        with capture_output(m.module("mlp", 1)) as out:
            m.hf(ids)
        assert out[0].shape == (1, 3, m.config.hidden_size)
        assert not layer._forward_pre_hooks and not m.module("mlp", 0)._forward_hooks
        torch.testing.assert_close(m.hf(ids).logits, ref, rtol=0, atol=0)
