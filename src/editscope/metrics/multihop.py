"""MQuAKE's answer matching and accuracies (Zhong et al., 2023): an answer counts when the model's
text gives the answer or one of its aliases; edit-wise, instance-wise and multi-hop accuracy.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lowercase (casefold), strip accents, delete punctuation, drop the articles a/an/the, and
    collapse whitespace (SQuAD-style normalisation): ``"The U.K.!"`` -> ``"uk"``."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith(("Z", "C")) else
                   ("" if unicodedata.category(ch).startswith(("P", "S")) else ch) for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_matches(generated: str, answers: Sequence[str], *, mode: str = "contains") -> bool:
    """Whether ``generated`` gives one of ``answers`` (the answer and its aliases).

    Rule: both sides are normalised with :func:`normalize_answer`; answers that normalise to
    the empty string are ignored. Then, per answer ``a`` and normalised generation ``g``:

    * ``mode="exact"``: ``g == a`` (MeLLo's check of an extracted answer);
    * ``mode="prefix"``: ``g`` starts with ``a`` followed by a word boundary (the generation
      begins with the answer and may continue: ``"madonna and her band"`` matches ``"Madonna"``);
    * ``mode="contains"`` (default, as MQuAKE's chain-of-thought evaluation checks whether the
      answer appears in the generated answer): ``a`` occurs in ``g`` as a whole-word sequence;
      this includes the prefix and exact cases. Whole words only, so the alias ``"ar"`` does not
      match ``"march"``.
    """
    if mode not in ("exact", "prefix", "contains"):
        raise ValueError(f"mode must be 'exact', 'prefix' or 'contains', got {mode!r}")
    if isinstance(answers, str):
        answers = [answers]
    g = normalize_answer(generated)
    if not g:
        return False
    padded = f" {g} "
    for ans in answers:
        a = normalize_answer(ans)
        if not a:
            continue
        if mode == "exact" and g == a:
            return True
        if mode == "prefix" and (g == a or g.startswith(a + " ")):
            return True
        if mode == "contains" and f" {a} " in padded:
            return True
    return False


def _check_nested(name: str, rows: Sequence[Sequence[bool]], allow_empty_inner: bool = False) -> None:
    if len(rows) == 0:
        raise ValueError(f"{name}: no instances given")
    for i, r in enumerate(rows):
        if len(r) == 0 and not allow_empty_inner:
            raise ValueError(f"{name}: instance {i} has no entries")


def edit_wise_accuracy(per_rewrite_success: Sequence[Sequence[bool]]) -> float:
    """Fraction of all edits (rewrites, pooled over instances) that succeeded.

    ``per_rewrite_success[i][k]``: whether rewrite ``k`` of instance ``i`` is recalled by the
    edited model. ``[[True, False], [True, True]]`` -> 3/4.
    """
    _check_nested("edit_wise_accuracy", per_rewrite_success, allow_empty_inner=True)
    flat = [bool(x) for row in per_rewrite_success for x in row]
    if not flat:
        raise ValueError("edit_wise_accuracy: no rewrites given")
    return sum(flat) / len(flat)


def instance_wise_accuracy(per_rewrite_success: Sequence[Sequence[bool]]) -> float:
    """Fraction of instances whose edits ALL succeeded (MQuAKE's instance-wise accuracy; pass
    the per-hop results of ``new_single_hops`` to get the paper's definition).
    ``[[True, False], [True, True]]`` -> 1/2."""
    _check_nested("instance_wise_accuracy", per_rewrite_success)
    return sum(all(bool(x) for x in row) for row in per_rewrite_success) / len(per_rewrite_success)


def multi_hop_accuracy(per_question_correct: Sequence[Sequence[bool]]) -> float:
    """Fraction of instances where ANY of the multi-hop questions is answered correctly
    (MQuAKE paper: an instance counts as correct if one of its 3 paraphrased questions is).
    ``[[False, True, False], [False, False, False]]`` -> 1/2."""
    _check_nested("multi_hop_accuracy", per_question_correct)
    return sum(any(bool(x) for x in row) for row in per_question_correct) / len(per_question_correct)


__all__ = ["answer_matches", "edit_wise_accuracy", "instance_wise_accuracy", "multi_hop_accuracy",
           "normalize_answer"]
