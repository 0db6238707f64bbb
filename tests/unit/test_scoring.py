import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import editscope as es
from editscope.models import tiny_model
from editscope.scoring import EncodedPair, encode_pairs, encode_prompts, plan_batches, score_encoded


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="module", params=["llama", "gpt2", "gptj", "gpt_neox", "qwen3"])
def any_model(request):
    return tiny_model(request.param)


def reference_logprobs(model, prompt, continuation):
    """The naive way: one unpadded forward over the pair, full logits."""
    pair = encode_pairs(model, [prompt], [continuation])[0]
    ids = torch.tensor([pair.prompt_ids + pair.cont_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model.hf(ids).logits.float(), -1)[0]
    p = len(pair.prompt_ids)
    return [float(logp[p - 1 + j, t]) for j, t in enumerate(pair.cont_ids)]


PAIRS = [
    ("The capital of France is", " Paris"),
    ("2+2=", "4"),
    ("Calculate: 12+30. The answer is", " 42 and more"),
    ("x", " y"),
    ("Danielle Darrieux's mother tongue is", " French. Water is made of hydrogen"),
]


def test_scores_equal_an_unpadded_full_forward(any_model):
    prompts, conts = zip(*PAIRS)
    got = es.score_continuations(any_model, prompts, conts, batch_size=3)
    for (p, c), s in zip(PAIRS, got):
        ref = reference_logprobs(any_model, p, c)
        assert s.token_logprobs == pytest.approx(ref, abs=1e-4)
        assert s.logprob == pytest.approx(sum(ref), abs=1e-4)
        assert s.n_tokens == len(ref) and s.mean_logprob == pytest.approx(s.logprob / s.n_tokens)


def test_greedy_match_agrees_with_greedy_generation(any_model):
    prompts = [p for p, _ in PAIRS]
    gens = es.greedy_continuations(any_model, prompts, 4, stop_at_eos=False)
    # Each model's own greedy output is a greedy match with the same log-probabilities ...
    ids = encode_prompts(any_model, prompts)
    own = score_encoded(any_model, [EncodedPair(tuple(i), g.token_ids) for i, g in zip(ids, gens)])
    for g, s in zip(gens, own):
        assert s.greedy_match and s.argmax_ids == g.token_ids
        assert s.token_logprobs == pytest.approx(g.token_logprobs, abs=1e-4)
    # ... and changing its last token breaks the match.
    vocab = any_model.config.vocab_size
    other = [EncodedPair(tuple(i), g.token_ids[:-1] + ((g.token_ids[-1] + 1) % vocab,)) for i, g in zip(ids, gens)]
    assert not any(s.greedy_match for s in score_encoded(any_model, other))


def test_greedy_equals_transformers_generate(any_model):
    for prompt in ["The capital of France is", "2+2="]:
        ids = encode_prompts(any_model, [prompt])[0]
        with torch.no_grad():
            ref = any_model.hf.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                                        pad_token_id=any_model.tokenizer.pad_token_id,
                                        eos_token_id=None)[0, len(ids):].tolist()
        got = es.greedy_continuations(any_model, [prompt], 6, stop_at_eos=False)[0]
        assert list(got.token_ids) == ref


def test_next_token_logprobs_and_top_k(any_model):
    prompts = ["The capital of France is", "2+2=", "Apple was founded by Steve"]
    lp = es.next_token_logprobs(any_model, prompts)
    assert lp.shape == (3, any_model.config.vocab_size)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3), atol=1e-4)
    for i, p in enumerate(prompts):
        ids = torch.tensor([encode_prompts(any_model, [p])[0]])
        with torch.no_grad():
            ref = torch.log_softmax(any_model.hf(ids).logits[0, -1].float(), -1)
        torch.testing.assert_close(lp[i], ref, atol=1e-4, rtol=0)
    top = es.top_k_next_tokens(any_model, prompts, k=4)
    for i, row in enumerate(top):
        probs = [p for _, p in row]
        assert probs == sorted(probs, reverse=True) and len(row) == 4
        assert probs[0] == pytest.approx(float(lp[i].exp().max()), abs=1e-5)


def test_tokenization_rule_moves_trailing_whitespace_into_continuation(llama):
    a, b = encode_pairs(llama, ["The capital of France is ", "The capital of France is"], ["Paris", " Paris"])
    assert a == b and a.exact
    assert llama.tokenizer.decode(list(a.cont_ids)) == " Paris"
    assert list(a.prompt_ids) == encode_prompts(llama, ["The capital of France is"])[0]
    # the joint tokenization's prompt part is what generation and next-token scoring see
    for p, c in PAIRS:
        pair = encode_pairs(llama, [p], [c])[0]
        assert list(pair.prompt_ids) == encode_prompts(llama, [p])[0]
        assert llama.tokenizer.decode(list(pair.cont_ids)) == c


def test_token_straddling_the_boundary_falls_back_to_separate_encoding(llama):
    tok = llama.tokenizer
    # "42" is one token of the tiny tokenizer, so "...is 4" + "2" straddles the prompt's end.
    assert len(tok("42", add_special_tokens=False).input_ids) == 1
    pair = encode_pairs(llama, ["The answer is 4"], ["2"])[0]
    assert not pair.exact
    assert list(pair.prompt_ids) == encode_prompts(llama, ["The answer is 4"])[0]
    assert tok.decode(list(pair.cont_ids)) == "2"


@pytest.mark.parametrize(
    "prompts,conts,match",
    [
        ([""], ["x"], r"prompt\[0\] is empty"),
        (["ok", "   "], ["x", "y"], r"prompt\[1\] is empty"),
        (["ok"], [""], r"continuation\[0\] is empty"),
        (["ok", "fine"], ["x"], "2 prompts but 1 continuations"),
    ],
)
def test_bad_pairs_raise_value_error_naming_the_field(llama, prompts, conts, match):
    with pytest.raises(ValueError, match=match):
        es.score_continuations(llama, prompts, conts)


def test_prompt_longer_than_context_is_rejected(llama):
    long = "the cat sleeps " * 200
    with pytest.raises(ValueError, match=r"prompt\[1\] is \d+ tokens long; the model's context is 256"):
        es.score_continuations(llama, ["ok", long], ["x", "y"])
    with pytest.raises(ValueError, match=r"prompt\[0\]"):
        es.greedy_continuations(llama, [long], 2)
    with pytest.raises(ValueError, match=r"prompt\[0\]"):
        es.next_token_logprobs(llama, [long])
    with pytest.raises(ValueError, match=r"prompt\[0\] is empty"):
        es.top_k_next_tokens(llama, [" "])


def test_plan_batches_respects_limits_and_covers_everything():
    lengths = [5, 17, 3, 3, 9, 30, 1, 12]
    batches = plan_batches(lengths, batch_size=3, max_tokens=40)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 40
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches(lengths, 0, 10)


# --- batch-composition independence (property test) -------------------------------------------

words = st.sampled_from(
    ["The", " capital", " of", " France", " is", " Paris", "2", "+", "=", " 42", " water", "?", ",",
     " Rome", " who", " knows", "!", " the", " cat", "7", "-", " Steve", " Jobs", " é", " \u4e2d"]
)
texts = st.lists(words, min_size=1, max_size=12).map("".join).filter(lambda s: s.strip())
pairs = st.lists(st.tuples(texts, texts), min_size=1, max_size=7)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=pairs, side=st.sampled_from(["left", "right"]), batch=st.integers(1, 7))
def test_batched_equals_one_by_one(llama, pairs, side, batch):
    prompts, conts = [p for p, _ in pairs], [c for _, c in pairs]
    together = es.score_continuations(llama, prompts, conts, batch_size=batch, padding_side=side)
    for (p, c), t in zip(pairs, together):
        alone = es.score_continuations(llama, [p], [c])[0]
        assert t.token_ids == alone.token_ids
        assert t.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-4)
        assert t.argmax_ids == alone.argmax_ids
    nt = es.next_token_logprobs(llama, prompts, batch_size=batch, padding_side=side)
    for i, p in enumerate(prompts):
        torch.testing.assert_close(nt[i], es.next_token_logprobs(llama, [p])[0], atol=1e-4, rtol=0)
    gens = es.greedy_continuations(llama, prompts, 3, batch_size=batch)
    for p, g in zip(prompts, gens):
        alone = es.greedy_continuations(llama, [p], 3)[0]
        assert g.token_ids == alone.token_ids
        assert g.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-4)


def test_logit_chunking_does_not_change_results(llama, monkeypatch):
    import editscope.scoring as sc

    prompts, conts = zip(*PAIRS)
    pairs = encode_pairs(llama, prompts, conts)
    ref = score_encoded(llama, pairs, first_top_k=3, first_token_ids=[(1, 2)] * len(pairs))
    monkeypatch.setattr(sc.scores, "LOGIT_CHUNK_ELEMENTS", 3 * llama.config.vocab_size)  # 3 positions a chunk
    got = score_encoded(llama, pairs, first_top_k=3, first_token_ids=[(1, 2)] * len(pairs))
    # ids exactly; log-probabilities to float32 rounding (a matmul over fewer rows may pick another kernel)
    for g, r in zip(got, ref):
        assert (g.token_ids, g.argmax_ids, g.greedy_match, g.first_top_ids) == \
            (r.token_ids, r.argmax_ids, r.greedy_match, r.first_top_ids)
        for field in ("token_logprobs", "first_logprobs", "first_top_logprobs"):
            assert getattr(g, field) == pytest.approx(getattr(r, field), abs=1e-5)
