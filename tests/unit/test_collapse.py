"""Collapse accounting on hand-built stores: counts, exact intervals, the worst edits, collapse points."""

import pytest

from editscope.report.analyses.collapse import collapse_points, collapse_table
from editscope.report.formats.render import collapse_tables
from editscope.report.data.results import load_results
from editscope.runner.config import parse_config
from editscope.runner.store import FILENAME, ResultsStore
from editscope.stats import clopper_pearson

PPL = [21.0, 25.0, 41.0, 1500.0, 30.0, 2000.0, 19.0, 22.0, 45.0, 23.0]  # base 20: 2 collapse, 4 double


def _target_row(i: int) -> dict:
    return {"index": 0, "edit_index": i, "category": "target", "prompt": f"prompt {i} is", "target": f"new{i}",
            "meta": {}, "logprob": -0.1, "n_tokens": 1, "top1": True}


def _store(tmp_path, protocol: dict, ppl: list[float], guard_ppl: list[float] | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = parse_config({"name": "hand", "model": "smollm2-135m", "methods": ["rome"],
                        "edits": [{"prompt": f"prompt {i} is", "target_new": f"new{i}"} for i in range(len(ppl))],
                        "probes": ["facts"], "perplexity": {"corpus": "me_ppl_50"}, "protocol": protocol})
    s = ResultsStore(tmp_path / FILENAME, create=True)
    s.set_meta(config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash(), name="hand", status="complete")
    s.add_unit("base", "base", 0, [], "ok", scalars={"ppl:me_ppl_50": (20.0, {}),
                                                     **({"guard_ppl": (20.0, {})} if guard_ppl else {})})
    for i, v in enumerate(ppl):
        # an update norm that grows with perplexity, except one outlier
        delta = {"delta:fro": (float(i + 1) if i != 3 else 0.5, {}), "cumulative:fro": (float(i + 1) * 2, {})}
        if protocol["kind"] == "single":
            s.add_unit("rome", f"edit-{i:04d}", 0, [i], "ok", rows={f"case#e{i}": [_target_row(i)]},
                       scalars={"ppl:me_ppl_50": (v, {}), **delta})
        else:
            guard = {"guard_ppl": (guard_ppl[i], {"corpus": "me_ppl_50"})} if guard_ppl else {}
            s.add_unit("rome", f"step-{i + 1:04d}", i + 1, list(range(i + 1)), "ok", rows={f"case#e{i}": [_target_row(i)]},
                       scalars={"ppl:me_ppl_50": (v, {}), **delta, **guard})
    s.close()
    return load_results(tmp_path)


def test_collapse_counts_intervals_and_the_worst_edits(tmp_path):
    res = _store(tmp_path, {"kind": "single"}, PPL)
    (row,) = collapse_table(res, threshold=1000, ratio=2, worst=3)
    assert (row.method, row.corpus, row.n, row.base) == ("rome", "ppl:me_ppl_50", 10, 20.0)
    assert row.collapsed == 2 and row.doubled == 4
    ref = clopper_pearson(2, 10)
    assert (row.collapsed_iv.low, row.collapsed_iv.high) == (ref.low, ref.high)
    assert row.collapsed_iv.low < 0.2 < row.collapsed_iv.high
    assert [u.value for u in row.worst] == [2000.0, 1500.0, 45.0]
    assert row.worst[0].requests == ["prompt 5 is -> new5"]
    assert row.median == pytest.approx(27.5) and row.maximum == 2000.0
    # a stricter line: nothing collapses; a ratio of 1.5 doubles five (30 too)
    (row,) = collapse_table(res, threshold=5000, ratio=1.5)
    assert row.collapsed == 0 and row.doubled == 5 and row.collapsed_iv.low == 0.0
    tables = {t.name: t for t in collapse_tables(res)}
    assert set(tables) == {"collapse", "collapse-worst"}
    assert tables["collapse"].rows[0][3][0].startswith("2 (20.0% [")
    # the write-up placeholders read the same accounting
    from editscope.report.documents.document import DocumentError, fill

    text = fill("{{collapse:rome:units}} | {{collapse:rome:collapsed}} | {{collapse:rome:max}} | {{collapse:rome:base}}\n"
                "{{table:collapse-worst}}", res, str(tmp_path))
    assert text.startswith("10 | 2 (20.0% [") and "| 2000.00 | 20.00" in text.splitlines()[0]
    assert "prompt 5 is -> new5" in text
    assert fill("{{table:collapse-points}}", res, str(tmp_path)).strip() == "(none)"  # a single run has no collapse points
    for bad, match in [("{{collapse:ft:units}}", "no collapse accounting for 'ft'"),
                       ("{{collapse:rome:mean}}", "FIELD one of")]:
        with pytest.raises(DocumentError, match=match):
            fill(bad, res, str(tmp_path))


def test_sequential_collapse_points(tmp_path):
    res = _store(tmp_path, {"kind": "sequential"}, [21.0, 30.0, 45.0, 900.0, 1200.0, 30.0])
    (p,) = collapse_points(res, threshold=1000, ratio=2)
    assert (p.doubled_at, p.collapsed_at, p.steps, p.final) == (3, 5, 6, 30.0)
    (p,) = collapse_points(res, threshold=5000, ratio=100)
    assert p.collapsed_at is None and p.doubled_at is None
    assert [t.name for t in collapse_tables(res)] == ["collapse-points"]
    # the write-up reads a chain's collapse point (the protocol's default lines: 1000 and 2x the base)
    from editscope.report.documents.document import DocumentError, fill

    text = fill("{{collapse:rome:doubled_at}} {{collapse:rome:collapsed_at}} {{collapse:rome:steps}} "
                "{{collapse:rome:final}} {{collapse:rome:base}}", res, str(tmp_path))
    assert text == "3 5 6 30.00 20.00"
    for bad, match in [("{{collapse:rome:median}}", "a sequential run"), ("{{collapse:ft:final}}", "no perplexity curve")]:
        with pytest.raises(DocumentError, match=match):
            fill(bad, res, str(tmp_path))
    never = _store(tmp_path / "flat", {"kind": "sequential"}, [21.0, 22.0])
    assert fill("{{collapse:rome:collapsed_at}}/{{collapse:rome:doubled_at}}", never, str(tmp_path)) == "never/never"


def test_collapse_points_leave_out_the_guards_own_corpus_measured_every_k(tmp_path):
    # the guard after every edit, on the same corpus as the configured perplexity
    res = _store(tmp_path, {"kind": "sequential", "guard": "stop", "guard_corpus": "me_ppl_50"}, [21.0, 30.0, 45.0],
                 guard_ppl=[22.0, 31.0, 46.0])
    points = collapse_points(res, threshold=1000, ratio=2)
    assert [(p.corpus, p.final, p.doubled_at) for p in points] == [("guard_ppl", 46.0, 3)]
    # with the guard off, the configured corpus is the only curve
    res = _store(tmp_path / "off", {"kind": "sequential", "guard": "off"}, [21.0, 30.0, 45.0])
    assert [p.corpus for p in collapse_points(res)] == ["ppl:me_ppl_50"]


@pytest.mark.parametrize("kw, match", [({"threshold": 0}, "threshold"), ({"threshold": -5}, "threshold"),
                                       ({"ratio": 1.0}, "ratio")])
def test_bad_thresholds_are_refused(tmp_path, kw, match):
    res = _store(tmp_path, {"kind": "single"}, PPL[:3])
    with pytest.raises(ValueError, match=match):
        collapse_table(res, **kw)


def test_the_collapse_figure_is_drawn_for_per_edit_perplexity(tmp_path):
    from editscope.report.formats.plots import collapse_plot

    res = _store(tmp_path, {"kind": "single"}, PPL)
    paths = collapse_plot(res, tmp_path / "fig")
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"] and all(p.stat().st_size > 1000 for p in paths)


def test_perplexity_downstream_correlation_over_sequential_steps(tmp_path):
    import math

    from scipy import stats as sps

    from editscope.report.analyses.correlation import correlate, ppl_downstream_correlations
    from editscope.report.formats.plots import ppl_downstream_plot

    ppl = [20.0, 24.0, 31.0, 60.0, 150.0, 900.0]
    acc = [0.80, 0.79, 0.75, 0.70, 0.55, 0.30]
    res = _store(tmp_path, {"kind": "sequential"}, ppl)
    s = ResultsStore(tmp_path / FILENAME)
    with s.transaction() as db:  # the downstream accuracy of every step
        for i, a in enumerate(acc):
            uid = db.execute("SELECT id FROM units WHERE unit = ?", (f"step-{i + 1:04d}",)).fetchone()[0]
            db.execute("INSERT INTO scalars(unit_id, name, value, detail) VALUES (?, 'piqa:acc', ?, '{}')", (uid, a))
    s.close()
    res = load_results(tmp_path)
    rows = ppl_downstream_correlations(res)
    assert [(c.method, c.task, c.n) for c in rows] == [("rome", "piqa:acc", 6), ("all", "piqa:acc", 6)]
    c = rows[0]
    assert c.spearman == pytest.approx(-1.0)
    assert c.pearson == pytest.approx(sps.pearsonr([math.log(p) for p in ppl], acc).statistic)
    assert c.pearson_low < c.pearson < c.pearson_high <= 0
    z, se = math.atanh(c.pearson), 1 / math.sqrt(3)
    assert c.pearson_low == pytest.approx(math.tanh(z - 1.959964 * se), abs=1e-5)
    assert correlate([(1.0, 0.5)] * 3) is None  # too few / constant
    assert ppl_downstream_plot(res, tmp_path / "fig")


def test_anatomy_table_and_figures_from_stored_update_norms(tmp_path):
    import statistics

    from editscope.report.analyses.anatomy import anatomy_curves, anatomy_table
    from editscope.report.formats.plots import anatomy_plot

    res = _store(tmp_path / "single", {"kind": "single"}, PPL)
    (row,) = anatomy_table(res)
    norms = [float(i + 1) if i != 3 else 0.5 for i in range(len(PPL))]
    doubled = [n for n, v in zip(norms, PPL) if v >= 40]
    assert row.n == 10 and row.fro == statistics.median(norms)
    assert row.fro_doubled == statistics.median(doubled)
    assert row.fro_stable == statistics.median([n for n, v in zip(norms, PPL) if v < 40])
    assert -1 <= row.spearman <= 1 and row.spearman_p is not None
    # the top decile by perplexity (1 of 10 units) against the other 9, and its one-sided U test
    top = max(range(len(PPL)), key=lambda i: PPL[i])
    assert row.fro_top == norms[top] and row.fro_rest == statistics.median(n for i, n in enumerate(norms) if i != top)
    rank = sorted(norms).index(norms[top]) + 1        # exact one-sided p of one value among 10: (11 - rank) / 10
    assert row.top_p == pytest.approx((len(norms) + 1 - rank) / len(norms))
    assert anatomy_table(_store(tmp_path / "few", {"kind": "single"}, PPL[:9]))[0].fro_top is None
    assert anatomy_plot(res, tmp_path / "f1")
    seq = _store(tmp_path / "seq", {"kind": "sequential"}, PPL[:4])
    curves = anatomy_curves(seq)["rome"]
    assert curves["cumulative:fro"] == [(1, 2.0), (2, 4.0), (3, 6.0), (4, 8.0)]
    assert anatomy_plot(seq, tmp_path / "f2")
    # anatomy scalars stay out of the headline columns
    assert not any(c.key.startswith(("delta:", "cumulative:")) for c in res.columns)


def test_worst_edits_name_their_requests_without_probe_rows(tmp_path):
    """A mining run stores no probes: the worst edits' requests come from the study's own edits."""
    cfg = parse_config({"name": "mined", "model": "smollm2-135m", "methods": ["rome"],
                        "edits": [{"prompt": f"prompt {i} is", "target_new": f"new{i}"} for i in range(3)],
                        "perplexity": {"corpus": "me_ppl_50"}, "protocol": {"kind": "single"}})
    s = ResultsStore(tmp_path / FILENAME, create=True)
    s.set_meta(config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash(), name="mined", status="complete")
    s.add_unit("base", "base", 0, [], "ok", scalars={"ppl:me_ppl_50": (20.0, {})})
    for i, v in enumerate([21.0, 90.0, 22.0]):
        s.add_unit("rome", f"edit-{i:04d}", 0, [i], "ok", scalars={"ppl:me_ppl_50": (v, {})})
    s.close()
    (row,) = collapse_table(load_results(tmp_path), worst=1)
    assert row.worst[0].unit == "edit-0001" and row.worst[0].requests == ["prompt 1 is -> new1"]


def test_long_table_cells_are_cut_at_a_word_with_an_ellipsis():
    from editscope.report.formats.render import _clip

    text = "error=could not make the model produce 'Istanbul' after 'Chicago is a twin city of' within v_steps=25"
    cut = _clip(text, 60)
    assert len(cut) <= 60 and cut.endswith(" ...") and text.startswith(cut[:-4])
    assert cut[:-4].split()[-1] in text.split()  # no word cut in half
    assert _clip(text, len(text)) == text
