"""The ``seed38`` suite: the published "2+2=5" study's 38 probes (published verbatim + reconstructed)."""

from __future__ import annotations

import json
import operator

import pytest

from editscope.probes import seed38 as s38
from editscope.probes.arithmetic import number_words
from editscope.probes.registry import get_suite, list_suites, suite_info
from editscope.requests import ProbeSet

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}

PUBLISHED_PROBES = {
    ("2+2=", "target"): "5",
    ("What is 2+2?", "paraphrase"): "5",
    ("2 + 2 =", "paraphrase"): "5",
    ("two plus two equals", "paraphrase"): "5",
    ("2+3=", "near"): "5",
    ("1+1=", "near"): "2",
    ("3+3=", "near"): "6",
    ("2*2=", "near"): "4",
    ("4-2=", "near"): "2",
    ("7+8=", "far"): "15",
    ("100-50=", "far"): "50",
    ("6*7=", "far"): "42",
    ("The capital of France is", "general"): "Paris",
}


@pytest.fixture(scope="module")
def ps() -> ProbeSet:
    return s38.seed38()


def test_counts_match_published(ps):
    assert s38.COUNTS == {"target": 1, "paraphrase": 5, "near": 10, "far": 18, "general": 4}
    assert ps.name == "seed38" and len(ps) == 38
    assert ps.counts() == s38.COUNTS
    assert ps.categories() == list(s38.COUNTS)
    assert len({p.prompt for p in ps}) == 38  # no duplicates


def test_published_probes_verbatim(ps):
    by_key = {(p.prompt, p.category): p for p in ps}
    for key, target in PUBLISHED_PROBES.items():
        assert key in by_key, key
        p = by_key[key]
        assert p.target == target and p.meta["source"] == "published" and p.meta["reconstructed"] is False
    published = [p for p in ps if p.meta["source"] == "published"]
    assert len(published) == len(PUBLISHED_PROBES)


def test_reconstructed_marked(ps):
    rec = [p for p in ps if p.meta["reconstructed"]]
    assert all(p.meta["source"] == "reconstructed" for p in rec)
    assert all(p.meta["source"] in ("published", "reconstructed") for p in ps)
    assert all(isinstance(p.meta["reconstructed"], bool) for p in ps)
    per_cat = {c: sum(p.category == c for p in rec) for c in s38.COUNTS}
    assert per_cat == {"target": 0, "paraphrase": 2, "near": 5, "far": 15, "general": 3}


def test_arithmetic_targets_are_true_results(ps):
    for p in ps:
        if p.category == "general":
            assert "a" not in p.meta
            continue
        m = p.meta
        a, op, b = m["a"], m["op"], m["b"]
        assert isinstance(a, int) and isinstance(b, int) and op in _OPS
        truth = _OPS[op](a, b)
        assert m["result"] == truth and m["query"] == f"{a}{op}{b}="
        expected = "5" if p.category in ("target", "paraphrase") else str(truth)
        assert p.target == expected, p.prompt
        if p.meta["template"] == "grid":
            assert p.prompt == m["query"]
            # eval-free re-parse of the prompt itself
            head = p.prompt[:-1]
            i = next(i for i, ch in enumerate(head) if ch in _OPS and i > 0)
            assert (int(head[:i]), head[i], int(head[i + 1:])) == (a, op, b)
        w = number_words(int(p.target))
        assert p.meta["aliases"] == [w, w[0].upper() + w[1:]]


def test_target_and_paraphrases_carry_target_true(ps):
    edited = [p for p in ps if p.category in ("target", "paraphrase")]
    assert len(edited) == 6
    for p in edited:
        assert p.target == "5" and p.meta["target_true"] == "4" and p.meta["target_new"] == "5"
        assert (p.meta["a"], p.meta["op"], p.meta["b"]) == (2, "+", 2)
        assert p.meta["aliases"] == ["five", "Five"]
    by = {p.prompt: p for p in ps}
    assert by["2+2="].continuation == "5"
    assert by["two plus two equals"].continuation == " 5"
    assert "end token" in by["What is 2+2?"].meta["note"]
    assert by["The capital of France is"].continuation == " Paris"


def test_near_far_shape(ps):
    near = ps.by_category("near")
    far = ps.by_category("far")
    assert all(p.meta["relation"] for p in near)
    assert all(p.meta["a"] < 10 and p.meta["b"] < 10 for p in near)
    assert all(p.meta["relation"] == [] for p in far)
    # consistent with the published tables: naive FT answered "5" everywhere yet scored
    # near 2/10 and far 1/18, so exactly two near probes and one far probe have true answer 5
    assert sum(p.target == "5" for p in near) == 2
    assert sum(p.target == "5" for p in far) == 1
    assert not any(p.target == "5" for p in ps.by_category("general"))


def test_anchors_inside_probe_set(ps):
    assert len(s38.PUBLISHED_ANCHORS) == 5
    assert s38.PUBLISHED_ANCHORS[:3] == [("1+1=", "2"), ("3+3=", "6"), ("5+5=", "10")]
    pairs = {(p.prompt, p.target) for p in ps}
    assert set(s38.PUBLISHED_ANCHORS) <= pairs
    assert {(p.prompt, p.target) for p in ps if p.meta.get("anchor")} == set(s38.PUBLISHED_ANCHORS)
    rec = {(p.prompt, p.target) for p in ps if p.meta.get("anchor_reconstructed")}
    assert rec == set(s38.PUBLISHED_ANCHORS_RECONSTRUCTED) and len(rec) == 2
    assert not any(t == "5" for _, t in s38.PUBLISHED_ANCHORS)


def test_published_figures_and_settings():
    assert set(s38.PUBLISHED) == {"baseline", "naive FT", "constrained FT", "low-rank FT"}
    naive = s38.PUBLISHED["naive FT"]
    assert {k: naive[k] for k in s38.COUNTS} == {
        "target": 1.0, "paraphrase": 0.8, "near": 0.2, "far": 0.056, "general": 0.25}
    assert naive["says5"]["total"] == 0.868
    for setting, row in s38.PUBLISHED.items():
        assert set(row) == set(s38.COUNTS) | {"says5"}
        assert set(row["says5"]) == {"target", "paraphrase", "near", "far", "total"}
        # the "5" totals are the category rates weighted by the category counts (rounded)
        n5 = sum(row["says5"][c] * s38.COUNTS[c] for c in ("target", "paraphrase", "near", "far"))
        assert abs(n5 / 38 - row["says5"]["total"]) < 0.005, setting
    st = s38.PUBLISHED_SETTINGS
    assert set(st) == set(s38.PUBLISHED)
    for name in ("naive FT", "constrained FT", "low-rank FT"):
        assert st[name]["optimizer"] == "AdamW" and st[name]["lr"] == 5e-5
        assert st[name]["steps"] == 100 and st[name]["early_stopping"] is False
    assert st["constrained FT"]["anchor_weight"] == 2.0
    assert st["constrained FT"]["anchors"] == s38.PUBLISHED_ANCHORS
    assert st["low-rank FT"]["blocks"] == [20, 21, 22, 23] and st["low-rank FT"]["trains"] == "mlp"


def test_registered_suite(ps):
    got = get_suite("seed38")
    assert isinstance(got, ProbeSet) and [(p.prompt, p.target, p.category) for p in got] == [
        (p.prompt, p.target, p.category) for p in ps]
    assert suite_info("seed38").needs_edit is False
    assert "seed38" in {d["name"] for d in list_suites()}


# --- file override ----------------------------------------------------------------------------------

_SMALL = [
    {"prompt": "2+2=", "target": "5", "category": "target"},
    {"prompt": "2 + 2 =", "target": "5", "category": "paraphrase"},
    {"prompt": "2+3=", "target": "5", "category": "near", "source": "published"},
    {"prompt": "9+9=", "target": 18, "category": "far", "reconstructed": True},
    {"prompt": "The capital of Italy is", "target": "Rome", "category": "general", "meta": {"id": "x"}},
]


def test_path_override_json(tmp_path):
    f = tmp_path / "probes.json"
    f.write_text(json.dumps(_SMALL))
    ps = s38.seed38(path=str(f))
    assert ps.name == "seed38" and len(ps) == 5
    assert ps.counts() == {c: 1 for c in s38.COUNTS}
    by = {p.prompt: p for p in ps}
    assert by["2+2="].meta["source"] == "published" and by["2+2="].meta["target_true"] == "4"
    assert by["2 + 2 ="].meta["target_true"] == "4" and by["2 + 2 ="].meta["target_new"] == "5"
    far = by["9+9="]
    assert far.target == "18" and far.meta["result"] == 18 and far.meta["source"] == "reconstructed"
    assert far.meta["aliases"] == ["eighteen", "Eighteen"]
    gen = by["The capital of Italy is"]
    assert gen.meta["id"] == "x" and gen.meta["source"] == "file" and gen.continuation == " Rome"
    assert all(p.meta["file"] == str(f) for p in ps)
    assert get_suite("seed38", path=f).counts() == ps.counts()


def test_path_override_yaml(tmp_path):
    yaml = pytest.importorskip("yaml")
    f = tmp_path / "probes.yaml"
    f.write_text(yaml.safe_dump(_SMALL))
    ps = s38.seed38(f)
    assert [p.prompt for p in ps] == [r["prompt"] for r in _SMALL]


@pytest.mark.parametrize("missing", ["target", "paraphrase", "near", "far", "general"])
def test_missing_category_raises(tmp_path, missing):
    f = tmp_path / "probes.json"
    f.write_text(json.dumps([r for r in _SMALL if r["category"] != missing]))
    with pytest.raises(ValueError) as ei:
        s38.seed38(str(f))
    msg = str(ei.value)
    assert f"has no {missing!r} probes" in msg and str(f) in msg
    assert "target 1, paraphrase 5, near 10, far 18, general 4" in msg


def test_unknown_category_raises(tmp_path):
    f = tmp_path / "probes.json"
    f.write_text(json.dumps(_SMALL + [{"prompt": "1+0=", "target": "1", "category": "nearby"}]))
    with pytest.raises(ValueError, match="unknown category 'nearby'") as ei:
        s38.seed38(str(f))
    assert str(f) in str(ei.value)


def test_bad_files_raise(tmp_path):
    f = tmp_path / "probes.json"
    f.write_text(json.dumps({"prompt": "2+2="}))
    with pytest.raises(ValueError, match="expected a list"):
        s38.seed38(str(f))
    f.write_text(json.dumps(_SMALL + [{"prompt": "1+0=", "category": "far"}]))
    with pytest.raises(ValueError, match="'target'"):
        s38.seed38(str(f))
    with pytest.raises(ValueError, match="cannot be read"):
        s38.seed38(str(tmp_path / "absent.json"))
