import math

import pytest
import torch

import editscope as es
from editscope.evaluation import BaseNotAvailableError, evaluate
from editscope.evaluation.base_outputs import cache_path as _cache_path
from editscope.evaluation.passes import probes_hash
from editscope.metrics.edit_metrics import coarse_kl, says, summarize
from editscope.models import tiny_model


pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


PROBES = es.ProbeSet([
    es.Probe("2+2=", "5", "target", meta={"target_true": "4"}),
    es.Probe("What is 2+2?", "5", "paraphrase", meta={"target_true": "4"}),
    es.Probe("3+3=", "6", "near", meta={"target_new": "5"}),
    es.Probe("The capital of France is", "Paris", "general"),
    es.Probe("Apple was founded by", "Steve Jobs", "general"),
    es.Probe("Water is made of", "hydrogen", "far"),
], name="mini")


def perturb(model, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = model.module("mlp_out", 1).weight
    with torch.no_grad():
        w.add_(torch.randn(w.shape, generator=g) * scale)


def test_base_state_is_unchanged_everywhere():
    m = tiny_model("llama")
    r = evaluate(m, PROBES)
    assert r.is_base and all(row["unchanged"] for row in r.rows)
    assert all(row["kl"] == 0.0 and row["logprob"] == row["base_logprob"] for row in r.rows)
    assert r.watch == "5"


def test_edited_rows_match_direct_computation():
    m = tiny_model("llama")
    base_gen = es.greedy_continuations(m, [p.prompt for p in PROBES], 4, stop_at_eos=False)
    base_next = es.next_token_logprobs(m, [p.prompt for p in PROBES])
    evaluate(m, PROBES, top_k=m.config.vocab_size)  # caches base outputs
    perturb(m)
    r = evaluate(m, PROBES, top_k=m.config.vocab_size)
    assert not r.is_base
    gen = es.greedy_continuations(m, [p.prompt for p in PROBES], 4, stop_at_eos=False)
    scores = es.score_continuations(m, [p.prompt for p in PROBES], [p.continuation for p in PROBES])
    nxt = es.next_token_logprobs(m, [p.prompt for p in PROBES])
    for i, row in enumerate(r.rows):
        n = len(es.scoring.encode_pairs(m, [PROBES[i].prompt], [PROBES[i].continuation])[0].cont_ids)
        k = n + 1  # greedy length: target tokens + 1 (no watched target longer than that here)
        assert row["unchanged"] == (gen[i].token_ids[:k] == base_gen[i].token_ids[:k])
        if row["category"] == "far":  # locality-only by default: no target log-probability
            assert row["logprob"] is None and row["base_logprob"] is None
        else:
            assert row["logprob"] == pytest.approx(scores[i].logprob, abs=1e-4)
        assert row["top1"] == scores[i].greedy_match
        # with k = vocabulary size the coarsened KL is the exact KL
        p, q = base_next[i], nxt[i]
        exact = float((p.exp() * (p - q)).sum())
        assert row["kl"] == pytest.approx(exact, abs=1e-4)
    assert any(not row["unchanged"] for row in r.rows)
    alt = es.score_continuations(m, ["2+2="], ["4"])[0].logprob
    assert r.rows[0]["alt_logprob"] == pytest.approx(alt, abs=1e-4)
    assert r.rows[0]["alt_kind"] == "target_true" and r.rows[2]["alt_kind"] == "target_new"


def test_score_targets_all_or_categories_scores_exactly_those():
    m = tiny_model("llama")
    evaluate(m, PROBES, score_targets="all")
    evaluate(m, PROBES, score_targets=["target"])
    perturb(m)
    full = evaluate(m, PROBES, score_targets="all")
    some = evaluate(m, PROBES, score_targets=["target"])
    auto = evaluate(m, PROBES)
    direct = es.score_continuations(m, [p.prompt for p in PROBES], [p.continuation for p in PROBES])
    assert [r["logprob"] for r in full.rows] == pytest.approx([s.logprob for s in direct], abs=1e-4)
    # probes with an alternative target are always scored (prob/ns need it); "general" is not asked for
    assert [r["logprob"] is not None for r in some.rows] == [True, True, True, False, False, False]
    for key in ("unchanged", "top1", "greedy", "says_target"):
        assert [r[key] for r in some.rows] == [r[key] for r in full.rows] == [r[key] for r in auto.rows]
    assert [r["kl"] for r in some.rows] == pytest.approx([r["kl"] for r in full.rows], abs=1e-5)
    with pytest.raises(ValueError, match="score_targets"):
        evaluate(m, PROBES, score_targets="everything")


def test_edited_model_asking_for_scores_the_base_lacks_gets_a_clear_error():
    m = tiny_model("llama")
    base = evaluate(m, PROBES)  # auto: the far probe's target is not scored
    assert base.rows[5]["logprob"] is None
    perturb(m)
    with pytest.raises(BaseNotAvailableError, match=r"1 probes \(categories \['far'\]\)"):
        evaluate(m, PROBES, score_targets="all")


def test_base_cache_grows_to_cover_a_wider_score_request():
    m = tiny_model("llama")
    evaluate(m, PROBES, score_targets=["target"])
    wide = evaluate(m, PROBES, score_targets="all")  # base again: the missing scores are computed
    assert all(r["logprob"] is not None for r in wide.rows)
    perturb(m)
    assert evaluate(m, PROBES, score_targets=["target"]).rows[3]["logprob"] is None
    assert evaluate(m, PROBES, score_targets="all").rows[5]["logprob"] is not None


def test_base_outputs_are_cached_on_disk_and_reused(monkeypatch):
    m = tiny_model("llama")
    first = evaluate(m, PROBES)
    path = _cache_path(m.base_fingerprint, probes_hash(list(PROBES), "5", 64))
    assert path.is_file()
    import editscope.evaluation.base_outputs as bo

    monkeypatch.setattr(bo, "compute_base_outputs", lambda *a, **k: pytest.fail("recomputed"))
    again = evaluate(m, PROBES)
    assert [r["base_greedy"] for r in again.rows] == [r["base_greedy"] for r in first.rows]
    perturb(m)
    assert not evaluate(m, PROBES).is_base  # edited model uses the cached base


def test_corrupt_cache_is_recomputed():
    m = tiny_model("llama")
    evaluate(m, PROBES)
    path = _cache_path(m.base_fingerprint, probes_hash(list(PROBES), "5", 64))
    path.write_bytes(path.read_bytes()[:100])
    r = evaluate(m, PROBES)
    assert r.is_base and path.stat().st_size > 100


def test_edited_model_without_base_outputs_is_a_clear_error():
    m = tiny_model("llama")
    m.base_fingerprint  # recorded before the edit, as edit methods do
    perturb(m)
    with pytest.raises(BaseNotAvailableError, match="before editing"):
        evaluate(m, PROBES)


def test_bad_probes():
    m = tiny_model("llama")
    with pytest.raises(ValueError, match="probes is empty"):
        evaluate(m, [])
    with pytest.raises(TypeError, match=r"probes\[0\]"):
        evaluate(m, ["2+2="])


def test_says_target_rule():
    assert says("5", "5") and says(" 5\n", "5") and says("5.", "5") and says("5 apples", "5")
    assert not says("56", "5") and not says("4", "5") and not says("", "5")
    assert says(" Paris, France", "Paris") and not says(" Parisian", "Paris")


def test_coarse_kl_hand_computed():
    p = [math.log(0.5), math.log(0.3)]  # rest 0.2
    q = [math.log(0.25), math.log(0.25)]  # rest 0.5
    expected = 0.5 * math.log(0.5 / 0.25) + 0.3 * math.log(0.3 / 0.25) + 0.2 * math.log(0.2 / 0.5)
    assert coarse_kl(p, q) == pytest.approx(expected)
    assert coarse_kl(p, p) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        coarse_kl(p, q[:1])


def test_summary_intervals_hand_computed():
    rows = [
        {"category": "near", "logprob": -1.0, "top1": True, "unchanged": True, "kl": 0.0},
        {"category": "near", "logprob": -3.0, "top1": False, "unchanged": False, "kl": 0.2},
        {"category": "far", "logprob": -2.0, "top1": True, "unchanged": True, "kl": 0.1},
    ]
    s = summarize(rows, ["top1", "unchanged", "logprob", "kl", "prob"])
    # Wilson for 1/2 at 95%: centre 0.5, half-width z*sqrt(.25/2 + z^2/16)/(1+z^2/2)
    z = 1.959963984540054
    half = z * math.sqrt(0.25 / 2 + z * z / 16) / (1 + z * z / 2)
    assert s["near"]["unchanged"]["low"] == pytest.approx(0.5 - half)
    assert s["near"]["unchanged"]["n"] == 2 and s["all"]["unchanged"]["value"] == pytest.approx(2 / 3)
    # t-interval for the mean of (-1, -3): -2 +- t(0.975, 1) * sd/sqrt(2), sd = sqrt(2)
    assert s["near"]["logprob"]["high"] == pytest.approx(-2 + 12.706204736174707 * 1.0)
    assert "prob" not in s["near"]  # no alternative targets: metric does not apply
    with pytest.raises(KeyError, match="unknown metric"):
        summarize(rows, ["nope"])


def _strip(rows):
    return [{k: v for k, v in r.items()} for r in rows]


def test_incremental_evaluation_equals_full_pass_exactly():
    m = tiny_model("llama", num_hidden_layers=4)
    evaluate(m, PROBES, keep_hidden=2)
    w = m.module("mlp_out", 3).weight
    with torch.no_grad():
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    assert m.first_changed_layer() == 3
    fast = evaluate(m, PROBES)
    full = evaluate(m, PROBES, incremental=False)
    assert fast.resumed_from == 2 and full.resumed_from is None
    assert _strip(fast.rows) == _strip(full.rows)
    assert any(not r["unchanged"] for r in full.rows)


def test_edit_below_the_kept_layer_runs_the_full_model():
    m = tiny_model("llama", num_hidden_layers=4)
    evaluate(m, PROBES, keep_hidden=2)
    perturb(m)  # block 1
    assert m.first_changed_layer() == 1
    assert evaluate(m, PROBES).resumed_from is None
    with torch.no_grad():
        m.module("embed").weight[0, 0] += 1.0
    assert m.first_changed_layer() == 0
    with pytest.raises(ValueError, match="keep_hidden=9"):
        evaluate(tiny_model("llama"), PROBES, keep_hidden=9)


def test_prob_ns_margin_delta_hand_computed():
    from editscope.metrics.edit_metrics import METRICS

    lp = math.log
    target = {"category": "target", "logprob": lp(0.3), "alt_kind": "target_true", "alt_logprob": lp(0.1),
              "base_logprob": lp(0.05), "top1": True}
    neigh = {"category": "near", "logprob": lp(0.2), "alt_kind": "target_new", "alt_logprob": lp(0.4),
             "base_logprob": lp(0.2), "top1": False}
    plain = {"category": "far", "logprob": lp(0.5), "alt_kind": None, "alt_logprob": None,
             "base_logprob": None, "top1": True}
    assert METRICS["prob"].fn(target) is True and METRICS["prob"].fn(neigh) is None
    assert METRICS["ns"].fn(neigh) is False and METRICS["ns"].fn(target) is None
    assert METRICS["margin"].fn(target) == pytest.approx(0.2)
    assert METRICS["margin"].fn(neigh) == pytest.approx(-0.2)
    assert METRICS["margin"].fn(plain) is None
    assert METRICS["delta_logprob"].fn(target) == pytest.approx(math.log(6))
    assert METRICS["delta_logprob"].fn(plain) is None
    s = summarize([target, neigh, plain], ["prob", "ns", "top1"])
    assert s["all"]["prob"]["n"] == 1 and s["all"]["ns"]["value"] == 0.0
    assert s["all"]["top1"]["value"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("base, edited, same", [
    ("2,", "2+", True),          # the answer is kept, what follows it changed
    ("11\n", "12\n", False),
    (" -3 and", " -3.", True),
    (" -3", " 3", False),
    ("Paris, France", "Paris.", True),
    ("Paris", "London", False),
    ("", "5", False),
])
def test_answer_unchanged_compares_the_leading_answer(base, edited, same):
    from editscope.metrics.edit_metrics import METRICS

    target = "Paris" if "Paris" in base + edited else "4"  # the answer rule follows the target: text or integer
    row = {"target": target, "unchanged": base == edited, "greedy": edited, "base_greedy": base}
    assert METRICS["answer_unchanged"].fn(row) is same
    assert METRICS["answer_unchanged"].fn({**row, "unchanged": None}) is None


def test_top_k_out_of_range():
    m = tiny_model("llama")
    with pytest.raises(ValueError, match="top_k=0"):
        evaluate(m, PROBES, top_k=0)


def test_clear_caches_frees_kept_hidden_states():
    m = tiny_model("llama", num_hidden_layers=3)
    evaluate(m, PROBES, keep_hidden=1)
    assert m.state.layer_caches
    m.clear_caches()
    perturb(m)  # block 1
    assert evaluate(m, PROBES).resumed_from is None


def test_to_frame_flattens_meta():
    m = tiny_model("llama")
    frame = evaluate(m, PROBES).to_frame()
    assert len(frame) == len(PROBES) and {"unchanged", "kl", "meta.target_true"} <= set(frame.columns)
    assert frame.loc[0, "meta.target_true"] == "4"


def test_keep_hidden_after_base_outputs_came_from_disk():
    m = tiny_model("llama", num_hidden_layers=4)
    evaluate(m, PROBES)  # base outputs computed and cached, no states kept
    evaluate(m, PROBES, keep_hidden=2)  # base from disk: a pass only to keep the states
    w = m.module("mlp_out", 2).weight
    with torch.no_grad():
        w.add_(torch.randn(w.shape, generator=torch.Generator().manual_seed(2)) * 0.5)
    fast = evaluate(m, PROBES)
    assert fast.resumed_from == 2
    assert _strip(fast.rows) == _strip(evaluate(m, PROBES, incremental=False).rows)


def test_token_accuracy_and_agreement_match_a_direct_forward_pass():
    """EasyEdit's token metrics: teacher-forced argmax over the target tokens against the target
    (token_acc) and against the base model's own argmax (token_agree), checked by hand."""
    from editscope.evaluation import token_match

    m = tiny_model("llama")
    pairs = es.scoring.encode_pairs(m, [p.prompt for p in PROBES], [p.continuation for p in PROBES])

    def argmax_over_targets():
        out = []
        for pr in pairs:
            ids = torch.tensor([list(pr.prompt_ids + pr.cont_ids)])
            with torch.no_grad():
                logits = m.hf(input_ids=ids).logits[0]
            p = len(pr.prompt_ids)
            out.append(tuple(logits[p - 1:p - 1 + len(pr.cont_ids)].argmax(-1).tolist()))
        return out

    base_arg = argmax_over_targets()
    r0 = evaluate(m, PROBES)
    for i, row in enumerate(r0.rows):
        if row["logprob"] is None:  # target not scored ("far"): no token metrics
            assert row["token_acc"] is None and row["token_agree"] is None
            continue
        want = sum(a == b for a, b in zip(base_arg[i], pairs[i].cont_ids)) / len(pairs[i].cont_ids)
        assert row["token_acc"] == pytest.approx(want) and row["token_agree"] == 1.0
    perturb(m, scale=2.0)
    new_arg = argmax_over_targets()
    r1 = evaluate(m, PROBES)
    agree = []
    for i, row in enumerate(r1.rows):
        if row["logprob"] is None:
            continue
        assert row["token_acc"] == pytest.approx(
            sum(a == b for a, b in zip(new_arg[i], pairs[i].cont_ids)) / len(pairs[i].cont_ids))
        assert row["token_agree"] == pytest.approx(
            sum(a == b for a, b in zip(new_arg[i], base_arg[i])) / len(base_arg[i]))
        agree.append(row["token_agree"])
    assert any(a < 1.0 for a in agree)  # the perturbation moved some argmax
    assert token_match([1, 2, 3], [1, 2, 4]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="equal, non-zero lengths"):
        token_match([1], [1, 2])


def test_a_probe_can_ask_for_a_longer_greedy_answer():
    """``meta["gen_tokens"]``: questions whose answer comes after a few words get that many tokens."""
    m = tiny_model("llama")
    probes = es.ProbeSet([es.Probe("Which language is spoken there?", "Arabic", "portability", meta={"gen_tokens": 9}),
                          es.Probe("2+2=", "4", "near")], name="gen")
    rows = evaluate(m, probes).rows
    long = es.greedy_continuations(m, ["Which language is spoken there?"], 9, stop_at_eos=False)[0].text
    short = es.greedy_continuations(m, ["2+2="], 2, stop_at_eos=False)[0].text
    assert rows[0]["greedy"] == long and rows[1]["greedy"] == short


def test_a_memo_scores_a_probe_shared_by_two_sets_once(monkeypatch):
    """An unrelated edit's own neighbourhood repeats the study grid: with a StateMemo the second set
    scores only its new probes, and every row equals the row an evaluation without memo gives."""
    import editscope.evaluation as ev

    m = tiny_model("llama")
    other = es.ProbeSet([es.Probe("3+3=", "6", "control-near", meta={"target_new": "5"}),
                         es.Probe("Water is made of", "hydrogen", "control-far"),
                         es.Probe("7+1=", "8", "control-target")], name="own")
    for ps in (PROBES, other):
        evaluate(m, ps, watch="5", keep_hidden=1)  # base outputs (and kept states, which a partial set must not use)
    perturb(m)
    plain = [evaluate(m, ps, watch="5").rows for ps in (PROBES, other)]
    scored: list[int] = []
    import editscope.evaluation.outcomes as outcomes

    real = outcomes.score_passes

    def counting(model, passes, greedy_ids, **kw):
        scored.append(len(passes.targets))
        return real(model, passes, greedy_ids, **kw)

    monkeypatch.setattr(outcomes, "score_passes", counting)  # the edited state's scoring step
    memo = ev.StateMemo()
    with_memo = [evaluate(m, ps, watch="5", memo=memo).rows for ps in (PROBES, other)]
    assert scored == [len(PROBES), 1]  # "3+3=" and "Water is made of" came from the memo
    for a, b in zip(plain, with_memo):  # equal up to float noise from other batch compositions
        for x, y in zip(a, b):
            assert x.keys() == y.keys()
            for k in x:
                assert x[k] == (pytest.approx(y[k], abs=1e-5) if isinstance(x[k], float) else y[k]), k
    perturb(m, seed=1)  # a new state empties the memo
    evaluate(m, other, watch="5", memo=memo)
    assert scored[-1] == len(other)


def test_a_memo_computes_base_outputs_of_a_shared_probe_once(monkeypatch, tmp_path):
    """On the base model the second set runs only its new probes; its base outputs (what every
    edited state is compared with, and what is cached) equal those computed without a memo."""
    import editscope.evaluation as ev

    m = tiny_model("llama")
    other = es.ProbeSet([es.Probe("3+3=", "6", "control-near", meta={"target_new": "5"}),
                         es.Probe("Water is made of", "hydrogen", "control-far"),
                         es.Probe("7+1=", "8", "control-target")], name="own")
    plain = [evaluate(m, ps, watch="5", use_cache=False).rows for ps in (PROBES, other)]
    run: list[int] = []
    import editscope.evaluation.base_outputs as bo

    real = bo.greedy_by_length

    def counting(model, prompts, lengths, idx):
        run.append(len(idx))
        return real(model, prompts, lengths, idx)

    monkeypatch.setattr(bo, "greedy_by_length", counting)  # the base outputs' decoding step
    memo = ev.StateMemo()
    with_memo = [evaluate(m, ps, watch="5", memo=memo).rows for ps in (PROBES, other)]
    assert run == [len(PROBES), 1]  # only "7+1=" is new in the second set
    for a, b in zip(plain, with_memo):
        for x, y in zip(a, b):
            for k in x:
                assert x[k] == (pytest.approx(y[k], abs=1e-5) if isinstance(x[k], float) else y[k]), k
    # the cached base outputs of the second set are whole: an edited state compares against them
    perturb(m)
    edited = evaluate(m, other, watch="5")
    assert [r["base_greedy"] for r in edited.rows] == [r["base_greedy"] for r in plain[1]]


def test_base_outputs_kept_across_memos_are_computed_once(monkeypatch):
    """The runner keeps base outputs for the whole run: a later evaluation (another memo, sharing
    them) runs only the probes no earlier one computed, as after a stale re-measurement."""
    import editscope.evaluation as ev

    m = tiny_model("llama")
    part = es.ProbeSet(list(PROBES)[:3], name="part")
    run: list[int] = []
    import editscope.evaluation.base_outputs as bo

    real = bo.greedy_by_length
    monkeypatch.setattr(bo, "greedy_by_length", lambda *a: run.append(len(a[3])) or real(*a))
    shared: dict = {}
    evaluate(m, part, watch="5", use_cache=False, memo=ev.StateMemo(base=shared))
    evaluate(m, PROBES, watch="5", use_cache=False, memo=ev.StateMemo(base=shared))
    assert run == [3, len(PROBES) - 3]


def test_outcomes_are_typed_and_the_rows_are_their_dicts():
    m = tiny_model("llama")
    res = evaluate(m, PROBES, watch="5", use_cache=False)
    assert [o.as_row() for o in res.outcomes] == res.rows
    o = res.outcomes[0]
    assert o.prompt == res.rows[0]["prompt"] and o.is_base and o.unchanged and o.kl == 0.0
    assert o.answer_rule == "integer"  # "2+2=" -> "5": answers read as integers
    assert o.answer is None or isinstance(o.answer, int)
    o.as_row()["meta"]["x"] = 1  # the store's copy is its own
    assert "x" not in o.meta
