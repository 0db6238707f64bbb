"""Weight-change anatomy: norms and effective ranks against hand computation; the runner stores them."""

import math

import pytest
import torch

from editscope.metrics.weight_change import anatomy_scalars, effective_rank, weight_change


def test_norms_and_effective_rank_match_hand_computation():
    w = {"a": torch.ones(3, 4), "b": torch.full((5,), 2.0)}
    u, v = torch.tensor([1.0, 2.0, 2.0]), torch.tensor([0.0, 3.0, 4.0, 0.0])
    d = {"a": torch.outer(u, v), "b": torch.tensor([3.0, 4.0, 0.0, 0.0, 0.0])}
    changes = {c.name: c for c in weight_change(w, d)}
    assert changes["a"].fro == pytest.approx(3 * 5)  # ||u|| ||v||
    assert changes["a"].relative == pytest.approx(15 / math.sqrt(12))
    assert changes["a"].effective_rank == pytest.approx(1.0)  # rank one
    assert changes["b"].fro == pytest.approx(5.0) and changes["b"].effective_rank is None
    assert [c.name for c in weight_change(w, d)] == ["a", "b"]  # largest update first
    sc = anatomy_scalars(w, d)
    assert sc["delta:fro"][0] == pytest.approx(math.sqrt(15 ** 2 + 5 ** 2))
    assert sc["delta:relative"][0] == pytest.approx(math.sqrt(250) / math.sqrt(12 + 20))
    assert sc["delta:effective_rank"][0] == pytest.approx(1.0) and sc["delta:fro"][1]["b"] == pytest.approx(5.0)


def test_effective_rank_of_an_even_spread_is_the_dimension():
    assert effective_rank(torch.eye(6) * 3) == pytest.approx(6.0)
    assert effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.0]))) == pytest.approx(2.0)
    assert effective_rank(torch.zeros(3, 3)) == 0.0
    with pytest.raises(ValueError, match="matrix"):
        effective_rank(torch.ones(3))
    with pytest.raises(ValueError, match="no weight"):
        weight_change({}, {"x": torch.ones(2, 2)})
