"""Validated value types: what to edit (:class:`EditRequest`) and what to measure (:class:`Probe`).

The separator between a prompt and its target is decided here, once, by :func:`resolve_sep`, and
stored with the object; scoring and methods use :attr:`continuation` verbatim and never re-space it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

_SEP_AFTER = ",.;:!?)"

STANDARD_CATEGORIES = ("target", "paraphrase", "near", "far", "general", "portability")


def resolve_sep(prompt: str, target: str, sep: str | None = None) -> str:
    """The string placed between ``prompt`` and ``target``.

    An explicit ``sep`` wins. Otherwise one space when the prompt ends with a letter or one of
    ``,.;:!?)`` and the target starts with a letter or digit, else nothing:
    ``("The capital of France is", "Paris") -> " "``, ``("2+2=", "5") -> ""``,
    ``("... is", " Paris") -> ""`` (the target already carries its space).
    """
    if sep is not None:
        return sep
    if not prompt or not target:
        return ""
    last, first = prompt[-1], target[0]
    if (last.isalpha() or last in _SEP_AFTER) and first.isalnum():
        return " "
    return ""


def _require_text(value: Any, name: str, where: str = "") -> None:
    if not isinstance(value, str):
        raise TypeError(f"{where}{name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{where}{name} is empty; give a non-blank string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a command-line argument whose bytes were not UTF-8
        raise ValueError(f"{where}{name} {value!r} holds bytes that are not valid UTF-8 (at character {e.start}); "
                         "give the text as UTF-8") from None


@dataclass(frozen=True)
class EditRequest:
    """One edit: after it, ``prompt`` should be continued by ``target_new``.

    Attributes:
        prompt: the text the model reads, e.g. ``"2+2="``.
        target_new: the wanted continuation, e.g. ``"5"`` (without the separator).
        subject: the span of ``prompt`` whose representation locate-then-edit methods change
            (ROME/MEMIT); must occur in ``prompt`` when given.
        target_true: the model's original answer, for the ``prob`` efficacy protocol.
        sep: separator between prompt and target; ``None`` means decided by :func:`resolve_sep`
            at construction (the stored value is always the resolved string).
    """

    prompt: str
    target_new: str
    subject: str | None = None
    target_true: str | None = None
    sep: str | None = None
    sep_explicit: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _require_text(self.prompt, "prompt", "EditRequest.")
        _require_text(self.target_new, "target_new", "EditRequest.")
        if self.target_true is not None:
            _require_text(self.target_true, "target_true", "EditRequest.")
        if self.subject is not None:
            _require_text(self.subject, "subject", "EditRequest.")
            if self.subject not in self.prompt:
                raise ValueError(
                    f"EditRequest.subject {self.subject!r} does not occur in prompt {self.prompt!r}; "
                    "give the exact substring of the prompt that names the subject"
                )
        object.__setattr__(self, "sep_explicit", self.sep is not None)
        object.__setattr__(self, "sep", resolve_sep(self.prompt, self.target_new, self.sep))

    @property
    def continuation(self) -> str:
        """``sep + target_new``: the exact text scored after the prompt."""
        return self.sep + self.target_new

    @property
    def continuation_true(self) -> str | None:
        """The scored text for ``target_true`` (explicit ``sep``, else resolved for it), or None."""
        if self.target_true is None:
            return None
        sep = self.sep if self.sep_explicit else None
        return resolve_sep(self.prompt, self.target_true, sep) + self.target_true


@dataclass(frozen=True)
class Probe:
    """One measurement: how the model continues ``prompt``, compared with ``target``.

    ``category`` groups probes for aggregation (see :data:`STANDARD_CATEGORIES`; any other
    non-empty name is a user-defined category). ``meta`` holds free-form provenance
    (operands, record id, template name, ...).
    """

    prompt: str
    target: str
    category: str = "general"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    sep: str | None = None

    def __post_init__(self) -> None:
        _require_text(self.prompt, "prompt", "Probe.")
        _require_text(self.target, "target", "Probe.")
        if not isinstance(self.category, str) or not self.category:
            raise ValueError(f"Probe.category must be a non-empty string, got {self.category!r}")
        object.__setattr__(self, "sep", resolve_sep(self.prompt, self.target, self.sep))

    @property
    def continuation(self) -> str:
        """``sep + target``: the exact text scored after the prompt."""
        return self.sep + self.target


class ProbeSet(Sequence[Probe]):
    """An ordered, immutable collection of :class:`Probe` with category helpers."""

    def __init__(self, probes: Iterable[Probe], name: str = "probes") -> None:
        self._probes: tuple[Probe, ...] = tuple(probes)
        for i, p in enumerate(self._probes):
            if not isinstance(p, Probe):
                raise TypeError(f"ProbeSet item {i} is {type(p).__name__}, expected Probe")
        self.name = name

    def __len__(self) -> int:
        return len(self._probes)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return ProbeSet(self._probes[i], name=self.name)
        return self._probes[i]

    def __iter__(self) -> Iterator[Probe]:
        return iter(self._probes)

    def __repr__(self) -> str:
        counts = ", ".join(f"{c}={n}" for c, n in self.counts().items())
        return f"ProbeSet({self.name!r}, n={len(self)}: {counts})"

    def categories(self) -> list[str]:
        """Categories in first-seen order."""
        return list(dict.fromkeys(p.category for p in self._probes))

    def counts(self) -> dict[str, int]:
        """Number of probes per category."""
        out: dict[str, int] = {}
        for p in self._probes:
            out[p.category] = out.get(p.category, 0) + 1
        return out

    def by_category(self, category: str) -> ProbeSet:
        """The probes of one category (error if none)."""
        if category not in self.counts():
            raise KeyError(f"no probes of category {category!r}; have {self.categories()}")
        return ProbeSet((p for p in self._probes if p.category == category), name=self.name)

    def __add__(self, other: ProbeSet) -> ProbeSet:
        return ProbeSet(self._probes + tuple(other), name=f"{self.name}+{other.name}")
