import pytest

from editscope import EditRequest, Probe, ProbeSet
from editscope.requests import resolve_sep


@pytest.mark.parametrize(
    "prompt,target,sep",
    [
        ("The capital of France is", "Paris", " "),
        ("2+2=", "5", ""),
        ("The capital of France is", " Paris", ""),
        ("Q: who? A:", "Bob", " "),
        ("He said (quietly)", "hi", " "),
        ("Numbers: 1,", "2", " "),
        ("x", "-1", ""),
        ("The answer is ", "Paris", ""),  # trailing whitespace moves into the continuation when scored
        ("Name", "ß", " "),
    ],
)
def test_resolve_sep_rule(prompt, target, sep):
    assert resolve_sep(prompt, target) == sep


def test_explicit_sep_wins_and_is_stored():
    r = EditRequest("2+2=", "5", sep=" ")
    assert r.sep == " " and r.continuation == " 5"
    assert EditRequest("2+2=", "5").continuation == "5"
    assert EditRequest("The capital of France is", "Rome", target_true="Paris").continuation_true == " Paris"
    assert EditRequest("2+2=", "5", target_true="4", sep="\n").continuation_true == "\n4"


def test_probe_continuation():
    p = Probe("The capital of France is", "Paris", category="general")
    assert p.continuation == " Paris"
    assert Probe("2+2=", "4").continuation == "4"


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(prompt="", target_new="5"), "prompt"),
        (dict(prompt="   ", target_new="5"), "prompt"),
        (dict(prompt="2+2=", target_new=""), "target_new"),
        (dict(prompt="2+2=", target_new="5", target_true=" "), "target_true"),
        (dict(prompt="2+2=", target_new="5", subject="3+3"), "subject"),
    ],
)
def test_edit_request_bad_input_names_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        EditRequest(**kwargs)


def test_probe_bad_input():
    with pytest.raises(ValueError, match="prompt"):
        Probe("", "x")
    with pytest.raises(ValueError, match="target"):
        Probe("x", "")
    with pytest.raises(ValueError, match="category"):
        Probe("x", "y", category="")
    with pytest.raises(TypeError, match="prompt"):
        Probe(3, "y")


def test_probeset_categories_and_slicing():
    ps = ProbeSet([Probe("a", "b", "target"), Probe("c", "d", "near"), Probe("e", "f", "near")], name="t")
    assert len(ps) == 3 and ps.counts() == {"target": 1, "near": 2}
    assert ps.categories() == ["target", "near"]
    assert len(ps.by_category("near")) == 2
    assert isinstance(ps[1:], ProbeSet) and len(ps[1:]) == 2
    assert len(ps + ps) == 6
    with pytest.raises(KeyError, match="far"):
        ps.by_category("far")
    with pytest.raises(TypeError, match="item 0"):
        ProbeSet(["not a probe"])
