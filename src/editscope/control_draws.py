"""Controls that a side effect is attributed against (docs/architecture.md "Controls").

* :func:`placebo_delta`: a random weight delta matched to a real one, tensor by tensor: the same
  tensors, the same rank, the same singular values (hence the same Frobenius and spectral norm),
  with random singular vectors. It answers "would *any* change of this size, in these weights,
  move these probes?".
* :func:`function_space_delta`: a placebo in function space: the same keys read (the delta's
  input-side singular vectors and singular values), a random value written, so the change it makes
  to the edit's own activations has exactly the edit's size ``||delta k||``.
* :func:`unrelated_requests`: edits of other prompts of the same kind as a given edit ("7*8=" ->
  "3" for "2+2=" -> "5") or of another kind (a CounterFact fact for an arithmetic edit), seeded.
  Made by the same method and evaluated on the probes built around the edit under study, they
  answer "does editing *anything like this* move these probes?" -- the strongest of the controls.

The ``placebo`` and ``identity`` edit methods (:mod:`editscope.methods.controls`) use these; the
runner builds unrelated-edit units from a study's ``controls:`` key.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch

from .probes.arithmetic import parse_arithmetic
from .requests import EditRequest, ProbeSet
from .probes.datasets import load_counterfact

#: singular values below ``RANK_TOL * max(m, n) * s_max`` count as zero (numpy's matrix_rank rule,
#: with float32's epsilon: deltas are differences of float32 weights)
RANK_TOL = float(torch.finfo(torch.float32).eps)


def numerical_rank(s: torch.Tensor, shape: tuple[int, int]) -> int:
    """Rank from singular values ``s`` (descending) of an ``m x n`` matrix."""
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    return int((s > s[0] * max(shape) * RANK_TOL).sum())


def _generator(seed: int, name: str) -> torch.Generator:
    h = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & (2**63 - 1))


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """``rows x cols`` (cols <= rows) with orthonormal columns, Haar-distributed (QR of a Gaussian
    with the signs of R's diagonal fixed)."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()).double())


def placebo_tensor(delta: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int]:
    """A random tensor matched to ``delta``; returns it (float64) and the rank matched.

    2-D: ``U diag(s) V^T`` with ``delta``'s nonzero singular values ``s`` and random orthonormal
    ``U`` (m x r), ``V`` (n x r). Other shapes: a Gaussian direction scaled to ``delta``'s norm
    (rank reported as 1 for a nonzero vector, 0 for zero). The Frobenius norm equals
    ``delta``'s to float64 precision.
    """
    d = delta.detach().double().cpu()
    norm = torch.linalg.vector_norm(d)
    if float(norm) == 0.0:
        return torch.zeros_like(d), 0
    if d.ndim == 2:
        s = torch.linalg.svdvals(d)
        r = numerical_rank(s, tuple(d.shape))
        u = _orthonormal(d.shape[0], r, gen)
        v = _orthonormal(d.shape[1], r, gen)
        out = (u * s[:r]) @ v.T
    else:
        out, r = torch.randn(d.shape, generator=gen, dtype=torch.float64), 1
    return out * (norm / torch.linalg.vector_norm(out)), r


def placebo_delta(delta: Mapping[str, torch.Tensor], seed: int) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """A placebo for every tensor of ``delta`` (name -> after-minus-before); returns the placebo
    deltas (float64, same shapes) and the rank matched per tensor. Deterministic in ``seed`` and
    the tensor names."""
    out, ranks = {}, {}
    for name, d in delta.items():
        out[name], ranks[name] = placebo_tensor(d, _generator(seed, name))
    return out, ranks


def function_space_tensor(delta: torch.Tensor, gen: torch.Generator, input_dim: int = 1) -> tuple[torch.Tensor, int]:
    """A placebo that reads the same keys as ``delta`` and writes a random value: for a 2-D
    ``delta = U diag(s) V^T`` whose input side is ``input_dim`` (1 for ``nn.Linear``'s ``[out, in]``,
    0 for GPT-2's ``Conv1D`` and embeddings), the input-side singular vectors and the singular
    values are kept and the output side is drawn at random, so ``||delta' k|| = ||delta k||`` for
    every input ``k`` (the edit's keys included) while the direction written is random. Other
    shapes: as :func:`placebo_tensor`. Returns it (float64) and the rank."""
    d = delta.detach().double().cpu()
    if d.ndim != 2 or float(torch.linalg.vector_norm(d)) == 0.0:
        return placebo_tensor(delta, gen)
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    r = numerical_rank(s, tuple(d.shape))
    u, s, vh = u[:, :r], s[:r], vh[:r]
    if input_dim == 1:  # y = D x: keep the key side V, draw the value side
        return (_orthonormal(d.shape[0], r, gen) * s) @ vh, r
    return (u * s) @ _orthonormal(d.shape[1], r, gen).T, r  # y = x D: keep U, draw V


def function_space_delta(delta: Mapping[str, torch.Tensor], seed: int, input_dims: Mapping[str, int]
                         ) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """:func:`function_space_tensor` for every tensor of ``delta`` (``input_dims``: each tensor's
    input side, default 1); deterministic in ``seed`` and the tensor names."""
    out, ranks = {}, {}
    for name, d in delta.items():
        out[name], ranks[name] = function_space_tensor(d, _generator(seed, name), input_dims.get(name, 1))
    return out, ranks


# ------------------------------------------------------------------------------------------------
# unrelated edits

ARITH_OPERANDS = range(0, 21)
_OPS = ("+", "-", "*")


def _arith_edits(edit: EditRequest | None, n: int, rng: random.Random, exclude: Collection[str],
                 operands: Collection[int] = ARITH_OPERANDS) -> list[EditRequest]:
    """``n`` edits "a op b=" -> a wrong answer, operands from ``operands``, avoiding the edit's
    operands and prompt. Like the edit they control for: the sum's true result has as many digits as
    the edit's target (single-digit results for "2+2=" -> "5"), and the wrong answer is a number of
    that width that does not start the true one (a target "3" for "19+16=" would be the first token
    of "35": a rewrite in name only, which first-token scores count as done)."""
    parsed = parse_arithmetic(edit.prompt) if edit is not None else None
    avoid = {parsed[0], parsed[2]} if parsed else set()
    width = len(edit.target_new.strip()) if parsed and edit.target_new.strip().isdigit() else 1
    out, seen = [], set(exclude)
    cells = [(a, op, b) for op in _OPS for a in operands for b in operands if a not in avoid and b not in avoid]
    rng.shuffle(cells)
    lo, hi = 10 ** (width - 1) if width > 1 else 0, 10**width - 1
    for a, op, b in cells:
        prompt = f"{a}{op}{b}="
        true = {"+": a + b, "-": a - b, "*": a * b}[op]
        if prompt in seen or not lo <= true <= hi:
            continue
        wrong = [c for c in range(lo, hi + 1) if str(c)[0] != str(true)[0]]
        out.append(EditRequest(prompt=prompt, target_new=str(rng.choice(wrong)), subject=f"{a}{op}{b}",
                               target_true=str(true)))
        seen.add(prompt)
        if len(out) == n:
            break
    return out


@dataclass(frozen=True)
class UnrelatedEdit:
    """An unrelated edit and, for one drawn from a dataset, its record's own probes (paraphrases,
    neighbourhood); ``probes`` is None where the study's per-edit suites build them (arithmetic)."""

    request: EditRequest
    probes: ProbeSet | None = None


def _fact_edits(n: int, rng: random.Random, exclude: Collection[str], source: str | None) -> list[UnrelatedEdit]:
    ds = load_counterfact(source)
    pool = [UnrelatedEdit(c.requests[0], c.probes if len(c.probes) else None)
            for c in ds if c.requests and c.requests[0].prompt not in exclude]
    if len(pool) < n:
        raise ValueError(f"controls: the CounterFact source has {len(pool)} usable records, fewer than the "
                         f"{n} unrelated fact edits asked for")
    return rng.sample(pool, n)


def edit_kind(edit: EditRequest) -> str:
    """``"arithmetic"`` for an "a op b=" prompt, else ``"fact"``."""
    return "arithmetic" if parse_arithmetic(edit.prompt) is not None else "fact"


def unrelated_requests(edit: EditRequest, n: int, *, other_kind: bool = False, seed: int = 0,
                       exclude: Collection[str] = (), source: str | None = None,
                       operands: Collection[int] = ARITH_OPERANDS) -> list[EditRequest]:
    """The requests of :func:`unrelated_edits` (same arguments)."""
    return [u.request for u in unrelated_edits(edit, n, other_kind=other_kind, seed=seed, exclude=exclude,
                                               source=source, operands=operands)]


def unrelated_edits(edit: EditRequest, n: int, *, other_kind: bool = False, seed: int = 0,
                    exclude: Collection[str] = (), source: str | None = None,
                    operands: Collection[int] = ARITH_OPERANDS) -> list[UnrelatedEdit]:
    """``n`` seeded edits unrelated to ``edit``: of the same kind (arithmetic for an arithmetic
    edit, CounterFact facts for a fact edit) or, with ``other_kind``, of the other one. Prompts in
    ``exclude`` (and the edit's own) are never drawn. ``source``: the CounterFact file or hub id
    (default the copy in ../shared/data)."""
    if n < 0:
        raise ValueError(f"n={n} unrelated edits: must be >= 0")
    if n == 0:
        return []
    kind = edit_kind(edit)
    if other_kind:
        kind = "fact" if kind == "arithmetic" else "arithmetic"
    rng = random.Random(f"{seed}/{edit.prompt}/{edit.target_new}/{kind}")
    excl = set(exclude) | {edit.prompt}
    if kind == "arithmetic":
        same = edit if edit_kind(edit) == "arithmetic" else None
        return [UnrelatedEdit(r) for r in _arith_edits(same, n, rng, excl, operands)]
    return _fact_edits(n, rng, excl, source)


__all__ = ["UnrelatedEdit", "edit_kind", "function_space_delta", "numerical_rank", "placebo_delta", "placebo_tensor",
           "unrelated_edits", "unrelated_requests"]
