"""MQuAKE's accuracies in a study, on a hand-built store whose greedy texts are chosen by hand."""

import pytest

from editscope.report.analyses.mquake import mquake_rows
from editscope.report.formats.render import mquake_table
from editscope.report.data.results import load_results
from editscope.runner.config import parse_config
from editscope.runner.store import FILENAME, ResultsStore
from editscope.stats import wilson_interval


def _rows(case, rewrites_ok, hops_ok, questions_ok, old_ok=()):
    """One unit's rows of a 2-rewrite case: which probes give the right answer."""
    rows, j = [], 0
    for k, ok in enumerate(rewrites_ok):
        rows.append({"index": j, "category": "target", "prompt": f"{case} r{k}", "target": f"New{k}",
                     "meta": {"case_id": case, "rewrite": k}, "top1": False, "greedy": f" New{k} indeed" if ok else " no"})
        j += 1
    for h, ok in enumerate(hops_ok):
        rows.append({"index": j, "category": "portability-hop", "prompt": f"{case} h{h}", "target": f"Hop{h}",
                     "meta": {"case_id": case, "hop": h, "aliases": [f"H{h} alias"]},
                     "top1": False, "greedy": f" the H{h} alias" if ok else " nothing"})
        j += 1
    for q, ok in enumerate(questions_ok):
        old = q < len(old_ok) and old_ok[q]
        rows.append({"index": j, "category": "portability", "prompt": f"{case} q{q}", "target": "Arabic",
                     "meta": {"case_id": case, "question": q, "aliases": ["Arabic language"], "old_answer": "English",
                              "answer_alias": ["en"]},
                     "top1": False, "greedy": " arabic language" if ok else (" en" if old else " french")})
        j += 1
    return rows


def test_mquake_accuracies_by_hand(tmp_path):
    cfg = parse_config({"name": "mq", "model": "smollm2-135m", "methods": ["rome"],
                        "edits": [{"prompt": f"c{i} r0", "target_new": "New0"} for i in range(3)]})
    s = ResultsStore(tmp_path / FILENAME, create=True)
    s.set_meta(config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash(), name="mq", status="complete")
    s.add_unit("base", "base", 0, [], "done", rows={"all": _rows("c0", [False, False], [False, False],
                                                                [False, False, False], [True, False, True])})
    # rewrites 3/6; instance-wise: c0 only (every hop); multi-hop: c0 and c2 (any question)
    units = {"c0": ([True, True], [True, True], [False, True, False]),
             "c1": ([True, False], [True, False], [False, False, False], [True]),
             "c2": ([False, False], [False, True], [True, True, True])}
    for i, (case, spec) in enumerate(units.items()):
        s.add_unit("rome", f"edit-{i:04d}", 0, [i], "done", rows={f"case#e{i}": _rows(case, *spec)})  # a set per edit
    s.close()
    res = load_results(tmp_path)
    base, rome = mquake_rows(res)
    assert base.cells["multi-hop"].value == 0.0 and base.cells["multi-hop (old answer)"].value == 1.0
    c = rome.cells
    assert (c["edit-wise"].value, c["edit-wise"].n) == (pytest.approx(3 / 6), 6)
    assert (c["instance-wise"].value, c["instance-wise"].n) == (pytest.approx(1 / 3), 3)
    assert c["multi-hop"].value == pytest.approx(2 / 3)
    assert c["multi-hop (old answer)"].value == pytest.approx(1 / 3)  # c1 still says the old answer ("en")
    w = wilson_interval(2, 3)
    assert (c["multi-hop"].low, c["multi-hop"].high) == (w.low, w.high)
    t = mquake_table(res)
    assert t.header[1:] == ["edit-wise", "instance-wise", "multi-hop", "multi-hop (old answer)"]


def test_no_mquake_table_without_its_probes(tmp_path):
    cfg = parse_config({"name": "x", "model": "smollm2-135m", "methods": ["rome"],
                        "edits": [{"prompt": "a", "target_new": "b"}]})
    s = ResultsStore(tmp_path / FILENAME, create=True)
    s.set_meta(config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash(), name="x", status="complete")
    s.add_unit("base", "base", 0, [], "done", rows={"p": [{"index": 0, "category": "near", "prompt": "p",
                                                          "target": "t", "meta": {}, "greedy": " t"}]})
    s.close()
    res = load_results(tmp_path)
    assert mquake_rows(res) == [] and mquake_table(res) is None
