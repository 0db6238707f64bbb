"""Perplexity against hand computations with plain forwards on a tiny model."""

import json
import math

import pytest
import torch

from editscope.metrics import CORPORA, is_collapsed, load_corpus, perplexity
from editscope.models import tiny_model
from editscope.data.fetch import data_path

SHORT = "The capital of France is Paris."
LONG = ("The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid. "
        "Apple was founded by Steve Jobs. Microsoft is based in Redmond. Toyota makes cars. "
        "The quick brown fox jumps over the lazy dog, while the cat sleeps; who knows why!")


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


def ids_of(model, text):
    return model.tokenizer(text)["input_ids"]


def plain_nll(model, ids):
    """Sum of -log p(ids[j] | ids[:j]) for j >= 1, one unpadded forward."""
    with torch.no_grad():
        logp = torch.log_softmax(model.hf(torch.tensor([ids])).logits.double(), -1)[0]
    return -sum(float(logp[j - 1, ids[j]]) for j in range(1, len(ids)))


def hf_guide(model, ids, max_length, stride):
    """The loop of the HF "Perplexity of fixed-length models" guide, verbatim in spirit."""
    encodings = torch.tensor([ids])
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model.hf(input_ids, labels=target_ids).loss
        num_loss_tokens = int((target_ids[:, 1:] != -100).sum())
        nll_sum += float(loss) * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return nll_sum, n_tokens


def test_single_window_equals_one_plain_forward(llama):
    ids = ids_of(llama, SHORT)
    r = perplexity(llama, [SHORT])
    assert r.n_tokens == len(ids) - 1  # the first token is not predicted
    assert r.nll == pytest.approx(plain_nll(llama, ids), rel=1e-5)
    assert r.ppl == pytest.approx(math.exp(r.nll / r.n_tokens), rel=1e-9)
    assert r.per_document_tokens == [len(ids) - 1] and r.mean_document_ppl == pytest.approx(r.ppl)
    assert r.window == 256 and r.stride == 128 and r.corpus == "texts"


@pytest.mark.parametrize("window,stride", [(16, 8), (16, 5), (16, 15), (16, 16), (7, 1)])
def test_sliding_window_equals_hand_strided_sum(llama, window, stride):
    ids = ids_of(llama, LONG)
    assert len(ids) > 3 * window
    ref_nll, ref_tok = hf_guide(llama, ids, window, stride)
    r = perplexity(llama, [LONG], window=window, stride=stride, batch_size=3)
    assert r.n_tokens == ref_tok
    assert r.nll == pytest.approx(ref_nll, rel=1e-5)
    if stride < window:  # each token predicted exactly once
        assert r.n_tokens == len(ids) - 1
    else:  # non-overlapping: the first token of every window is not predicted (as in the guide)
        assert r.n_tokens == len(ids) - math.ceil(len(ids) / window)


def test_overlapping_windows_give_context_to_later_tokens(llama):
    ids = ids_of(llama, LONG)
    # by hand: window 16, stride 8 -> tokens 16..23 are predicted with context ids[8:j]
    manual = plain_nll(llama, ids[:16])
    begin, prev_end = 8, 16
    while True:
        end = min(begin + 16, len(ids))
        with torch.no_grad():
            logp = torch.log_softmax(llama.hf(torch.tensor([ids[begin:end]])).logits.double(), -1)[0]
        manual -= sum(float(logp[j - begin - 1, ids[j]]) for j in range(prev_end, end))
        prev_end = end
        if end == len(ids):
            break
        begin += 8
    assert perplexity(llama, [LONG], window=16, stride=8).nll == pytest.approx(manual, rel=1e-5)


def test_token_weighting_across_documents(llama):
    texts = [SHORT, LONG, "2+2=4"]
    r = perplexity(llama, texts, corpus="mine")
    singles = [perplexity(llama, [t]) for t in texts]
    assert r.per_document_nll == pytest.approx([s.nll for s in singles], rel=1e-5)
    assert r.per_document_tokens == [s.n_tokens for s in singles]
    assert r.n_tokens == sum(s.n_tokens for s in singles)
    expected = math.exp(sum(s.nll for s in singles) / sum(s.n_tokens for s in singles))
    assert r.ppl == pytest.approx(expected, rel=1e-5)
    mean_doc = sum(s.ppl for s in singles) / 3
    assert r.mean_document_ppl == pytest.approx(mean_doc, rel=1e-5)
    assert abs(r.ppl - mean_doc) > 1e-3 * r.ppl  # different lengths: the two averages differ
    assert r.corpus == "mine" and r.n_documents == 3
    d = r.to_dict()
    assert d["ppl"] == r.ppl and "per_document_nll" not in d and d["mean_document_ppl"] == r.mean_document_ppl


def test_result_does_not_depend_on_batching(llama):
    texts = [LONG, SHORT, "Water is made of hydrogen and oxygen.", LONG[:90], "x y z"]
    a = perplexity(llama, texts, window=24, stride=10, batch_size=1, max_tokens=24)
    b = perplexity(llama, texts, window=24, stride=10, batch_size=64, max_tokens=4096)
    assert a.per_document_tokens == b.per_document_tokens
    assert a.per_document_nll == pytest.approx(b.per_document_nll, rel=1e-4)
    assert a.ppl == pytest.approx(b.ppl, rel=1e-5)


def test_add_bos_predicts_the_first_real_token(llama):
    ids = ids_of(llama, SHORT)
    bos = llama.tokenizer.bos_token_id
    r = perplexity(llama, [SHORT], add_bos=True)
    assert r.n_tokens == len(ids)
    assert r.nll == pytest.approx(plain_nll(llama, [bos] + ids), rel=1e-5)
    assert perplexity(llama, [SHORT], add_bos=False).nll == pytest.approx(plain_nll(llama, ids), rel=1e-5)


def test_documents_too_short_to_predict(llama):
    one = next(w for w in ["x", "a", "T", "2"] if len(ids_of(llama, w)) == 1)
    with pytest.raises(ValueError, match=r"'tiny-corpus'.*document 0"):
        perplexity(llama, [one, one], corpus="tiny-corpus")
    r = perplexity(llama, [one, SHORT])  # a short document alongside others contributes nothing
    assert r.per_document_tokens[0] == 0 and math.isnan(r.per_document_ppl[0])
    assert r.mean_document_ppl == pytest.approx(r.per_document_ppl[1])
    with pytest.raises(ValueError, match="no documents"):
        perplexity(llama, [])
    with pytest.raises(TypeError, match="document 1"):
        perplexity(llama, [SHORT, 3])


def test_window_and_stride_validation(llama):
    with pytest.raises(ValueError, match="stride"):
        perplexity(llama, [SHORT], window=16, stride=17)
    with pytest.raises(ValueError, match="stride"):
        perplexity(llama, [SHORT], window=16, stride=0)
    with pytest.raises(ValueError, match="context"):
        perplexity(llama, [SHORT], window=10_000)
    with pytest.raises(ValueError, match="window"):
        perplexity(llama, [SHORT], window=1)


def test_named_corpus_string(llama):
    r = perplexity(llama, "me_ppl_50", limit=5)
    assert r.corpus == "me_ppl_50" and r.n_documents == 5
    with pytest.raises(ValueError, match="Known corpora"):
        perplexity(llama, "The capital of France is Paris.")


# --------------------------------------------------------------------------- corpora


def test_me_ppl_corpora():
    raw = json.loads(data_path("me_ppl", "ME-PPL_50.json").read_text())
    docs = load_corpus("me_ppl_50")
    assert docs == [r["Text"] for r in raw] and len(docs) == 50
    assert len(load_corpus("ME_PPL_1k")) == 1000
    assert load_corpus("me_ppl", limit=7) == [r["Text"] for r in json.loads(
        data_path("me_ppl", "ME-PPL.json").read_text())[:7]]


def test_wikitext_is_one_long_document():
    docs = load_corpus("wikitext2")
    assert len(docs) == 1
    doc = docs[0]
    assert len(doc) > 1_200_000 and "\r" not in doc
    # rows of the HF dataset keep their "\n" and are joined by "\n\n", as in the HF guide
    assert doc.startswith(" = Robert Boulter = \n\n\n Robert Boulter is an English film")
    assert doc.endswith("\n") and doc.count("\n\n\n") == 2890


def test_unknown_corpus_lists_names(tmp_path):
    with pytest.raises(ValueError) as e:
        load_corpus("wikitext3")
    for name in CORPORA:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="no such file"):
        load_corpus(str(tmp_path / "missing.json"))


def test_corpus_files(tmp_path):
    (tmp_path / "a.txt").write_text("one\ndocument\n")
    assert load_corpus(str(tmp_path / "a.txt")) == ["one\ndocument\n"]
    (tmp_path / "b.json").write_text(json.dumps(["x", {"Text": "y"}, {"text": "z"}]))
    assert load_corpus(str(tmp_path / "b.json")) == ["x", "y", "z"]
    (tmp_path / "c.jsonl").write_text('{"text": "p"}\n\n{"text": "q"}\n{"text": "r"}\n')
    assert load_corpus(str(tmp_path / "c.jsonl")) == ["p", "q", "r"]
    assert load_corpus(str(tmp_path / "c.jsonl"), limit=2) == ["p", "q"]
    (tmp_path / "d.json").write_text(json.dumps([{"Text": "ok"}, {"body": "no text"}]))
    with pytest.raises(ValueError, match=r"record 1 has no 'Text' or 'text' field"):
        load_corpus(str(tmp_path / "d.json"))
    (tmp_path / "e.jsonl").write_text('{"text": "ok"}\n{"text": 5}\n')
    with pytest.raises(ValueError, match=r"record 1 field 'text' must be a string"):
        load_corpus(str(tmp_path / "e.jsonl"))


# --------------------------------------------------------------------------- collapse


def test_is_collapsed():
    assert not is_collapsed(50.0)
    assert not is_collapsed(1000.0) and is_collapsed(1000.5)
    assert is_collapsed(200.0, threshold=100.0)
    assert is_collapsed(float("inf")) and is_collapsed(float("nan"))
    assert is_collapsed(31.0, base_ppl=10.0, ratio=3.0) and not is_collapsed(29.0, base_ppl=10.0, ratio=3.0)
    assert not is_collapsed(5000.0, base_ppl=2000.0, ratio=3.0)  # the ratio test replaces the threshold
    with pytest.raises(ValueError, match="base_ppl"):
        is_collapsed(10.0, ratio=2.0)
    with pytest.raises(ValueError, match="ratio"):
        is_collapsed(10.0, base_ppl=5.0)


def test_incremental_perplexity_equals_full_pass():
    from editscope.models import tiny_model

    m = tiny_model("llama", num_hidden_layers=3)
    texts = ["The capital of France is Paris. The capital of Italy is Rome.", "2+2=4 3+5=8 7-2=5"]
    base = perplexity(m, texts, window=8, stride=4, keep_hidden=2)
    w = m.module("mlp_out", 2).weight
    with torch.no_grad():
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    fast = perplexity(m, texts, window=8, stride=4)
    full = perplexity(m, texts, window=8, stride=4, incremental=False)
    assert fast.per_document_nll == full.per_document_nll and fast.ppl != base.ppl
    assert [layer for key, layer in m.state.layer_caches if key.startswith("ppl:")] == [2]
