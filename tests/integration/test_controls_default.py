"""Controls on the real default model: the identity edit's noise floor on >= 1,000 probes, and
paraphrase templates that the base model answers with a real answer."""

import re

import pytest

import editscope as es
from editscope.metrics.answers import first_word
from editscope.metrics.edit_metrics import METRICS
from editscope.probes.arithmetic import TEMPLATE_NAMES, number_words

pytestmark = pytest.mark.integration


def test_identity_keeps_every_answer_on_over_1000_probes(default_model):
    probes = es.suites.arithmetic(es.EditRequest("2+2=", "5", subject="2+2"), n=18)
    assert len(probes) >= 1000
    es.evaluate(default_model, probes)
    h = es.apply_edit(default_model, [es.EditRequest("2+2=", "5", subject="2+2")], "identity")
    try:
        res = es.evaluate(default_model, probes)
    finally:
        h.undo()
    assert not res.is_base
    fn = METRICS["answer_unchanged"].fn
    changed = [r for r in res.rows if not fn(r)]
    assert changed == [], [(r["prompt"], r["base_greedy"], r["greedy"]) for r in changed[:5]]
    assert all(r["unchanged"] for r in res.rows)


_WORDS = {number_words(i) for i in range(0, 200)}
_WORDS |= {w.capitalize() for w in _WORDS}


def _is_answer(text: str) -> bool:
    w = first_word(text)
    return bool(re.fullmatch(r"-?\d+", w)) or w in _WORDS or w.split("-")[0] in _WORDS


@pytest.mark.parametrize("query", ["2+2=", "7*8=", "13-6="])
def test_every_paraphrase_template_gets_a_real_answer_from_the_base_model(default_model, query):
    ps = es.suites.arithmetic(es.EditRequest(query, "1"), n=15)
    para = [p for p in ps if p.category == "paraphrase"]
    assert {p.meta["template"] for p in para} | {"grid"} >= set(TEMPLATE_NAMES) - {"grid"}
    gens = es.greedy_continuations(default_model, [p.prompt for p in para], 4)
    bad = [(p.meta["template"], p.prompt, g.text) for p, g in zip(para, gens) if not _is_answer(g.text)]
    assert bad == []
