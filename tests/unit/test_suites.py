"""The built-in probe suites (arithmetic grid, written facts) and the suite registry."""

import pytest

from editscope import EditRequest, Probe, ProbeSet
from editscope import suites
from editscope.probes import get_suite, list_suites, number_words, parse_arithmetic, register_suite
from editscope.probes.arithmetic import TEMPLATE_NAMES, arithmetic
from editscope.probes.facts import FACTS, facts
from editscope.probes.registry import SUITES, UnknownSuiteError


@pytest.fixture(scope="module")
def edited():
    """The default suite (n=99, + - *) for the edit 2+2= -> 5, built once."""
    return arithmetic(EditRequest("2+2=", "5"))


@pytest.fixture(scope="module")
def grid(edited):
    return {p.prompt: p for p in edited if p.meta["template"] == "grid"}


# --- sizes ----------------------------------------------------------------------------------------


def test_default_sizes(edited):
    plus = arithmetic(EditRequest("2+2=", "5"), ops=("+",), paraphrases=False)
    assert len(plus) == 100 * 100 >= 10_000
    grid_probes = [p for p in edited if p.meta["template"] == "grid"]
    assert len(grid_probes) == 3 * 100 * 100
    assert len({(p.meta["op"], p.meta["a"], p.meta["b"]) for p in grid_probes}) == 30_000
    # 10 paraphrases of the target, 10 for each of the two other-op queries, 10 for 20 far queries
    assert len(edited) == 30_000 + 10 + 20 + 200
    assert edited.counts() == {"target": 1, "paraphrase": 10, "near": 322, "far": 29_897}
    assert len(arithmetic(None, n=9)) == 3 * 100 + 20 * len(TEMPLATE_NAMES)
    assert len(arithmetic(None, n=9, paraphrases=False)) == 300


def test_all_probes_valid(edited):
    assert isinstance(edited, ProbeSet)
    for p in edited:
        assert isinstance(p, Probe)
        assert {"a", "b", "op", "result", "template", "relation", "query"} <= p.meta.keys()
        assert isinstance(p.meta["result"], int) and isinstance(p.meta["relation"], list)
        assert (p.meta["relation"] != []) == (p.category == "near")
        if p.category not in ("target", "paraphrase"):
            assert p.target == str(p.meta["result"])
    assert len({(p.prompt, p.category) for p in edited}) == len(edited)


# --- categories for 2+2= -> 5 ---------------------------------------------------------------------


def test_target_probe(edited):
    (t,) = edited.by_category("target")
    assert t.prompt == "2+2=" and t.target == "5" and t.continuation == "5"
    assert t.meta["target_true"] == "4" and t.meta["target_new"] == "5" and t.meta["result"] == 4
    assert t.meta["template"] == "grid"


@pytest.mark.parametrize(
    "prompt,category,relations",
    [
        ("2+3=", "near", {"shares-operand"}),
        ("7+2=", "near", {"shares-operand"}),
        ("3+1=", "near", {"same-result"}),
        ("0+4=", "near", {"same-result"}),
        ("9-5=", "near", {"same-result"}),
        ("2-2=", "near", {"other-op"}),
        ("2*2=", "near", {"other-op", "same-result"}),
        ("57+80=", "far", set()),
        ("2-3=", "far", set()),  # shares-operand is within the edited op only
        ("3*3=", "far", set()),
    ],
)
def test_category_membership(grid, prompt, category, relations):
    p = grid[prompt]
    assert p.category == category
    assert set(p.meta["relation"]) == relations


def test_swapped_relation():
    ps = arithmetic(EditRequest("3+5=", "9"), n=10, ops=("+", "-"))
    g = {p.prompt: p for p in ps if p.meta["template"] == "grid"}
    assert set(g["5+3="].meta["relation"]) == {"shares-operand", "swapped", "same-result"}
    assert g["3-5="].meta["relation"] == ["other-op"] and g["3-5="].target == "-2"
    swapped = [p for p in ps if p.category == "near" and p.meta["template"] != "grid" and p.meta["a"] == 5]
    assert len(swapped) == len(TEMPLATE_NAMES)
    assert all("swapped" in p.meta["relation"] for p in swapped)


def test_paraphrases_of_target(edited):
    paras = list(edited.by_category("paraphrase"))
    names = {p.meta["template"] for p in paras}
    assert len(names) >= 8 and names == set(TEMPLATE_NAMES)
    for p in paras:
        assert p.target == "5" and p.meta["target_true"] == "4"
        assert ("2" in p.prompt) or ("two" in p.prompt)
    by = {p.meta["template"]: p for p in paras}
    assert by["question"].prompt + by["question"].continuation == "What is 2+2? The answer is 5"
    assert by["spaced"].prompt + by["spaced"].continuation == "2 + 2 = 5"
    assert by["words"].prompt == "two plus two equals"
    assert by["verbal"].prompt == "The sum of 2 and 2 is"
    assert by["qa"].continuation == " 5"
    fs = by["few_shot"].prompt
    assert fs.endswith("\n2+2=") and fs.count("\n") == 2
    for line in fs.split("\n")[:-1]:
        lhs, rhs = line.split("=")
        x, y = map(int, lhs.split("+"))
        assert x + y == int(rhs) and 2 not in (x, y)


def test_near_and_far_paraphrases(edited):
    near_p = [p for p in edited if p.category == "near" and p.meta["template"] != "grid"]
    assert {p.meta["query"] for p in near_p} == {"2-2=", "2*2="}
    assert {p.meta["template"] for p in near_p} == set(TEMPLATE_NAMES)
    by = {(p.meta["query"], p.meta["template"]): p for p in near_p}
    assert by[("2-2=", "words")].prompt == "two minus two equals"
    assert by[("2*2=", "words")].prompt == "two times two equals"
    far_p = [p for p in edited if p.category == "far" and p.meta["template"] != "grid"]
    assert len({p.meta["query"] for p in far_p}) == 20
    # seeded: the same sample every time, another with another seed
    def sample(**kw):
        ps = arithmetic(EditRequest("2+2=", "5"), n=20, **kw)
        return [p.prompt for p in ps if p.category == "far" and p.meta["template"] != "grid"]

    assert sample() == sample() != sample(seed=1)
    # few-shot examples avoid the edited operands and the wanted answer, even with a spaced target
    fs = next(p for p in arithmetic(EditRequest("2*3=", " 7"), n=5) if p.meta["template"] == "few_shot")
    assert fs.prompt == "1*1=1\n8*5=40\n2*3=" and fs.continuation == " 7"


def test_negative_results_and_separators():
    ps = arithmetic(None, n=5, ops=("-",))
    g = {p.prompt: p for p in ps if p.meta["template"] == "grid"}
    assert g["1-4="].target == "-3" and g["1-4="].continuation == "-3" and g["1-4="].meta["result"] == -3
    assert all(p.category == "general" for p in ps)
    e = arithmetic(EditRequest("1-4=", "7"), n=5, ops=("-",))
    q = {p.meta["template"]: p for p in e.by_category("paraphrase")}
    assert q["verbal"].prompt == "The result of subtracting 4 from 1 is"
    assert q["question"].prompt + q["question"].continuation == "What is 1-4? The answer is 7"
    neg = [p for p in e if p.meta["template"] == "question" and p.target.startswith("-")]
    assert all(p.continuation == " " + p.target for p in neg)


def test_edit_forms():
    spaced = arithmetic(EditRequest("2 + 2 =", "5"), n=9, ops=("+",))
    (t,) = spaced.by_category("target")
    assert t.prompt == "2 + 2 =" and t.meta["template"] == "edit"
    # the canonical cell stays in the grid, as a paraphrase of the edit
    canon = [p for p in spaced if p.prompt == "2+2="]
    assert len(canon) == 1 and canon[0].category == "paraphrase" and canon[0].meta["template"] == "grid"
    assert sum(p.meta["template"] == "grid" for p in spaced) == 100
    bare = arithmetic("2+2=", n=9, ops=("+",))
    (t,) = bare.by_category("target")
    assert t.target == "4" and "target_new" not in t.meta
    assert parse_arithmetic(" 12 * 3= ") == (12, "*", 3) and parse_arithmetic("2+2") is None


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"edit\.prompt") as ei:
        arithmetic(EditRequest("The capital of France is", "Rome"))
    assert "a op b=" in str(ei.value)
    with pytest.raises(ValueError, match=r"'a op b='"):
        arithmetic("hello")
    with pytest.raises(ValueError, match=r"\bn\b"):
        arithmetic(n=0)
    with pytest.raises(ValueError, match=r"ops.*'\+', '-', '\*'"):
        arithmetic(ops=("+", "/"))
    with pytest.raises(TypeError):
        arithmetic(edit=42)


@pytest.mark.parametrize(
    "n,words",
    [(0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (42, "forty-two"), (99, "ninety-nine"),
     (100, "one hundred"), (-3, "minus three")],
)
def test_number_words(n, words):
    assert number_words(n) == words


# --- facts ----------------------------------------------------------------------------------------


def test_facts():
    fs = facts()
    assert isinstance(fs, ProbeSet) and len(fs) >= 150
    relations = {p.meta["relation"] for p in fs}
    assert len(relations) >= 10
    prompts = [p.prompt for p in fs]
    assert len(set(prompts)) == len(prompts), "duplicate fact prompts"
    assert len({p.meta["id"] for p in fs}) == len(fs)
    for p in fs:
        assert p.category == "general"
        assert not p.target[0].isspace() and p.continuation == " " + p.target
        assert p.prompt == p.prompt.strip()
    assert sum(len(v) for v in FACTS.values()) == len(fs)
    paris = next(p for p in fs if p.prompt == "The capital of France is")
    assert paris.continuation == " Paris" and paris.meta["relation"] == "capital"


# --- registry -------------------------------------------------------------------------------------


def test_registry_lists_and_builds():
    listed = {d["name"]: d for d in list_suites()}
    assert {"arithmetic", "facts"} <= listed.keys()
    assert listed["arithmetic"]["needs_edit"] is True and listed["facts"]["needs_edit"] is False
    assert all(set(d) == {"name", "description", "needs_edit"} and d["description"] for d in listed.values())
    assert len(get_suite("facts")) == len(facts())
    ps = get_suite("arithmetic", edit=EditRequest("2+2=", "5"), n=4, ops=["+"], paraphrases=False)
    assert len(ps) == 25 and ps.counts()["target"] == 1


def test_unknown_suite_did_you_mean():
    with pytest.raises(KeyError) as ei:
        get_suite("arithmetc")
    msg = str(ei.value)
    assert "Did you mean 'arithmetic'?" in msg and "facts" in msg
    with pytest.raises(ValueError, match="unknown suite 'nonsense-suite-xyz'. Known: arithmetic, facts"):
        get_suite("nonsense-suite-xyz")
    assert isinstance(ei.value, UnknownSuiteError)


def test_register_suite():
    try:
        register_suite("tiny-test", "one probe", lambda: ProbeSet([Probe("2+2=", "4")]))
        assert len(get_suite("tiny-test")) == 1
        assert "tiny-test" in [d["name"] for d in list_suites()]
        with pytest.raises(ValueError, match="already registered"):
            register_suite("tiny-test", "again", lambda: ProbeSet([]))
        with pytest.raises(TypeError):
            register_suite("bad", "not callable", 3)
    finally:
        SUITES.unregister("tiny-test")


def test_public_namespace():
    assert suites.arithmetic is arithmetic and suites.facts is facts
    assert suites.get_suite is get_suite and suites.list_suites is list_suites
