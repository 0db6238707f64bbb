"""What a unit of work produces, as plain values: a worker (this process or a Ray actor on another
machine) computes :class:`UnitResult` values and the driver alone writes them, one transaction per
unit. :class:`Stored` is what the driver tells a worker about a resumed run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .plan import UnitPlan
from .store import ResultsStore, Unit

#: a scalar measurement: name -> (value or None, detail)
Scalars = dict[str, tuple[float | None, dict[str, Any]]]


@dataclass
class UnitResult:
    """One unit's measurements. ``rows``: probe-set name -> evaluation rows (as
    :class:`editscope.evaluation.EvalResult` rows plus ``edit_index``); ``seconds_*``: wall seconds
    of the edit and of its evaluation; ``fingerprint``: the evaluated model state's key."""

    unit: UnitPlan
    status: str
    seconds_edit: float | None
    seconds_eval: float
    fingerprint: str
    info: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scalars: Scalars = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def write(self, store: ResultsStore) -> int:
        """Store the unit and all it measured atomically; returns its row id."""
        u = self.unit
        return store.add_unit(u.method, u.unit, u.step, u.edits, self.status, seconds_edit=self.seconds_edit,
                              seconds_eval=self.seconds_eval, fingerprint=self.fingerprint, info=self.info,
                              rows=self.rows, scalars=self.scalars, events=self.events)

    def progress_info(self) -> dict[str, Any]:
        """What the progress bar shows: the status and the scalar values."""
        return {"status": self.status, "scalars": {k: v[0] for k, v in self.scalars.items()}}


@dataclass(frozen=True)
class Skipped:
    """A unit that produces nothing to store: already stored (``resumed``), or after a chain stopped."""

    unit: UnitPlan
    status: str
    resumed: bool

    def progress_info(self) -> dict[str, Any]:
        return {"status": self.status, **({"resumed": True} if self.resumed else {})}


@dataclass(frozen=True)
class Stored:
    """What a run folder already holds, for a resumed run: the (method, unit) pairs stored, and the
    stored units of each method (a sequential chain replays its accepted edits from them)."""

    done: frozenset[tuple[str, str]] = frozenset()
    units: dict[str, list[Unit]] = field(default_factory=dict)

    @classmethod
    def of(cls, store: ResultsStore) -> Stored:
        by_method: dict[str, list[Unit]] = {}
        for u in store.units():
            by_method.setdefault(u.method, []).append(u)
        return cls(frozenset(store.done()), by_method)


__all__ = ["Scalars", "Skipped", "Stored", "UnitResult"]
