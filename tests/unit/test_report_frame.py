"""The report's DataFrame layer: each metric's column form equals its row form, the frame reads
back exactly the rows the store returns, and the frame's aggregations equal hand-computed ones."""

import math

import pandas as pd
import pytest

from editscope.metrics.edit_metrics import KL_THRESHOLD, METRICS, summarize
from editscope.report.data.frame import RowFrame, paired_values, summarize_frame, values_cell
from editscope.report.data.results import LOCALITY, breakdown, load_results, rate_cell
from editscope.runner.config import parse_config
from editscope.runner.store import FILENAME, ResultsStore
from editscope.stats import mcnemar_exact, wilson_interval


def _row(**kw) -> dict:
    base = {"method": "m", "unit": "edit-0000", "step": 0, "probe_set": "p", "index": 0, "edit_index": 0,
            "category": "near", "prompt": "q", "target": "t", "meta": {}, "logprob": -1.0, "n_tokens": 1,
            "top1": True, "alt_kind": None, "alt_logprob": None, "base_logprob": None, "base_top1": None,
            "unchanged": None, "kl": None, "says_target": None, "greedy": None, "base_greedy": None,
            "is_base": False, "base_margin": None, "token_acc": None, "token_agree": None}
    return {**base, **kw}


#: rows that reach every branch of every metric (None where a metric does not apply)
ROWS = [
    _row(),
    _row(top1=False, alt_kind="target_true", alt_logprob=-0.5, base_logprob=-2.0),
    _row(alt_kind="target_true", alt_logprob=-3.0),
    _row(alt_kind="target_new", alt_logprob=-0.2, logprob=-0.1),
    _row(alt_kind="target_new", alt_logprob=-0.05, logprob=-0.1),
    _row(unchanged=True, greedy=" 4, so", base_greedy=" 4, so", kl=0.0),
    _row(target="4", unchanged=False, greedy=" 4+1", base_greedy=" 4, so", kl=0.5),  # same answer 4
    _row(unchanged=False, greedy=" 5", base_greedy=" 4", kl=0.5),          # changed, KL above the line
    _row(unchanged=False, greedy=" 5", base_greedy=" 4", kl=KL_THRESHOLD / 2),  # changed, a near tie
    _row(unchanged=False, greedy="", base_greedy=" 4", kl=None),
    _row(unchanged=False, greedy=None, base_greedy=" 4"),
    _row(says_target=True, unchanged=False, greedy="Paris.", base_greedy="Rome", kl=2.0),
    _row(says_target=False, top1=None, logprob=None),
    _row(token_acc=0.5, token_agree=1.0),
    _row(token_acc=0.0, token_agree=2 / 3),
    # answers: the first-token trap ("12" for target "1"), number words, text with aliases, no answer
    _row(target="1", unchanged=False, greedy="12", base_greedy="1\n", kl=0.4),
    _row(target="5", unchanged=False, greedy=" five.", base_greedy="11", meta={"aliases": ["five"]}, kl=0.4),
    _row(target="4", unchanged=False, greedy="4\n", base_greedy="=\n", kl=0.4),
    _row(target="Paris", unchanged=False, greedy=" Paris, France", base_greedy=" the city of", kl=0.1),
    _row(target="Paris", unchanged=True, greedy=" Parisian", base_greedy=" Parisian", kl=0.0),
    _row(target="New York", unchanged=False, greedy=" NYC.", base_greedy=" New York.",
         meta={"aliases": ["NYC"]}, kl=0.3),
]


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_column_equals_its_row_form(name):
    frame = RowFrame.of(ROWS)
    col = frame.metric(name).tolist()
    # the same column from a plain DataFrame of the rows (no columns the frame derives once)
    plain = frame.df.drop(columns=["answer_rule", "accepted", "base_answer", "base_status"]).assign(
        meta=[frame.metas[i] for i in frame.df["meta_id"]])
    assert METRICS[name].column(plain).tolist() == pytest.approx(col, nan_ok=True)
    rows = [METRICS[name].fn(r) for r in ROWS]
    assert len(col) == len(rows)
    for got, want in zip(col, rows):
        if want is None:
            assert math.isnan(got)
        else:
            assert got == pytest.approx(float(want))
    assert any(w is not None for w in rows)


def test_metric_columns_hand_checked():
    frame = RowFrame.of(ROWS)
    au = frame.metric("answer_unchanged").tolist()
    assert au[5:9] == [1.0, 1.0, 0.0, 0.0] and math.isnan(au[10])
    ck = frame.metric("changed_kl").tolist()
    assert ck[5:9] == [0.0, 0.0, 1.0, 0.0]
    assert frame.metric("prob").tolist()[1:3] == [0.0, 1.0]
    assert frame.metric("ns").tolist()[3:5] == [1.0, 0.0]


def test_answer_metrics_hand_checked():
    frame = RowFrame.of(ROWS)
    hit = frame.metric("answer_hit").tolist()[-6:]
    assert hit == [0.0, 1.0, 1.0, 1.0, 0.0, 1.0]  # "12" does not reach "1"; "five." reaches 5
    known = frame.metric("base_known").tolist()[-6:]
    assert known == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    au = frame.metric("answer_unchanged").tolist()[-6:]
    assert au == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    wrong = frame.metric("answer_unchanged_wrong").tolist()[-6:]
    assert wrong[1] == 0.0 and math.isnan(wrong[0]) and math.isnan(wrong[2])
    none = frame.metric("answer_unchanged_none").tolist()[-6:]
    assert none[2] == 0.0 and math.isnan(none[1]) and math.isnan(none[3]) and wrong[3] == 0.0  # text: any words answer
    # token-level top1 is what the row says (the evaluation's token prefix), kept beside answer_hit
    assert frame.metric("top1").tolist()[-6] == 1.0


def _store(tmp_path, n_edits: int = 3):
    cfg = parse_config({"name": "hand", "model": "smollm2-135m", "methods": ["rome", "memit"],
                        "edits": [{"prompt": f"p{i} is", "target_new": f"n{i}"} for i in range(n_edits)],
                        "probes": ["facts"]})
    s = ResultsStore(tmp_path / FILENAME, create=True)
    s.set_meta(config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash(), name="hand", status="complete")
    near = [{"index": j, "edit_index": None, "category": "near", "prompt": f"near {j}", "target": "x",
             "meta": {"relation": ["r1", "r2"][j % 2], "tags": ["a", "b"] if j == 0 else ["b"]},
             "logprob": -1.0, "n_tokens": 1, "top1": True, "greedy": f" w{j}", "is_base": True} for j in range(6)]
    s.add_unit("base", "base", 0, [], "ok", rows={"near": near})
    # (method, edit) -> which near probes change their answer
    flips = {("rome", 0): {0}, ("rome", 1): {0, 1, 2}, ("rome", 2): set(),
             ("memit", 0): {0, 3}, ("memit", 1): set(), ("memit", 2): {5}}
    for method in ("rome", "memit"):
        for i in range(n_edits):
            rows = [{"index": 0, "edit_index": i, "category": "target", "prompt": f"p{i} is", "target": f"n{i}",
                     "meta": {}, "logprob": -0.1, "n_tokens": 1, "top1": (method, i) != ("memit", 1)}]
            s.add_unit(method, f"edit-{i:04d}", 0, [i], "ok", rows={
                f"case#e{i}": rows,  # one probe set per edit, as a plan names them
                "near": [{**r, "greedy": " other" if r["index"] in flips[(method, i)] else r["greedy"],
                          "unchanged": r["index"] not in flips[(method, i)], "is_base": False,
                          "base_greedy": r["greedy"], "kl": 0.3} for r in near]})
    s.close()
    return flips


def test_frame_reads_back_exactly_the_stores_rows(tmp_path):
    _store(tmp_path)
    s = ResultsStore(tmp_path / FILENAME)
    rows = s.rows()
    frame = RowFrame.read(s)
    s.close()
    assert frame.to_rows() == rows
    assert RowFrame.of(rows).to_rows() == rows
    res = load_results(tmp_path)
    assert res.rows == rows
    assert res.final_rows("rome") == [r for r in rows if r["method"] == "rome"]


def test_frame_aggregations_equal_hand_computed_ones(tmp_path):
    flips = _store(tmp_path)
    res = load_results(tmp_path, reference="rome")
    # locality (answer unchanged over the 6 near probes of each of 3 edits): rome keeps 18 - 4
    rome, memit = rate_cell(res, "rome", LOCALITY), rate_cell(res, "memit", LOCALITY)
    assert (rome.value, rome.n) == (pytest.approx(14 / 18), 18) and memit.value == pytest.approx(15 / 18)
    assert rome.low < rome.value < rome.high  # a cluster bootstrap over the 3 edits
    # the where filter and the breakdown by a plain and a list-valued meta key
    r1 = rate_cell(res, "rome", LOCALITY, where={"relation": "r1"})  # probes 0, 2, 4: flips 0 (x2) and 2
    assert (r1.value, r1.n) == (pytest.approx(6 / 9), 9)
    by_tag = breakdown(res, LOCALITY, "tags")
    assert list(by_tag) == ["b", "a"]  # most probes first
    assert by_tag["a"]["rome"].n == 3 and by_tag["a"]["rome"].value == pytest.approx(1 / 3)
    assert by_tag["b"]["memit"].value == pytest.approx(1 - 3 / 18)
    # the detail summary equals summarize() over the same rows
    assert res.summary("memit") == summarize(res.final_rows("memit"))
    # paired McNemar of memit against rome on the same (unit, probe): hand-built discordant counts
    (t,) = [t for t in res.tests if t.column == "near/answer_unchanged"]  # one locality category: no pooled column
    only_rome = sum(len(flips[("memit", i)] - flips[("rome", i)]) for i in range(3))  # rome right, memit wrong
    only_memit = sum(len(flips[("rome", i)] - flips[("memit", i)]) for i in range(3))
    ref = mcnemar_exact([True] * only_rome + [False] * only_memit, [False] * only_rome + [True] * only_memit)
    assert (t.n, t.n01, t.n10) == (18, ref.n01, ref.n10)
    assert (t.n01, t.n10) == (only_memit, only_rome) == (3, 2)
    # three edits: the test is over the edits' mean paired differences (memit - rome, 6 probes each)
    from scipy import stats as sps

    per_edit = [(len(flips[("rome", i)]) - len(flips[("memit", i)])) / 6 for i in range(3)]
    assert per_edit == [-1 / 6, 3 / 6, -1 / 6]
    assert t.kind == "edits" and t.n_edits == 3
    assert t.p == pytest.approx(sps.ttest_1samp(per_edit, 0.0).pvalue)
    assert 0 < t.p_cmh <= 1 and t.verdict == "inconclusive"  # three edits can show neither


def test_values_cell_and_paired_values_by_hand():
    v = pd.Series([1.0, 0.0, float("nan"), 1.0])
    c = values_cell(v, None)
    w = wilson_interval(2, 3)
    assert (c.value, c.low, c.high, c.n) == (w.value, w.low, w.high, 3)
    assert values_cell(pd.Series([float("nan")]), None) is None
    a = pd.Series([1.0, 0.0, 1.0], index=[3, 1, 2])
    b = pd.Series([0.0, 1.0], index=[2, 9])
    x, y = paired_values(a, b)
    assert x.tolist() == [True] and y.tolist() == [False]


def test_summarize_frame_orders_categories_as_they_appear():
    rows = [_row(category="near"), _row(category="target"), _row(category="near", top1=False)]
    frame = RowFrame.of(rows)
    got = summarize_frame(frame, frame.df.index, ["top1"])
    assert list(got) == ["near", "target", "all"] and got == summarize(rows, ["top1"])
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        summarize_frame(frame, frame.df.index, ["nope"])
