"""The arithmetic probe suite: a full ``a op b=`` grid, categorised relative to one edit.

For an edit such as ``2+2= -> 5`` the suite holds

* ``target``: the edited query itself (target = the edit's ``target_new``);
* ``paraphrase``: the same query in other wordings (``What is 2+2? The answer is``, ``two plus two equals``,
  a few-shot prompt, ...), all expected to change to ``target_new``;
* ``near``: grid queries related to the edited one, with the relation(s) in ``meta["relation"]``:
  ``shares-operand`` (same op, an operand in common: ``2+3=``, ``7+2=``), ``swapped``
  (``b op a=``), ``same-result`` (any op, same true result: ``3+1=``, ``5-1=``), ``other-op``
  (same operands, another op: ``2-2=``, ``2*2=``); plus paraphrases of the swapped and other-op
  queries;
* ``far``: the rest of the grid, plus paraphrases of a fixed, seeded sample of 20 far queries.

Without an edit every grid probe (and the sampled paraphrases) is ``general``. Every probe's
``meta`` has ``a``, ``b``, ``op``, ``result`` (int), ``query`` (the canonical ``"a op b="``),
``template`` (``"grid"`` for the plain grid form, else the template name) and ``relation`` (a
list; empty outside ``near``). ``target``/``paraphrase`` probes also carry ``target_true`` (the
true result as a string), when the edit gives one, ``target_new``, and ``aliases`` (the target
in words: ``"five"``, ``"Five"``, accepted by ``top1`` and ``says_target``). Grid probes are those with
``meta["template"] == "grid"``: exactly one per (op, a, b) cell, for blast-radius plots.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..requests import EditRequest, Probe, ProbeSet

OPS = ("+", "-", "*")
OP_WORDS = {"+": "plus", "-": "minus", "*": "times"}
OPERATIONS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}

# Relations recorded in meta["relation"] for near probes.
SHARES_OPERAND = "shares-operand"
SWAPPED = "swapped"
SAME_RESULT = "same-result"
OTHER_OP = "other-op"
RELATIONS = (SHARES_OPERAND, SWAPPED, SAME_RESULT, OTHER_OP)

GRID = "grid"
N_FAR_PARAPHRASED = 20

_ACCEPTED_FORM = (
    "the form 'a op b=' with non-negative integers a, b and op one of '+', '-', '*' "
    "(spaces allowed, e.g. '2+2=' or '2 + 2 =')"
)
_PARSE = re.compile(r"\s*(\d+)\s*([-+*])\s*(\d+)\s*=\s*")

# ---------------------------------------------------------------------------------------------
# number words

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))


def number_words(n: int) -> str:
    """English words for an integer: ``42 -> "forty-two"``, ``-3 -> "minus three"``,
    ``105 -> "one hundred five"``."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"number_words needs an int, got {type(n).__name__}")
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return f"{number_words(head)} {name}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError("unreachable")  # pragma: no cover


def number_aliases(answer: str) -> list[str]:
    """Other spellings of an integer answer that count as giving it: ``"5"`` -> ``["five", "Five"]``;
    ``[]`` for a non-integer."""
    t = answer.strip()
    if not re.fullmatch(r"-?\d+", t):
        return []
    w = number_words(int(t))
    return [w, w[:1].upper() + w[1:]]


# ---------------------------------------------------------------------------------------------
# parsing


def parse_arithmetic(prompt: str) -> tuple[int, str, int] | None:
    """``"2 + 2 ="`` -> ``(2, "+", 2)``; None when the prompt is not of the form ``a op b=``."""
    m = _PARSE.fullmatch(prompt)
    if m is None:
        return None
    return int(m.group(1)), m.group(2), int(m.group(3))


def canonical_query(a: int, op: str, b: int) -> str:
    """The grid form of a query: ``(2, "+", 2) -> "2+2="``."""
    return f"{a}{op}{b}="


# ---------------------------------------------------------------------------------------------
# paraphrase templates: (name, builder(a, op, b, few_shot_examples) -> prompt, separator)

_VERBAL = {
    "+": "The sum of {a} and {b} is",
    "-": "The result of subtracting {b} from {a} is",
    "*": "The product of {a} and {b} is",
}

_Template = tuple[str, Callable[[int, str, int], str], str]

_TEMPLATES: tuple[_Template, ...] = (
    # "What is 2+2?" (and "... Answer:") is answered by the chat model's end token: lead into the answer
    ("question", lambda a, op, b: f"What is {a}{op}{b}? The answer is", " "),
    ("spaced", lambda a, op, b: f"{a} {op} {b} =", " "),
    ("words", lambda a, op, b: f"{number_words(a)} {OP_WORDS[op]} {number_words(b)} equals", " "),
    ("calculate", lambda a, op, b: f"Calculate: {a}{op}{b}=", ""),
    # "Q: ...? A:" and "a op b equals" make the model echo the expression; these lead into the answer
    ("qa", lambda a, op, b: f"Q: What is {a}{op}{b}?\nA: The answer is", " "),
    ("verbal", lambda a, op, b: _VERBAL[op].format(a=a, b=b), " "),
    ("equals", lambda a, op, b: f"{a}{op}{b} is equal to", " "),
    ("compute", lambda a, op, b: f"Compute {a}{op}{b}. Answer: {a}{op}{b}=", ""),
    ("mixed", lambda a, op, b: f"{a} {OP_WORDS[op]} {b} is", " "),
)
FEW_SHOT = "few_shot"
TEMPLATE_NAMES = tuple(t[0] for t in _TEMPLATES) + (FEW_SHOT,)

# Fixed example pairs for the few-shot template, tried in order; pairs touching the query's (or the
# edit's) operands, or whose result equals the query's answer, are skipped.
_FEW_SHOT_PAIRS = ((1, 1), (3, 4), (5, 2), (6, 3), (7, 1), (8, 5), (4, 9), (9, 7), (6, 8), (7, 7)) + tuple(
    (x, x + 1) for x in range(11, 60, 2)
)
_N_FEW_SHOT = 2


def query_in(template: str, a: int, op: str, b: int) -> tuple[str, str]:
    """The query ``a op b`` worded by one of the suite's templates (:data:`TEMPLATE_NAMES` but the
    few-shot one, or ``"grid"`` for ``a op b=``): ``(prompt, separator before the answer)``, so that
    ``prompt + separator + answer`` is the text the suite's probe scores."""
    if template == GRID:
        return canonical_query(a, op, b), ""
    for name, build, sep in _TEMPLATES:
        if name == template:
            return build(a, op, b), sep
    names = [GRID, *(t[0] for t in _TEMPLATES)]
    raise ValueError(f"template {template!r} is not one of {', '.join(names)}")


def _few_shot_prompt(a: int, op: str, b: int, avoid_operands: set[int], avoid_results: set[str]) -> str:
    lines = []
    for x, y in _FEW_SHOT_PAIRS:
        r = OPERATIONS[op](x, y)
        if x in avoid_operands or y in avoid_operands or str(r) in avoid_results:
            continue
        lines.append(f"{x}{op}{y}={r}")
        if len(lines) == _N_FEW_SHOT:
            break
    return "\n".join(lines + [canonical_query(a, op, b)])


def _sep_for(template_sep: str, target: str) -> str:
    # A target that already starts with whitespace carries its own separator.
    return "" if target[:1].isspace() else template_sep


# ---------------------------------------------------------------------------------------------
# the suite


def _validate(n: Any, ops: Any) -> tuple[str, ...]:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int >= 1, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1 (operands range over 0..n), got {n}")
    if isinstance(ops, str):
        ops = tuple(ops)  # "+-*" -> ("+", "-", "*")
    try:
        ops = tuple(ops)
    except TypeError:
        raise TypeError(f"ops must be a sequence of operators from {list(OPS)}, got {ops!r}") from None
    bad = [o for o in ops if o not in OPS]
    if bad or not ops:
        what = f"unknown {bad!r}" if bad else "empty"
        raise ValueError(f"ops {what}; allowed values are {list(OPS)} (any non-empty subset)")
    return tuple(dict.fromkeys(ops))


def _parse_edit(edit: EditRequest | str | None) -> tuple[str, int, str, int, str | None, str | None] | None:
    """(prompt, a, op, b, target_new, sep) of the edit, or None."""
    if edit is None:
        return None
    if isinstance(edit, EditRequest):
        prompt, target_new, sep, where = edit.prompt, edit.target_new, edit.sep, "edit.prompt"
    elif isinstance(edit, str):
        if not edit.strip():
            raise ValueError(f"edit is empty; give {_ACCEPTED_FORM}, an EditRequest, or None")
        prompt, target_new, sep, where = edit, None, None, "edit"
    else:
        raise TypeError(f"edit must be an EditRequest, a prompt string or None, got {type(edit).__name__}")
    parsed = parse_arithmetic(prompt)
    if parsed is None:
        raise ValueError(f"{where} {prompt!r} does not parse as arithmetic; expected {_ACCEPTED_FORM}")
    a, op, b = parsed
    return prompt, a, op, b, target_new, sep


def _meta(a: int, op: str, b: int, result: int, template: str, relation: list[str]) -> dict[str, Any]:
    return {
        "a": a, "b": b, "op": op, "result": result, "query": canonical_query(a, op, b),
        "template": template, "relation": relation,
    }


def _paraphrases(
    a: int, op: str, b: int, target: str, category: str, relation: list[str], extra: dict[str, Any],
    few_shot: bool, avoid_operands: set[int], skip_prompts: set[str],
) -> list[Probe]:
    result = OPERATIONS[op](a, b)
    out = []
    for name, build, tsep in _TEMPLATES:
        prompt = build(a, op, b)
        if prompt in skip_prompts:
            continue
        meta = _meta(a, op, b, result, name, list(relation)) | extra
        out.append(Probe(prompt, target, category, meta=meta, sep=_sep_for(tsep, target)))
    if few_shot:
        prompt = _few_shot_prompt(a, op, b, avoid_operands | {a, b}, {target.strip(), str(result)})
        if prompt not in skip_prompts:
            meta = _meta(a, op, b, result, FEW_SHOT, list(relation)) | extra
            out.append(Probe(prompt, target, category, meta=meta, sep=_sep_for("", target)))
    return out


def arithmetic(
    edit: EditRequest | str | None = None,
    n: int = 99,
    ops: Sequence[str] = ("+", "-", "*"),
    paraphrases: bool = True,
    few_shot: bool = True,
    seed: int = 0,
) -> ProbeSet:
    """The arithmetic grid ``a op b=`` for ``a, b`` in ``0..n`` and each op, categorised
    relative to ``edit``.

    Args:
        edit: an :class:`EditRequest` whose prompt parses as ``a op b=`` (spaces allowed), a bare
            prompt string such as ``"2+2="`` (target_new unknown: target probes expect the true
            result), or None (every probe is ``general``).
        n: largest operand; ``(n+1)**2`` grid probes per op (10,000 per op by default).
        ops: operators, a non-empty subset of ``("+", "-", "*")``.
        paraphrases: add paraphrase templates of the edited query (``paraphrase``), of the swapped
            and other-op queries (``near``) and of a seeded sample of 20 far queries (``far``).
        few_shot: include the few-shot template (``"1+1=2\\n3+4=7\\n2+2="``) among the paraphrases.
        seed: seed of the far-query sample.

    Targets are the true results as strings (``"-3"`` for ``1-4=``), except for the edited query
    and its paraphrases, whose target is the edit's ``target_new``. See the module docstring for
    categories and meta keys.
    """
    ops = _validate(n, ops)
    parsed = _parse_edit(edit)
    probes: list[Probe] = []
    grid_cells = [(a, op, b) for op in ops for a in range(n + 1) for b in range(n + 1)]

    if parsed is None:
        for a, op, b in grid_cells:
            r = OPERATIONS[op](a, b)
            probes.append(Probe(canonical_query(a, op, b), str(r), "general", meta=_meta(a, op, b, r, GRID, [])))
        if paraphrases:
            for a, op, b in random.Random(seed).sample(grid_cells, min(N_FAR_PARAPHRASED, len(grid_cells))):
                probes += _paraphrases(a, op, b, str(OPERATIONS[op](a, b)), "general", [], {}, few_shot, set(), set())
        return ProbeSet(probes, name="arithmetic")

    e_prompt, A, OP, B, target_new, e_sep = parsed
    R = OPERATIONS[OP](A, B)
    true = str(R)
    edit_target = target_new if target_new is not None else true
    edit_cell = (A, OP, B)
    canonical = canonical_query(A, OP, B)
    extra = ({"target_true": true} | ({"target_new": target_new} if target_new is not None else {})
             | ({"aliases": number_aliases(edit_target)} if number_aliases(edit_target) else {}))

    # target: the edited prompt verbatim, with the edit's own separator
    template = GRID if e_prompt == canonical else "edit"
    probes.append(Probe(e_prompt, edit_target, "target", meta=_meta(A, OP, B, R, template, []) | extra, sep=e_sep))

    # paraphrase: other wordings of the edited query (the canonical grid form too, when the edit
    # prompt is not it; it keeps template "grid" so that the grid stays complete)
    if e_prompt != canonical and edit_cell in set(grid_cells):
        probes.append(Probe(canonical, edit_target, "paraphrase", meta=_meta(A, OP, B, R, GRID, []) | extra,
                            sep=_sep_for("", edit_target)))
    if paraphrases:
        probes += _paraphrases(A, OP, B, edit_target, "paraphrase", [], extra, few_shot, set(), {e_prompt, canonical})

    # near / far grid probes
    edit_operands = {A, B}
    near_paraphrased: list[tuple[int, str, int, list[str]]] = []
    far_cells: list[tuple[int, str, int]] = []
    for a, op, b in grid_cells:
        if (a, op, b) == edit_cell:
            continue
        r = OPERATIONS[op](a, b)
        rel = []
        if op == OP:
            if a in edit_operands or b in edit_operands:
                rel.append(SHARES_OPERAND)
            if a == B and b == A:
                rel.append(SWAPPED)
        if r == R:
            rel.append(SAME_RESULT)
        if op != OP and a == A and b == B:
            rel.append(OTHER_OP)
        category = "near" if rel else "far"
        probes.append(Probe(canonical_query(a, op, b), str(r), category, meta=_meta(a, op, b, r, GRID, rel)))
        if not rel:
            far_cells.append((a, op, b))
        elif SWAPPED in rel or OTHER_OP in rel:
            near_paraphrased.append((a, op, b, rel))

    if paraphrases:
        for a, op, b, rel in near_paraphrased:
            probes += _paraphrases(a, op, b, str(OPERATIONS[op](a, b)), "near", rel, {}, few_shot, edit_operands, set())
        for a, op, b in random.Random(seed).sample(far_cells, min(N_FAR_PARAPHRASED, len(far_cells))):
            probes += _paraphrases(a, op, b, str(OPERATIONS[op](a, b)), "far", [], {}, few_shot, edit_operands, set())
    return ProbeSet(probes, name="arithmetic")
