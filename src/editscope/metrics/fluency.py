"""Fluency of generated text: ROME's weighted n-gram entropy (Meng et al., 2022).

``ngram_entropy(text) = mean(2/3 * H2, 4/3 * H3)`` where ``Hn`` is the entropy in bits of the text's
n-gram frequency distribution; repetitive, degenerate generations score low. ROME tokenizes words
with NLTK's ``word_tokenize``; we use the regex ``\\w+|[^\\w\\s]`` (words and single punctuation
marks), which agrees with it on ordinary prose and needs no extra dependency.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from ..stats import Interval, mean_interval
from ..scoring import greedy_continuations

_WORD = re.compile(r"\w+|[^\w\s]")


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """Weighted mean of the n-gram entropies (bits) of one text; 0.0 for texts too short for any n-gram."""
    if len(ns) != len(weights):
        raise ValueError(f"ns has {len(ns)} entries but weights has {len(weights)}")
    tokens = _WORD.findall(text)
    parts = []
    for n, w in zip(ns, weights):
        counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        h = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        parts.append(w * h)
    return sum(parts) / len(parts)


def fluency(model, prompts: Sequence[str], max_new_tokens: int = 100) -> tuple[Interval, list[str]]:
    """Mean n-gram entropy (with its t-interval) of each prompt followed by its greedy continuation
    (the prompt is part of the text, as in EasyEdit/KnowEdit, whose tables report this x 100).

    ROME and EasyEdit sample with top-k=5; greedy decoding is used here so results are deterministic
    (greedy text is more repetitive, so absolute values run lower than their tables).
    """
    texts = [p + g.text for p, g in zip(prompts, greedy_continuations(model, prompts, max_new_tokens))]
    return mean_interval([ngram_entropy(t) for t in texts]), texts
