"""Downstream scoring (harness-style multiple choice, LAMBADA) and the task loaders."""

import json
import math

import pytest
import torch

import editscope as es
from editscope.metrics import TASKS, DataFormatError, load_task, multiple_choice, run_task, target_loglikelihood
from editscope.metrics.downstream import (
    MCExample,
    TargetExample,
    _binary_stats,
    _with_shots,
    hellaswag_preprocess,
    hellaswag_query,
    mutual_detokenize,
)
from editscope.models import tiny_model
from editscope.data.fetch import data_path
from editscope.scoring import encode_pairs


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


def plain_logprob(model, prompt, continuation):
    """log P(continuation | prompt) from one unpadded forward."""
    pair = encode_pairs(model, [prompt], [continuation])[0]
    ids = torch.tensor([pair.prompt_ids + pair.cont_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model.hf(ids).logits.double(), -1)[0]
    p = len(pair.prompt_ids)
    return sum(float(logp[p - 1 + j, t]) for j, t in enumerate(pair.cont_ids))


# --------------------------------------------------------------------------- multiple choice

CONTEXTS = ["The capital of France is", "Question: What is 2+2?\nAnswer:"]
CHOICES = [["x", "Paris. The capital of Italy is Rome. The capital of Spain is Madrid"],
           ["four", "two plus two equals four and 2+2=4"]]


def test_multiple_choice_matches_hand_scores(llama):
    lls = [[plain_logprob(llama, c, " " + ch) for ch in chs] for c, chs in zip(CONTEXTS, CHOICES)]
    pred = [max(range(2), key=lambda j: ll[j]) for ll in lls]
    pred_norm = [max(range(2), key=lambda j: ll[j] / len(chs[j])) for ll, chs in zip(lls, CHOICES)]
    # a long choice loses on the summed log-probability and wins per character here
    assert pred != pred_norm
    labels = pred_norm
    r = multiple_choice(llama, CONTEXTS, CHOICES, labels)
    assert r.n == 2 and r.normalize == "chars"
    for got, want in zip(r.logprobs, lls):
        assert got == pytest.approx(want, abs=1e-4)
    assert r.pred == pred and r.pred_norm == pred_norm
    assert r.correct == [p == y for p, y in zip(pred, labels)] and r.correct_norm == [True, True]
    assert r.acc_norm == 1.0 and r.acc == sum(r.correct) / 2 and r.acc != r.acc_norm
    assert r.normalizers == [[1.0, 67.0], [4.0, 34.0]]
    iv = r.acc_interval()
    assert iv.n == 2 and iv.value == r.acc and iv.low <= r.acc <= iv.high
    assert r.acc_norm_interval().value == 1.0 and r.acc_norm_interval().high == 1.0


def test_normalizations(llama):
    ctx, chs = ["The answer is"], [["café", "cafe"]]
    chars = multiple_choice(llama, ctx, chs, [0], normalize="chars")
    byts = multiple_choice(llama, ctx, chs, [0], normalize="bytes")
    toks = multiple_choice(llama, ctx, chs, [0], normalize="tokens")
    none = multiple_choice(llama, ctx, chs, [0], normalize=None)
    assert chars.normalizers == [[4.0, 4.0]] and byts.normalizers == [[5.0, 4.0]]
    n_tok = [len(encode_pairs(llama, ctx, [" " + c])[0].cont_ids) for c in chs[0]]
    assert toks.normalizers == [[float(n) for n in n_tok]]
    assert none.normalizers == [[1.0, 1.0]] and none.pred_norm == none.pred
    with pytest.raises(ValueError, match="normalize"):
        multiple_choice(llama, ctx, chs, [0], normalize="words")


def test_ties_go_to_the_first_choice_like_np_argmax(llama):
    r = multiple_choice(llama, ["The capital of France is"], [["Paris", "Paris"]], [1])
    assert r.pred == [0] and r.pred_norm == [0] and r.correct == [False]


def test_multiple_choice_validation(llama):
    with pytest.raises(ValueError, match="aligned"):
        multiple_choice(llama, ["a", "b"], [["x", "y"]], [0])
    with pytest.raises(ValueError, match=r"labels\[0\]"):
        multiple_choice(llama, ["a"], [["x", "y"]], [2])
    with pytest.raises(ValueError, match=r"choices_list\[0\]\[1\]"):
        multiple_choice(llama, ["a"], [["x", ""]], [0])
    with pytest.raises(ValueError, match="at least 2"):
        multiple_choice(llama, ["a"], [["x"]], [0])


# --------------------------------------------------------------------------- LAMBADA


def test_lambada_greedy_match_and_perplexity(llama):
    contexts = ["The capital of France is", "Calculate: 12+30. The answer is"]
    gens = es.greedy_continuations(llama, contexts, 3, stop_at_eos=False)
    own = [g.text for g in gens]  # the model's own greedy continuation: a greedy match
    other = [" Madrid", " 42"]
    r = target_loglikelihood(llama, contexts * 2, own + other)
    assert r.greedy[:2] == [True, True]
    for i, (c, t) in enumerate(zip(contexts * 2, own + other)):
        assert r.logprobs[i] == pytest.approx(plain_logprob(llama, c, t), abs=1e-4)
        if i >= 2 and not t.startswith(own[i - 2]):
            assert r.greedy[i] is False
    assert r.acc == sum(r.greedy) / 4
    assert r.ppl == pytest.approx(math.exp(-sum(r.logprobs) / 4), rel=1e-12)
    assert r.acc_interval().n == 4


def test_lambada_formatting_is_the_harness_split():
    raw = [json.loads(line) for line in data_path("lambada", "lambada_test.jsonl").open()][:3]
    data = load_task("lambada", limit=3)
    assert [type(e) for e in data.examples] == [TargetExample] * 3
    for rec, ex in zip(raw, data.examples):
        words = rec["text"].split(" ")
        assert ex.context == " ".join(words[:-1]) and ex.target == " " + words[-1]
        assert ex.context + ex.target == rec["text"]
    assert data.examples[0].target == " signs"
    assert data.examples[0].context.endswith("his mouth curved in a confident grin, I don't care about")


def test_run_task_lambada_on_custom_file(llama, tmp_path):
    f = tmp_path / "lam.jsonl"
    f.write_text("\n".join(json.dumps({"text": t}) for t in
                           ["The capital of France is Paris", "Water is made of hydrogen and oxygen"]))
    r = run_task(llama, "lambada", path=f)
    assert r.n == 2 and set(r.metrics) == {"acc", "ppl"} and r.harness_task == "lambada_openai"
    direct = target_loglikelihood(llama, ["The capital of France is", "Water is made of hydrogen and"],
                                  [" Paris", " oxygen"])
    assert r.metrics["ppl"] == pytest.approx(direct.ppl) and r.metrics["acc"] == direct.acc


# --------------------------------------------------------------------------- loaders on the shared files


def n_records(*parts):
    return sum(1 for line in data_path(*parts).open(encoding="utf-8") if line.strip())


@pytest.mark.parametrize("task", list(TASKS))
def test_loaders_read_every_record(task):
    spec = TASKS[task]
    data = load_task(task)
    assert data.task == task and data.n_skipped == 0
    assert len(data.examples) == n_records(*spec.file)
    assert [e.index for e in data.examples[:3]] == [0, 1, 2]
    short = load_task(task, limit=4)
    assert short.examples == data.examples[:4]  # limit = the first items, deterministic


def test_task_names():
    assert list(TASKS) == ["piqa", "hellaswag", "lambada", "cola", "sst2", "mrpc", "rte", "nli",
                           "sentiment", "mmlu", "dialogue"]
    with pytest.raises(ValueError) as e:
        load_task("piqa2")
    assert all(t in str(e.value) for t in TASKS)
    with pytest.raises(ValueError, match="unknown downstream task .boolq.. Known: piqa"):
        run_task(None, "boolq")


def test_first_records_formatted_exactly():
    piqa = load_task("piqa", limit=2).examples
    assert piqa[0].context == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert piqa[0].choices[1].startswith("Provide the guinea pig with a cage full of a few inches of bedding "
                                         "made of ripped jeans material")
    labels = data_path("piqa", "valid-labels.lst").read_text().split()
    assert [e.label for e in piqa] == [int(x) for x in labels[:2]]
    assert piqa[1].choices == ("replace drawer with bobby pin ", "finish, woodgrain with  bobby pin ")

    hs = load_task("hellaswag", limit=2).examples
    assert hs[0] == MCExample("Roof shingle removal: A man is sitting on a roof. He",
                              ("is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                               "is holding a rubik's cube.", "starts pulling up roofing on a roof."), 3, 0)
    assert hs[1].context == ("Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. "
                             "The lady")

    assert load_task("cola", limit=1).examples[0] == MCExample(
        "The evidence assembled by the prosecution convinced the jury.\nQuestion: Does this sentence make "
        "sense?\nAnswer:", ("no", "yes"), 1, 0)
    sst2 = load_task("sst2", limit=1).examples[0]
    assert sst2.context.endswith(" escapist adventure of the first order \nQuestion: Is this sentence positive "
                                 "or negative?\nAnswer:")
    assert sst2.choices == ("negative", "positive") and sst2.label == 1
    sent = load_task("sentiment", limit=2).examples
    assert [e.label for e in sent] == [1, 0] and sent[1].context.startswith("... is an arthritic attempt")
    mrpc = load_task("mrpc", limit=1).examples[0]
    assert mrpc.context.startswith("Sentence 1: Federal regulators have turned from sour to sweet")
    assert "\nSentence 2: Federal regulators have changed their minds" in mrpc.context
    assert mrpc.context.endswith(" .\nQuestion: Do both sentences mean the same thing?\nAnswer:")
    assert mrpc.choices == ("no", "yes") and mrpc.label == 1
    assert load_task("rte", limit=1).examples[0] == MCExample(
        "The town is also home to the Dalai Lama and to more than 10,000 Tibetans living in exile.\n"
        "Question: The Dalai Lama has been living in exile since 10,000. True or False?\nAnswer:",
        ("True", "False"), 1, 0)
    nli = load_task("nli", limit=1).examples[0]
    assert nli.context.endswith("\nQuestion: U.S. to use Turkish military bases. True or False?\nAnswer:")
    assert nli.label == 1  # not_entailment
    assert load_task("mmlu", limit=1).examples[0] == MCExample(
        "Which expression is equivalent to 4 x 9?\nA. (4x 4) + (4x5)\nB. (4+4) x (4+5)\nC. (4+4)+(4+5)\n"
        "D. (4x 4) x (4x5)\nAnswer:", ("A", "B", "C", "D"), 0, 0,
        description="The following are multiple choice questions (with answers) about elementary mathematics.\n\n")
    dia = load_task("dialogue", limit=1).examples[0]
    assert dia.context.startswith("f: hi how are you doing? m: i've been good. i'm in school right now.")
    assert dia.choices[0] == "f: really? you mean you don't like cooking but you plan to start a restaurant in the future?"
    assert dia.label == 1  # "B"


def test_hellaswag_harness_preprocess():
    assert hellaswag_preprocess(" Cleaning: [header] How to clean a sink [title] Rinse it.  [step] Dry.") == \
        "Cleaning: How to clean a sink. Rinse it.  Dry."  # one replace pass leaves 2 of 3 spaces, as the harness
    # the capitalized ctx_b fragment (ActivityNet) and an untouched capitalized WikiHow sentence
    assert hellaswag_query("Ice fishing: A man drills a hole. He puts a pole in. he") == \
        "Ice fishing: A man drills a hole. He puts a pole in. He"
    assert hellaswag_query("Home: How to clean a sink. Rinse the USB port") == "Home: How to clean a sink. Rinse the USB port"
    assert hellaswag_query("Painting: An intro. the hand holding the BRUSH") == "Painting: An intro. The hand holding the brush"


def test_hellaswag_original_form_uses_the_harness_formula(llama, tmp_path):
    f = tmp_path / "hs.jsonl"
    rec = {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
           "endings": ["is using wrap [title] to wrap skis.", "x", "y", "starts pulling up roofing."], "label": "3"}
    f.write_text(json.dumps(rec) + "\n")
    ex = load_task("hellaswag", path=f).examples[0]
    assert ex.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert ex.choices[0] == "is using wrap. to wrap skis." and ex.label == 3


def test_mutual_detokenizer():
    assert mutual_detokenize("m : i do n't know , do you ? f : `` yes '' .") == 'm: i don\'t know, do you? f: "yes".'


# --------------------------------------------------------------------------- bad records


def test_missing_field_names_file_record_and_field(tmp_path):
    f = tmp_path / "cola.jsonl"
    f.write_text('{"sentence": "Good one.", "label": 1}\n{"sentence": "No label."}\n{"sentence": "", "label": 0}\n')
    with pytest.raises(DataFormatError, match=r"cola\.jsonl: record 1 \(line 2\): field 'label' is missing"):
        load_task("cola", path=f)
    data = load_task("cola", path=f, on_bad_record="skip")
    assert len(data.examples) == 1 and data.n_skipped == 2
    assert "record 1" in data.skipped[0] and "'label'" in data.skipped[0]
    assert "record 2" in data.skipped[1] and "'sentence' is empty" in data.skipped[1]
    bad_label = tmp_path / "rte.jsonl"
    bad_label.write_text('{"sentence1": "a", "sentence2": "b", "label": 7}\n')
    with pytest.raises(DataFormatError, match=r"record 0 .*'label' = 7"):
        load_task("rte", path=bad_label)
    with pytest.raises(DataFormatError, match="not valid JSON"):
        (tmp_path / "x.jsonl").write_text("{oops\n")
        load_task("sst2", path=tmp_path / "x.jsonl")


def test_run_task_reports_skips(llama, tmp_path):
    f = tmp_path / "cola.jsonl"
    f.write_text('{"sentence": "The cat sleeps.", "label": 1}\n{"label": 0}\n{"sentence": "Cat the.", "label": 0}\n')
    r = run_task(llama, "cola", path=f, on_bad_record="skip")
    assert r.n == 2 and r.n_skipped == 1 and "'sentence' is missing" in r.skipped[0]
    assert r.summary()["n_skipped"] == 1


def test_piqa_labels_must_align(tmp_path):
    (tmp_path / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n' * 3)
    (tmp_path / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(DataFormatError, match="2 labels"):
        load_task("piqa", path=tmp_path / "valid.jsonl")
    (tmp_path / "valid-labels.lst").write_text("0\n1\n1\n")
    assert [e.label for e in load_task("piqa", path=tmp_path / "valid.jsonl").examples] == [0, 1, 1]


# --------------------------------------------------------------------------- run_task


def test_run_task_binary_metrics_by_hand(llama, tmp_path):
    f = tmp_path / "sst2.jsonl"
    sents = [("the film is great .", 1), ("a dull mess .", 0), ("lovely .", 1), ("bad .", 0), ("fine fun .", 1)]
    f.write_text("\n".join(json.dumps({"sentence": s, "label": y, "idx": i}) for i, (s, y) in enumerate(sents)))
    r = run_task(llama, "sst2", path=f)
    ctx = [f"{s}\nQuestion: Is this sentence positive or negative?\nAnswer:" for s, _ in sents]
    direct = multiple_choice(llama, ctx, [["negative", "positive"]] * 5, [y for _, y in sents])
    assert r.details.pred == direct.pred and r.metrics["acc"] == direct.acc
    assert r.metrics["acc_norm"] == direct.acc_norm
    y = [lab for _, lab in sents]
    tp = sum(a == b == 1 for a, b in zip(y, direct.pred))
    fp = sum(a == 0 and b == 1 for a, b in zip(y, direct.pred))
    fn = sum(a == 1 and b == 0 for a, b in zip(y, direct.pred))
    assert r.metrics["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    assert -1.0 <= r.metrics["mcc"] <= 1.0
    assert r.intervals["acc"].value == r.metrics["acc"] and r.n == 5 and r.seconds > 0
    s = r.summary()
    assert s["acc_low"] <= s["acc"] <= s["acc_high"] and s["task"] == "sst2"


def test_binary_stats_known_values():
    assert _binary_stats([1, 1, 0, 0], [1, 1, 0, 0]) == (1.0, 1.0)
    assert _binary_stats([1, 1, 0, 0], [0, 0, 1, 1]) == (0.0, -1.0)
    f1, mcc = _binary_stats([1, 0, 1, 0], [1, 1, 1, 0])  # tp=2 fp=1 fn=0 tn=1
    assert f1 == pytest.approx(0.8) and mcc == pytest.approx((2 * 1 - 1 * 0) / math.sqrt(3 * 2 * 1 * 2))
    assert _binary_stats([1, 1], [1, 1])[1] == 0.0  # undefined MCC -> 0, as sklearn


def test_run_task_piqa_and_dialogue_on_tiny(llama):
    r = run_task(llama, "piqa", limit=6)
    assert r.n == 6 and set(r.metrics) == {"acc", "acc_norm"} and r.limit == 6 and r.n_skipped == 0
    direct = multiple_choice(llama, [e.context for e in load_task("piqa", limit=6).examples],
                             [list(e.choices) for e in load_task("piqa", limit=6).examples],
                             [e.label for e in load_task("piqa", limit=6).examples])
    assert r.details.correct == direct.correct and r.details.correct_norm == direct.correct_norm


def test_dialogue_rank_metrics(llama, tmp_path):
    f = tmp_path / "d.jsonl"
    recs = [{"article": "m : hi . f : hello ?", "options": ["m : yes .", "m : no", "m : why ?", "m : ok ."],
             "answers": a, "id": str(i)} for i, a in enumerate("ABCD")]
    f.write_text("\n".join(json.dumps(r) for r in recs))
    r = run_task(llama, "dialogue", path=f)
    lls = r.details.logprobs[0]  # same article and options for all four: only the gold differs
    order = sorted(range(4), key=lambda j: -lls[j])
    assert r.metrics["acc"] == 0.25
    assert r.metrics["mrr"] == pytest.approx(sum(1 / (k + 1) for k in range(4)) / 4)
    assert r.metrics["r@2"] == pytest.approx(0.5)
    assert r.details.pred == [order[0]] * 4


def test_few_shot_contexts():
    pool = [MCExample(f"Q{i}?\nAnswer:", ("a", "b"), i % 2, i) for i in range(6)]
    ctx = _with_shots(pool[:3], pool, 2, seed=0)
    for ex, c in zip(pool[:3], ctx):
        parts = c.split("\n\n")
        assert len(parts) == 3 and parts[-1] == ex.context
        shots = [p for p in pool if f"{p.context} {p.choices[p.label]}" in parts[:2]]
        assert len(shots) == 2 and ex not in shots
    assert _with_shots(pool[:3], pool, 2, seed=0) == ctx  # deterministic
    assert _with_shots(pool[:3], pool, 2, seed=1) != ctx
    assert _with_shots(pool[:3], pool, 0, seed=5) == [e.context for e in pool[:3]]
    desc = MCExample("Q?\nAnswer:", ("A", "B"), 0, 9, description="About x.\n\n")
    assert _with_shots([desc], [desc, pool[0]], 1, seed=0) == ["About x.\n\nQ0?\nAnswer: a\n\nQ?\nAnswer:"]
    lam = [TargetExample("It was", " good", 0), TargetExample("So", " far", 1)]
    assert _with_shots(lam[:1], lam, 1, seed=0) == ["So far\n\nIt was"]
    with pytest.raises(ValueError, match="num_fewshot"):
        _with_shots(pool[:1], pool[:2], 2, seed=0)


def test_run_task_few_shot(llama):
    r = run_task(llama, "cola", limit=3, seed=0, num_fewshot=1)
    assert r.n == 3 and r.num_fewshot == 1
    with pytest.raises(ValueError, match="num_fewshot"):
        run_task(llama, "cola", limit=3, num_fewshot=-1)
