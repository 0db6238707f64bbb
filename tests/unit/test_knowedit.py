"""The KnowEdit summary table on a hand-built store: per-edit means, then the mean over edits."""

import pytest

from editscope.report.analyses.knowedit import knowedit_rows, per_edit_means
from editscope.report.formats.render import knowedit_table
from editscope.report.data.results import load_results
from editscope.runner.config import parse_config
from editscope.runner.store import FILENAME, ResultsStore
from editscope.stats import mean_interval

#: edit -> (target token_acc, portability token_acc per probe, near token_agree per probe)
EDITS = {0: (1.0, [0.5, 1.0], [1.0, 0.5]), 1: (0.5, [0.0], [1.0, 1.0, 1.0]), 2: (0.0, [], [0.0])}


def _probe(i, cat, j, **kw):
    return {"index": j, "edit_index": i, "category": cat, "prompt": f"{cat} {i} {j}", "target": "x", "meta": {},
            "logprob": -1.0, "n_tokens": 2, "top1": False, **kw}


def _store(tmp_path, token_metrics=True):
    cfg = parse_config({"name": "ke", "model": "smollm2-135m", "methods": ["rome"],
                        "edits": [{"prompt": f"p{i} is", "target_new": f"n{i}"} for i in EDITS],
                        "probes": ["facts"], "fluency": {}})
    s = ResultsStore(tmp_path / FILENAME, create=True)
    s.set_meta(config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash(), name="ke", status="complete")
    s.add_unit("base", "base", 0, [], "done", scalars={"fluency:ngram_entropy": (6.0, {})},
               rows={"case#e0": [_probe(0, "target", 0, token_acc=0.0 if token_metrics else None,
                                     token_agree=1.0 if token_metrics else None)]})
    for i, (tgt, port, near) in EDITS.items():
        rows = [_probe(i, "target", 0, token_acc=tgt if token_metrics else None)]
        rows += [_probe(i, "portability", j + 1, token_acc=v if token_metrics else None) for j, v in enumerate(port)]
        rows += [_probe(i, "near", j + 10, token_agree=v if token_metrics else None) for j, v in enumerate(near)]
        s.add_unit("rome", f"edit-{i:04d}", 0, [i], "done", rows={f"case#e{i}": rows},  # a set per edit
                   scalars={"fluency:ngram_entropy": (5.0 + i, {})})
    s.close()
    return load_results(tmp_path)


def test_knowedit_averages_within_each_edit_then_over_edits(tmp_path):
    res = _store(tmp_path)
    assert sorted(per_edit_means(res, "rome", "locality_token_agreement", "locality")) == [0.0, 0.75, 1.0]
    assert sorted(per_edit_means(res, "rome", "token_acc", "portability")) == [0.0, 0.75]  # edit 2 has none
    base, rome = knowedit_rows(res)
    assert base.method == "base" and base.cells["Edit Succ."].value == 0.0 and base.cells["Fluency"].value == 6.0
    c = rome.cells
    assert c["Edit Succ."].value == pytest.approx(0.5) and c["Edit Succ."].n == 3
    iv = mean_interval([1.0, 0.5, 0.0])
    assert (c["Edit Succ."].low, c["Edit Succ."].high) == pytest.approx((iv.low, iv.high))
    assert c["Portability"].value == pytest.approx(0.375) and c["Portability"].n == 2
    # locality: per edit 0.75, 1.0, 0.0 (not 5/7 pooled over probes)
    assert c["Locality"].value == pytest.approx(1.75 / 3)
    assert c["Fluency"].value == pytest.approx(6.0)  # 5, 6, 7 over the edited units
    t = knowedit_table(res)
    assert t.header == ["method", "Edit Succ.", "Portability", "Locality", "Fluency"]
    assert t.rows[1][1][0].startswith("50.00 [") and t.rows[1][3][0].startswith("58.33 [")


def test_no_table_without_token_metrics(tmp_path):
    res = _store(tmp_path, token_metrics=False)
    assert knowedit_rows(res) == [] and knowedit_table(res) is None


def test_portability_and_locality_by_type(tmp_path):
    from editscope.report.formats.render import typed_probe_tables

    res = _store(tmp_path)
    assert typed_probe_tables(res) == []  # the hand-built probes carry no type
    cfg = parse_config({"name": "ty", "model": "smollm2-135m", "methods": ["rome"],
                        "edits": [{"prompt": "p0 is", "target_new": "n0"}]})
    s = ResultsStore(tmp_path / "typed" / FILENAME, create=True)
    s.set_meta(config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash(), name="ty", status="complete")
    rows = [_probe(0, "portability", 1, meta={"portability_type": "one_hop"}, token_acc=0.5),
            _probe(0, "portability", 2, meta={"portability_type": "one_hop"}, token_acc=1.0),
            _probe(0, "portability", 3, meta={"portability_type": "reversed_relation"}, token_acc=0.0),
            _probe(0, "near", 4, meta={"locality_type": "forgetfulness"}, token_agree=0.25)]
    s.add_unit("base", "base", 0, [], "done", rows={"case": rows})
    s.add_unit("rome", "edit-0000", 0, [0], "done", rows={"case": rows})
    s.close()
    port, loc = typed_probe_tables(load_results(tmp_path / "typed"))
    assert port.header == ["method", "one_hop (n=2)", "reversed_relation (n=1)"]
    assert port.rows[1][1][0].startswith("0.750") and port.rows[1][2][0] == "0.000"
    assert loc.header == ["method", "forgetfulness (n=1)"] and loc.rows[1][1][0] == "0.250"
