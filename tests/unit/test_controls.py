"""Controls: the placebo (matched rank and norm), the identity edit (the evaluation's noise floor),
unrelated-edit controls, their study keys, and the attribution report (excess, margins, pairs)."""

import math
import re

import numpy as np
import pytest
import torch

import editscope as es
from editscope.control_draws import numerical_rank, placebo_delta, unrelated_requests
from editscope.methods.controls import matched_delta
from editscope.models import tiny_model
from editscope.report.analyses.attribution import (
    excess,
    identity_exceptions,
    margin_bin,
    margin_locality,
    pairwise_tests,
)
from editscope.report.formats.render import excess_table, identity_table, margin_table, seed38_table
from editscope.report.data.results import LOCALITY, load_results
from editscope.runner import ConfigError, build_plan, parse_config, run_study
from editscope.runner.store import ResultsStore
from editscope.stats import excess_rate
from locate_settings import EASY, REQ

METHOD_HP = {
    "ft": {"layers": [2, 3], "lr": 1e-2, "steps": 3},
    "ft-l": {"layer": 1},
    "ft-m": {"layer": 1, "lr": 0.05},
    "lora": {"steps": 5, "lr": 1e-2},
    "rome": {"layer": 1, **EASY},
    "memit": {"layers": [1, 2], **EASY},
    "alphaedit": {"layers": [1, 2], **EASY},
    "emmet": {"layers": [1, 2], **EASY},
    "locft-bf": {"layer": 1, "lr": 1e-2, "epochs": 5},
    # UltraEdit's first edit of one target position changes nothing (no variance to normalise by yet):
    # its batches are tested in test_lifelong_methods
}


pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", num_hidden_layers=4)


# ---- the placebo


def test_placebo_tensor_keeps_rank_singular_values_and_norm_but_not_direction():
    g = torch.Generator().manual_seed(0)
    rank_one = torch.outer(torch.randn(40, generator=g), torch.randn(24, generator=g)).float()
    rank_three = (torch.randn(40, 3, generator=g) @ torch.randn(3, 24, generator=g)).float()
    full = torch.randn(40, 24, generator=g)
    vec = torch.randn(24, generator=g)
    fake, ranks = placebo_delta({"a": rank_one, "b": rank_three, "c": full, "d": vec, "z": torch.zeros(5, 5)}, seed=1)
    assert ranks == {"a": 1, "b": 3, "c": 24, "d": 1, "z": 0}
    for k, d in {"a": rank_one, "b": rank_three, "c": full}.items():
        s_d, s_f = torch.linalg.svdvals(d.double()), torch.linalg.svdvals(fake[k])
        assert numerical_rank(s_f, tuple(fake[k].shape)) == ranks[k]
        torch.testing.assert_close(s_f[: ranks[k]], s_d[: ranks[k]], rtol=1e-6, atol=0)
        assert math.isclose(float(fake[k].norm()), float(d.double().norm()), rel_tol=1e-9)
        cos = float((fake[k] * d.double()).sum() / (fake[k].norm() * d.double().norm()))
        assert abs(cos) < 0.5  # a random direction, not the delta itself
    assert math.isclose(float(fake["d"].norm()), float(vec.double().norm()), rel_tol=1e-9)
    assert float(fake["z"].abs().max()) == 0.0
    again, _ = placebo_delta({"a": rank_one}, seed=1)
    other, _ = placebo_delta({"a": rank_one}, seed=2)
    assert torch.equal(again["a"], fake["a"]) and not torch.allclose(other["a"], fake["a"])


@pytest.mark.parametrize("method", sorted(METHOD_HP))
def test_placebo_of_every_weight_delta_method_matches_its_tensors_rank_and_norm(llama, method):
    hp = METHOD_HP[method]
    fp = llama.fingerprint()
    real, _ = matched_delta(llama, [REQ], method, hp, seed=7)
    assert llama.fingerprint() == fp  # the matched edit was undone
    h = es.apply_edit(llama, [REQ], "placebo", match=method, match_hparams=hp, match_seed=7, draw=0)
    try:
        assert sorted(h.names) == sorted(real)
        got = h.delta()
        for name, d in real.items():
            s = torch.linalg.svdvals(d.double()) if d.ndim == 2 else None
            want_rank = numerical_rank(s, tuple(d.shape)) if s is not None else int(bool(d.abs().max() > 0))
            assert h.info["ranks"][name] == want_rank, name
            assert math.isclose(float(got[name].double().norm()), float(d.double().norm()), rel_tol=1e-3, abs_tol=1e-6)
            if float(d.norm()) > 1e-4:
                assert not torch.allclose(got[name], d, atol=1e-6)
        if method == "rome":
            assert set(h.info["ranks"].values()) == {1}
    finally:
        h.undo()
    assert llama.fingerprint() == fp


def test_placebo_matched_delta_is_the_methods_own_seeded_delta(llama):
    torch.manual_seed(7)
    h = es.apply_edit(llama, [REQ], "rome", **METHOD_HP["rome"])
    own = {k: v.clone() for k, v in h.delta().items()}
    h.undo()
    got, _ = matched_delta(llama, [REQ], "rome", METHOD_HP["rome"], seed=7)
    for k in own:
        torch.testing.assert_close(got[k], own[k], rtol=0, atol=0)


def test_placebo_refuses_bad_matches(llama):
    with pytest.raises(es.methods.HparamError, match="match"):
        es.apply_edit(llama, [REQ], "placebo")
    with pytest.raises(es.methods.UnknownMethodError, match="rome"):
        es.apply_edit(llama, [REQ], "placebo", match="rmoe")
    with pytest.raises(es.methods.HparamError, match="not a control"):
        es.apply_edit(llama, [REQ], "placebo", match="identity")
    with pytest.raises(ValueError, match="subject"):
        es.apply_edit(llama, [es.EditRequest("2+2=", "5")], "placebo", match="rome")


# ---- the identity control


def test_identity_goes_through_the_edited_path_and_changes_nothing(llama):
    probes = es.suites.arithmetic(es.EditRequest("2+2=", "5"), n=6)
    base = es.evaluate(llama, probes)
    h = es.apply_edit(llama, [es.EditRequest("2+2=", "5")], "identity")
    try:
        assert h.names == [] and h.delta() == {}
        res = es.evaluate(llama, probes)
    finally:
        h.undo()
    assert base.is_base and not res.is_base and res.n_active_edits == 1
    assert all(not r["is_base"] for r in res.rows)
    assert all(r["unchanged"] for r in res.rows)
    assert [r["greedy"] for r in res.rows] == [r["greedy"] for r in base.rows]
    assert all(r["kl"] < 1e-6 for r in res.rows)


# ---- unrelated edits


def test_unrelated_arithmetic_edits_share_nothing_with_the_edit_and_are_seeded():
    edit = es.EditRequest("2+2=", "5", subject="2+2", target_true="4")
    reqs = unrelated_requests(edit, 5, seed=0)
    assert len(reqs) == 5 and len({r.prompt for r in reqs}) == 5
    for r in reqs:
        a, op, b = re.fullmatch(r"(\d+)([-+*])(\d+)=", r.prompt).groups()
        assert "2" not in (a, b)
        true = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert r.target_true == str(true) and r.target_new != str(true) and len(r.target_new) == 1
        assert 0 <= true <= 9  # like 2+2=4: a single-digit result, so "3" is a whole wrong answer
        assert r.subject == r.prompt[:-1]
    assert [r.prompt for r in unrelated_requests(edit, 5, seed=0)] == [r.prompt for r in reqs]
    assert [r.prompt for r in unrelated_requests(edit, 5, seed=1)] != [r.prompt for r in reqs]
    # a two-digit target: two-digit results, and a wrong answer that does not start the true one
    wide = unrelated_requests(es.EditRequest("7*8=", "65", subject="7*8", target_true="56"), 20, seed=0)
    assert len(wide) == 20
    for r in wide:
        assert len(r.target_true) == 2 and len(r.target_new) == 2 and r.target_new[0] != r.target_true[0]


def test_unrelated_other_kind_of_an_arithmetic_edit_is_a_fact_and_vice_versa():
    facts = unrelated_requests(es.EditRequest("2+2=", "5"), 2, other_kind=True, seed=0)
    assert all(r.subject and r.subject in r.prompt and "=" not in r.prompt for r in facts)
    arith = unrelated_requests(REQ, 2, other_kind=True, seed=0)
    assert all(re.fullmatch(r"\d+[-+*]\d+=", r.prompt) for r in arith)


# ---- study keys

STUDY = {"name": "ctl", "model": "tiny:llama", "seed": 0,
         "methods": ["ft-m", "identity", {"method": "placebo", "match": "ft-m", "draws": 2}],
         "edits": [{"prompt": "2+2=", "target_new": "5", "subject": "2+2"}],
         "probes": [{"suite": "arithmetic", "args": {"n": 3, "paraphrases": False}}],
         "controls": {"unrelated": 1}}


@pytest.mark.parametrize("patch, match", [
    ({"methods": ["ft-m", {"method": "placebo"}]}, r"methods\[1\].*needs `match:`"),
    ({"methods": ["ft-m", {"method": "placebo", "match": "rome"}]}, r"match: 'rome' is not the label of an edit method"),
    ({"methods": ["ft-m", {"method": "placebo", "match": "ft-m", "draws": 0}]}, r"draws.*greater than or equal to 1"),
    ({"methods": [{"method": "ft-m", "draws": 2}]}, r"`draws:` applies to method 'placebo' only"),
    ({"methods": [{"method": "ft-m", "match": "ft-m"}]}, r"`match:` applies to method 'placebo' only"),
    ({"methods": ["ft-m", {"method": "placebo", "match": "ft-m", "hparams": {"draw": 3}}]}, r"hparams.draw: set by the runner"),
    ({"methods": ["ft-m"], "protocol": {"kind": "sequential"}},
     r"controls: unrelated-edit controls need protocol kind 'single'"),
    ({"controls": {"unrelated": 0}}, r"controls.*at least 1"),
    ({"controls": {"unrelated": 1, "methods": ["rome"]}}, r"controls.methods: \['rome'\] are not labels"),
    ({"methods": ["ft-m", {"method": "placebo", "match": "ft-m", "draws": 3}], "protocol": {"kind": "sequential"},
      "controls": None}, r"draws=3: a sequential study runs one placebo chain"),
])
def test_bad_control_keys_are_refused_before_anything_runs(patch, match):
    spec = {k: v for k, v in {**STUDY, **patch}.items() if v is not None}
    with pytest.raises(ConfigError, match=match):
        parse_config(spec, "study.yaml")


def test_new_keys_leave_the_config_hash_of_existing_studies_unchanged():
    from editscope.runner import load_config
    from editscope.runner.store import unpack_archive

    cfg = load_config("examples/two_plus_two.yaml")
    assert "controls" not in cfg.model_dump() and "match" not in cfg.model_dump()["methods"][0]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        unpack_archive("docs/studies/runs/two-plus-two.sqlite.xz", d)
        s = ResultsStore(f"{d}/results.sqlite")
        assert s.get_meta("config_hash") == cfg.config_hash()
        s.close()


def test_plan_lays_out_draws_and_unrelated_units():
    plan = build_plan(parse_config(STUDY))
    units = [(u.method, u.unit, u.draw, u.of_unit) for u in plan.units]
    assert units[:4] == [("base", "base", None, None), ("ft-m", "edit-0000", None, None),
                         ("identity", "edit-0000", None, None), ("placebo-ft-m", "edit-0000-d00", 0, "edit-0000")]
    assert units[4] == ("placebo-ft-m", "edit-0000-d01", 1, "edit-0000")
    unrel = [u for u in plan.units if u.method == "unrelated-ft-m"]
    assert len(unrel) == 1 and unrel[0].requests[0].prompt != "2+2=" and unrel[0].edits == (0,)
    assert [m.name for m in plan.methods] == ["ft-m", "identity", "placebo-ft-m", "unrelated-ft-m"]


@pytest.fixture(scope="module")
def control_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctl")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITSCOPE_CACHE", str(d / "cache"))
        spec = {**STUDY, "methods": [*STUDY["methods"], {"method": "ft-m", "label": "ft-m-strong",
                                                           "hparams": {"lr": 0.05, "steps": 30}}]}
        run_study(parse_config(spec), d / "run", progress=False)
    return d / "run"


def test_control_run_stores_every_unit_and_the_identity_is_exact(control_run):
    res = load_results(control_run)
    assert res.methods == ["ft-m", "identity", "placebo-ft-m", "ft-m-strong", "unrelated-ft-m", "unrelated-ft-m-strong"]
    assert res.edit_methods == ["ft-m", "ft-m-strong"]
    assert res.controls["placebo-ft-m"] == ("placebo", "ft-m")
    assert res.controls["unrelated-ft-m-strong"] == ("unrelated", "ft-m-strong")
    bad, n, _ = identity_exceptions(res)
    assert n > 0 and bad == 0
    t = identity_table(res)
    assert f"{n} of {n} locality probes keep their answer" in t.caption
    info = {(u.method, u.unit): u.info for u in res.units}
    assert info[("placebo-ft-m", "edit-0000-d01")]["matched"] == "ft-m"
    assert all(r.get("base_margin") is not None for r in res.final_rows("ft-m"))


def test_excess_over_placebo_is_the_hand_computed_difference(control_run):
    res = load_results(control_run)
    e = excess(res, "ft-m", "placebo", LOCALITY, n_resamples=500)

    def changed(m):
        out = {}
        for r in res.final_rows(m):
            if r["category"] in ("near", "far"):
                def answer(t):  # the first integer; without one, the first word (the integer answer rule)
                    n = re.search(r"(?<![\w.])-?\d+|\d+", t or "")
                    w = re.match(r"\s*(-?[^\W_]+|\S)", t or "")
                    return ("n", int(n.group())) if n else ("w", w.group(1) if w else "")
                same = r["unchanged"] or answer(r["greedy"]) == answer(r["base_greedy"])
                out[(r["unit"][:9], r["probe_set"], r["index"], r["unit"][9:])] = not same
        return out

    mine, ctl = changed("ft-m"), changed("placebo-ft-m")
    m = np.mean(list(mine.values()))
    c = np.mean(list(ctl.values()))
    assert e.n == len(mine) and e.draws == 2
    assert e.value == pytest.approx(m - c, abs=1e-12)
    assert e.low <= e.value <= e.high
    keys = sorted(k[:3] for k in mine)
    mv = np.array([mine[k + ("",)] for k in keys])
    cv = np.array([[ctl[k + (f"-d{d:02d}",)] for k in keys] for d in range(2)])
    ref = excess_rate(mv, cv, n_resamples=500)
    assert (ref.low, ref.high) == pytest.approx((e.low, e.high))
    assert excess(res, "ft-m", "unrelated_other") is None
    t = excess_table(res, "placebo")
    assert [r[0][0] for r in t.rows] == ["ft-m"] and "(2)" in t.rows[0][1][0]
    assert excess_table(res, "unrelated").rows[1][0][0] == "ft-m-strong"
    # the CLI summary prints the same excess tables
    from typer.testing import CliRunner

    from editscope.cli import app

    r = CliRunner().invoke(app, ["report", str(control_run), "--format", "md"], terminal_width=200)
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "excess over matched placebo" in flat and "excess over unrelated edits (same kind)" in flat
    pooled = t.rows[0][4][0]  # "+v [lo, hi]" of the pooled locality column
    assert pooled.split(" [")[0] in flat


def test_excess_on_known_answers_keeps_only_the_probes_the_base_model_gets_right(control_run):
    import pandas as pd

    from editscope.report.data.results import category_index

    res = load_results(control_run)
    df = res.frame.df
    # which probes the base model "knows": every other probe (the tiny model knows no sum), decided
    # per probe, so the same probes are known under the method and its placebo
    known = pd.Series((df["index"] % 2 == 0).astype(float).to_numpy(), index=df.index)
    res.frame.__dict__.setdefault("_metric", {})["base_known"] = known
    sub = excess(res, "ft-m", "placebo", "locality+known", n_resamples=300)

    def changed(method: str) -> np.ndarray:
        idx = category_index(res, res.final_index(method), LOCALITY)
        idx = idx[(df.loc[idx, "index"] % 2 == 0).to_numpy()]
        return 1.0 - res.frame.metric("answer_unchanged").loc[idx].dropna().to_numpy()

    mine, ctl = changed("ft-m"), changed("placebo-ft-m")  # the placebo: two draws of the same probes
    assert sub.n == len(mine) and len(ctl) == 2 * len(mine)
    assert sub.value == pytest.approx(mine.mean() - ctl.mean(), abs=1e-12)
    assert sub.n < excess(res, "ft-m", "placebo", LOCALITY, n_resamples=300).n
    t = excess_table(res, "placebo", known=True)
    assert t.name == "excess-placebo-known" and "answers correctly" in t.caption
    assert t.header[-1].endswith("+known")
    res.frame.__dict__["_metric"]["base_known"] = known * 0  # a model that knows nothing: no such table
    assert excess_table(res, "placebo", known=True) is None


def test_margin_bins_and_pairwise_tests(control_run):
    assert [margin_bin(x) for x in (0.0, 0.05, 0.1, 0.99, 1.0, 2.9, 3.0, 50.0, None)] == \
        ["<0.1", "<0.1", "0.1-1", "0.1-1", "1-3", "1-3", ">3", ">3", None]
    res = load_results(control_run)
    per = margin_locality(res, "ft-m")
    rows = [r for r in res.final_rows("ft-m") if r["category"] not in ("target", "paraphrase")]
    for label, cell in per.items():
        inbin = [r for r in rows if margin_bin(r["base_margin"]) == label]
        if not inbin:
            assert cell is None
            continue
        assert cell.n == len(inbin)
    assert sum(c.n for c in per.values() if c) == len(rows)
    assert margin_table(res) is not None
    tests = pairwise_tests(res)
    assert [t.method for t in tests] == ["ft-m vs ft-m-strong"]
    assert 0 <= tests[0].p <= tests[0].p_holm <= 1


# ---- aliases, templates, the seed38 replication


def test_aliases_count_for_top1_and_says_target(llama):
    base = es.greedy_continuations(llama, ["2+2="], 2)[0].text
    word = re.match(r"\s*(\S+?)\b", base) or re.match(r"\s*(\S)", base)
    alias = word.group(1)
    probes = es.ProbeSet([
        es.Probe("2+2=", "zzz", "target", meta={"aliases": [alias]}),
        es.Probe("2+2=", "zzz", "paraphrase"),
    ])
    res = es.evaluate(llama, probes)
    assert res.rows[0]["top1"] and not res.rows[1]["top1"]
    assert res.rows[0]["says_target"] and res.rows[1]["says_target"]  # the target probes' aliases count everywhere
    with pytest.raises(ValueError, match="aliases"):
        es.evaluate(llama, es.ProbeSet([es.Probe("2+2=", "5", "target", meta={"aliases": "five"})]))


def test_arithmetic_target_probes_carry_number_word_aliases():
    ps = es.suites.arithmetic(es.EditRequest("2+2=", "5"), n=3)
    for p in ps:
        if p.category in ("target", "paraphrase"):
            assert p.meta["aliases"] == ["five", "Five"]
    q = next(p for p in ps if p.meta["template"] == "question" and p.category == "paraphrase")
    assert q.prompt == "What is 2+2? The answer is"


def test_seed38_table_puts_published_rows_beside_exact_intervals(tmp_path):
    spec = {"name": "s38", "model": "tiny:llama", "seed": 0,
            "methods": [{"method": "ft", "label": "seed-naive-ft", "hparams": {"lr": 1e-3, "steps": 3,
                                                                               "stop_loss": 0.0, "optimizer": "adamw",
                                                                               "weight_decay": 0.01}}],
            "edits": [{"prompt": "2+2=", "target_new": "5", "target_true": "4"}], "probes": ["seed38"]}
    run_study(parse_config(spec), tmp_path / "run", progress=False)
    res = load_results(tmp_path / "run")
    t = seed38_table(res)
    labels = [r[0][0] for r in t.rows]
    assert labels[:4] == ["baseline (GPT-2 Medium, published)", "base (editscope)",
                          "naive FT (GPT-2 Medium, published)", "seed-naive-ft (editscope)"]
    assert t.rows[2][-1][0] == "0.868"
    from editscope.report.analyses.replication import seed38_cells
    from editscope.stats import clopper_pearson

    cells = seed38_cells(res, "seed-naive-ft")
    rows = [r for r in res.final_rows("seed-naive-ft")]
    k = sum(bool(r["says_target"]) for r in rows)
    iv = clopper_pearson(k, 38)
    assert cells["all"].n == 38 and (cells["all"].low, cells["all"].high) == pytest.approx((iv.low, iv.high))
    near = [r for r in rows if r["category"] == "near"]
    from editscope.metrics.edit_metrics import METRICS

    assert cells["near"].value == pytest.approx(sum(bool(METRICS["answer_hit"].fn(r)) for r in near) / 10)
    # the write-up placeholders quote the same cells, and the published figure
    from editscope.report.documents.document import DocumentError, fill
    from editscope.report.formats.table import fmt_cell

    assert fill("{{seed38:seed-naive-ft:all}}", res, "run") == fmt_cell(cells["all"])
    assert fill("{{seed38:published:naive FT:all}}", res, "run") == "0.868"
    for bad, match in [("{{seed38:seed-naive-ft:nope}}", "COLUMN one of"), ("{{seed38:rome:all}}", "no method 'rome'"),
                       ("{{seed38:published:magic FT:all}}", "no published setting 'magic FT'"),
                       ("{{strength:seed-naive-ft:0.5}}", "no swept method"), ("{{strength:x:0.7}}", "LEVEL one of")]:
        with pytest.raises(DocumentError, match=match):
            fill(bad, res, "run")


# ---- matched strength


def test_sweep_expands_into_labelled_settings_and_bad_sweeps_are_refused():
    spec = {**STUDY, "methods": [{"method": "ft-m", "sweep": {"steps": [1, 5]}},
                                 {"method": "placebo", "match": "ft-m@steps=5"}], "controls": None}
    cfg = parse_config({k: v for k, v in spec.items() if v is not None})
    assert [m.name for m in cfg.all_methods()] == ["ft-m@steps=1", "ft-m@steps=5", "placebo-ft-m@steps=5"]
    assert cfg.method_specs()[1].hparams == {"steps": 5}
    assert cfg.sweeps() == {"ft-m": ("steps", ["ft-m@steps=1", "ft-m@steps=5"])}
    for sweep, match in [({"stpes": [1]}, r"sweep.stpes: not a hyperparameter of 'ft-m'. Did you mean 'steps'"),
                         ({"steps": []}, r"distinct values"), ({"steps": [0]}, r"value 0 is invalid"),
                         ({"steps": [1], "lr": [1.0]}, r"exactly one hyperparameter")]:
        with pytest.raises(ConfigError, match=match):
            parse_config({**STUDY, "controls": {"unrelated": 1},
                          "methods": [{"method": "ft-m", "sweep": sweep}]}, "study.yaml")
    with pytest.raises(ConfigError, match="no strength to sweep"):
        parse_config({**STUDY, "methods": ["ft-m", {"method": "placebo", "match": "ft-m", "sweep": {"draw": [1]}}]})


def test_matched_strength_interpolates_between_the_bracketing_settings():
    from editscope.report.data.results import Cell
    from editscope.report.analyses.strength import StrengthPoint, at_level

    pts = [StrengthPoint("a", 0.2, Cell(0.9, 0.88, 0.92, 100)), StrengthPoint("b", 0.6, Cell(0.7, 0.66, 0.74, 100)),
           StrengthPoint("c", 1.0, Cell(0.5, 0.45, 0.55, 100))]
    c = at_level(pts, 0.5)  # a quarter of the way back from b to a
    assert (c.value, c.low, c.high) == pytest.approx((0.75, 0.715, 0.785))
    c = at_level(pts, 0.9)
    assert (c.value, c.low, c.high) == pytest.approx((0.55, 0.5025, 0.5975))
    assert at_level(pts, 0.1) is None and at_level(pts[:1], 0.5) is None


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_function_space_placebo_moves_the_edits_keys_by_the_edits_amount(model_type):
    """The function-space placebo keeps the edit's key side: ||delta' k|| = ||delta k|| for the
    edit's own key activations (and any input), while its value direction is random."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from locate_settings import EASY, REQ

    import editscope as es
    from editscope.hooks import capture_input
    from editscope.methods.controls import input_side
    from editscope.models import tiny_model

    model = tiny_model(model_type)
    h = es.apply_edit(model, REQ, "rome", **EASY)
    delta = {n: t.double() for n, t in h.delta().items()}
    h.undo()
    p = es.apply_edit(model, REQ, "placebo", match="rome", match_hparams=EASY, space="function")
    fake = {n: t.double() for n, t in p.delta().items()}
    (name,) = delta
    module = model.hf.get_submodule(name.rsplit(".", 1)[0])
    with capture_input(module) as got:
        model.hf(**model.tokenizer(REQ.prompt, return_tensors="pt"))
    p.undo()
    keys = got[0].reshape(-1, got[0].shape[-1]).double()  # every position's input to the edited module
    side = input_side(model, name)
    apply = (lambda d: keys @ d.T) if side == 1 else (lambda d: keys @ d)
    want, have = apply(delta[name]).norm(dim=-1), apply(fake[name]).norm(dim=-1)
    assert float(want.max()) > 0
    assert torch.allclose(have, want, rtol=1e-3, atol=1e-6 * float(want.max()))
    # a different write direction: the outputs are not the edit's
    cos = torch.nn.functional.cosine_similarity(apply(delta[name]), apply(fake[name]), dim=-1)
    assert float(cos.abs().max()) < 0.9
    assert p.info["space"] == "function"


def test_unrelated_edits_report_their_own_efficacy_and_failed_ones_are_left_out(control_run):
    """Each unrelated edit is also measured on its own prompt (category control-target, never
    pooled into locality); a control edit that did not take drops its draw from the excess."""
    from editscope.report.analyses.attribution import excess, failed_controls
    from editscope.report.formats.render import excess_table

    res = load_results(control_run)
    df = res.frame.df
    own = df[(df["category"] == "control-target")]
    assert set(own["method"]) == {"base", "unrelated-ft-m", "unrelated-ft-m-strong"}
    assert set(own["probe_set"]) == {"control#e0-u00"}  # one study edit, one unrelated edit
    hit = res.frame.metric("answer_hit").loc[own.index]
    for m in ("unrelated-ft-m", "unrelated-ft-m-strong"):
        mine = own["method"] == m
        missed = set(own.loc[mine & (hit != 1), "unit"])
        assert failed_controls(res, m) == missed
    # the own prompts are not locality probes, and not the study edit's target
    from editscope.report.data.results import category_index, LOCALITY

    idx = category_index(res, res.final_index("unrelated-ft-m"), LOCALITY)
    assert not (df.loc[idx, "category"] == "control-target").any()
    weak = failed_controls(res, "unrelated-ft-m")
    e = excess(res, "ft-m", "unrelated")
    kept_draws = len({u[len("edit-0000"):] for u in df.loc[df["method"] == "unrelated-ft-m", "unit"]}
                     - {u[len("edit-0000"):] for u in weak})
    assert (e is None) == (kept_draws == 0) and (e is None or e.draws == kept_draws)
    t = excess_table(res, "unrelated")
    if weak:
        assert "did not take" in t.caption
