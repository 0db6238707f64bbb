"""Answer rules: how an answer is read from a generated continuation, and when two answers agree.

Efficacy and locality compare *answers*, not first tokens: digits are single tokens in the default
model, so a target ``"1"`` is the first token of ``"12"``; reading the first integer tells them
apart. Each probe's rule is ``meta["answer_rule"]`` when a suite sets it, else the default for its
target (:func:`rule_name_of`): ``integer`` when the target is an integer literal, else ``text``.
Plugins add rules with :func:`register_answer_rule`.

| rule | answer read from a continuation | the target is reached when |
|---|---|---|
| ``integer`` | the first integer, in digits (``"-12, so"`` -> -12) or English words (``" five."`` -> 5); ``None`` when there is none | the answer equals the target's integer (or an alias's), and the number ends before the text does (a number cut by the length cap may go on) |
| ``text-exact`` | as ``text`` | the answer up to the first clause mark equals the normalised target or an alias (free generation scored by exact match) |
| ``text`` | the continuation up to the first clause mark (``. , ; : ! ? newline``), normalised as MQuAKE's answers are (case-folded, accents, punctuation and the articles a/an/the removed) | the normalised continuation starts with the normalised target (or an alias) at a word boundary |

Answers are parsed when results are read (from the stored greedy continuations), so a rule applies
to every stored unit alike; the rule's *name* is part of each probe's content digest
(:func:`editscope.requests.Probe.digest`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..registry import Registry
from .multihop import answer_matches, normalize_answer

#: an answer as a rule reads it: an int (integer rule), a normalised string (text rule) or None
Answer = Any


@dataclass(frozen=True)
class AnswerRule:
    """A named way to read an answer from text.

    ``parse(text) -> (answer, complete)``: the answer (None when the text gives none) and whether
    it is known to be whole (False when it runs to the end of the text, e.g. "10" cut from "100"
    by the length cap). ``reaches(text, targets)``: the continuation gives one of ``targets`` (a
    probe's target and its aliases) as its answer.
    """

    name: str
    version: int
    description: str
    parse: Callable[[str], tuple[Answer, bool]]
    reaches: Callable[[str, Sequence[str]], bool]


# ---- integer ----------------------------------------------------------------------------------

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = {w: 10 * i for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if i >= 2}
_WORD_VALUE = {w: i for i, w in enumerate(_ONES)} | _TENS
_NUMBER_WORD = "|".join(sorted(_WORD_VALUE, key=len, reverse=True))
# words: "[minus] [N hundred [and]] [tens[-ones] | ones]", whole words only
_WORDS = re.compile(
    rf"\b(?P<minus>minus\s+)?(?P<body>(?:(?:{_NUMBER_WORD})\s+hundred(?:\s+and)?(?:\s+(?:{_NUMBER_WORD})(?:-(?:{_NUMBER_WORD}))?)?)"
    rf"|(?:(?:{_NUMBER_WORD})(?:-(?:{_NUMBER_WORD}))?))\b", re.IGNORECASE)
_DIGITS = re.compile(r"(?<![\w.])-?\d+|\d+")


def words_value(body: str) -> int | None:
    """``"forty-two"`` -> 42, ``"one hundred five"`` -> 105; None for a malformed phrase ("five-six")."""
    parts = re.split(r"[\s-]+", body.lower().strip())
    parts = [p for p in parts if p != "and"]
    total = 0
    if "hundred" in parts:
        i = parts.index("hundred")
        if i != 1 or _WORD_VALUE.get(parts[0], 100) >= 10:
            return None
        total, parts = 100 * _WORD_VALUE[parts[0]], parts[2:]
    if not parts:
        return total
    if len(parts) == 1:
        return total + _WORD_VALUE[parts[0]]
    if len(parts) == 2 and parts[0] in _TENS and _WORD_VALUE.get(parts[1], 10) < 10 and parts[1] != "zero":
        return total + _TENS[parts[0]] + _WORD_VALUE[parts[1]]
    return None


def parse_integer(text: str) -> tuple[int | None, bool]:
    """The first integer of ``text`` (digits or English words) and whether it is whole: ``"12, so"``
    -> ``(12, True)``; ``" five."`` -> ``(5, True)``; ``"10"`` -> ``(10, False)`` (it may go on);
    ``"-3\\n"`` -> ``(-3, True)``; ``"x"`` -> ``(None, True)``."""
    text = text or ""
    d = _DIGITS.search(text)
    w = _WORDS.search(text)
    if w is not None and (d is None or w.start() < d.start()):
        v = words_value(w.group("body"))
        if v is not None:
            v = -v if w.group("minus") else v
            # a word number is whole when a non-letter follows ("five." / "five\n"), not at the text's end
            return v, w.end() < len(text)
    if d is None:
        return None, True
    return int(d.group()), d.end() < len(text)


def integer_of(target: str) -> int | None:
    """The integer a target string names (``"5"``, ``" 5"``, ``"five"``), or None."""
    v, _ = parse_integer(target.strip() + " ")
    return v


def integer_reaches(text: str, targets: Sequence[str]) -> bool:
    """The first integer of ``text`` is whole and equals a target's (``"12"`` does not reach ``"1"``)."""
    answer, complete = parse_integer(text)
    return answer is not None and complete and any(answer == integer_of(t) for t in targets)


def is_integer_literal(target: str) -> bool:
    return re.fullmatch(r"\s*-?\d+\s*", target or "") is not None


# ---- text -------------------------------------------------------------------------------------

_CLAUSE_END = re.compile(r"[.,;:!?\n]")

#: the text rule's normalisation (SQuAD-style, shared with MQuAKE's answer matching)
normalise_text = normalize_answer


def parse_text(text: str) -> tuple[str | None, bool]:
    """The continuation up to its first clause mark, normalised (None when nothing is left); whole
    when a clause mark ends it."""
    text = text or ""
    m = _CLAUSE_END.search(text.lstrip())
    head = text.lstrip()[: m.start()] if m else text
    ans = normalise_text(head)
    return (ans or None), m is not None


def text_reaches(text: str, targets: Sequence[str]) -> bool:
    """The normalised continuation starts with a normalised target at a word boundary (more words may
    follow: "Paris, France" gives "Paris"): :func:`answer_matches` in ``prefix`` mode."""
    return answer_matches(text or "", list(targets), mode="prefix")


def text_exact_reaches(text: str, targets: Sequence[str]) -> bool:
    """The continuation's answer (up to its first clause mark, normalised) *is* a target: free
    generation scored by exact match ("English. She was" gives "English"; "French and English" does
    not)."""
    answer, _ = parse_text(text or "")
    return answer is not None and any(answer == normalise_text(t) for t in targets if normalise_text(t))


ANSWER_RULES: Registry[AnswerRule] = Registry("answer rule", {
    "integer": AnswerRule("integer", 1, "the first integer (digits or English words)", parse_integer,
                          integer_reaches),
    "text": AnswerRule("text", 1, "normalised text up to the first clause mark, aliases accepted", parse_text,
                       text_reaches),
    "text-exact": AnswerRule("text-exact", 1, "normalised text up to the first clause mark equals the target or an "
                             "alias (free generation, exact match)", parse_text, text_exact_reaches),
})


def register_answer_rule(rule: AnswerRule, *, overwrite: bool = False) -> AnswerRule:
    """Add an answer rule (a plugin's); suites name it in ``Probe.meta["answer_rule"]``."""
    return ANSWER_RULES.register(rule.name, rule, overwrite=overwrite)


def rule_name_of(target: str, meta: dict[str, Any] | None = None) -> str:
    """The answer rule of a probe: ``meta["answer_rule"]`` when set (checked), else ``integer``
    for an integer target and ``text`` otherwise."""
    name = (meta or {}).get("answer_rule")
    if name is not None:
        return ANSWER_RULES[name].name
    return "integer" if is_integer_literal(target) else "text"


def answer_key(rule: AnswerRule, text: str) -> Any:
    """What two continuations are compared by for locality: the parsed answer, or (no answer) the
    first word of the text, so that two answerless continuations agree only when they start alike."""
    ans, _ = rule.parse(text or "")
    if ans is not None:
        return ("answer", ans)
    return ("none", first_word(text or ""))


_FIRST_WORD = re.compile(r"\s*(-?[^\W_]+|\S)")


def first_word(text: str) -> str:
    """The leading word of a continuation: ``" -12, so"`` -> ``"-12"``, ``"Paris."`` -> ``"Paris"``,
    ``"+3"`` -> ``"+"``; ``""`` for blank text."""
    m = _FIRST_WORD.match(text or "")
    return m.group(1) if m else ""


__all__ = ["ANSWER_RULES", "Answer", "AnswerRule", "answer_key", "first_word", "integer_of", "integer_reaches", "is_integer_literal", "normalise_text",
           "parse_integer", "parse_text", "register_answer_rule", "rule_name_of", "text_exact_reaches", "text_reaches", "words_value"]
