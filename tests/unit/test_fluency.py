import math

import pytest

from editscope.metrics.fluency import fluency, ngram_entropy
from editscope.models import tiny_model


def test_ngram_entropy_hand_computed():
    # tokens a b a b: bigrams ab, ba, ab -> p = 2/3, 1/3; trigrams aba, bab -> 1/2, 1/2
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    h3 = 1.0
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * h3) / 2)
    assert ngram_entropy("the the the the the") == 0.0  # one repeated bigram and trigram
    assert ngram_entropy("one") == 0.0
    assert ngram_entropy("Paris, France.") > 0  # punctuation marks are tokens
    varied = "The quick brown fox jumps over the lazy dog while the cat sleeps"
    assert ngram_entropy(varied) > ngram_entropy("the cat the cat the cat the cat the cat the cat")
    with pytest.raises(ValueError, match="weights"):
        ngram_entropy("a b", ns=(2,), weights=(1.0, 2.0))


def test_fluency_on_generations():
    iv, texts = fluency(tiny_model("llama"), ["The capital of France is", "2+2="], max_new_tokens=6)
    assert len(texts) == 2 and iv.n == 2
    assert texts[0].startswith("The capital of France is") and texts[1].startswith("2+2=")  # KnowEdit: prompt kept
    assert iv.value == pytest.approx(sum(ngram_entropy(t) for t in texts) / 2)
