"""Stale units of a resumed run: stored units measured on other versions of the study's probes
(a suite changed since they ran), found and re-measured so that a store never mixes probe versions.

A unit is stale when, for a probe set it evaluates, a stored probe's content digest
(:mod:`editscope.probe_versions`) differs from the plan's, a planned probe is missing, or a stored
probe is no longer planned. Re-evaluation re-applies the unit's edit (same seed and hyperparameters)
and checks that it reproduces the stored unit: the same model state (the unit's fingerprint), or,
where floating-point results differ between machines and thread counts (key statistics, training
steps), the same measurements: every stored target and paraphrase probe and a sample of
:data:`CHECK_SAMPLE` other unchanged probes give the stored greedy output again (at least
:data:`CHECK_AGREEMENT` of the sample, every efficacy probe). Then only the differing probes are
measured again and replace the stale rows, in one transaction per unit; the check is recorded in
the unit's ``reevaluated`` event. A unit that does not reproduce is removed, so the resumed run
computes it whole; so is an unrelated-edit control whose drawn edit itself changed (its
control-target probe differs): a re-applied *other* edit could pass the check by changing little.
Sequential chains are not re-evaluated in place (their steps depend on each other): such a run is
refused with the fix.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

from ..errors import InputError
from ..evaluation import default_watch
from ..probe_versions import probe_digest
from ..requests import ProbeSet
from .plan import CONTROL_TARGET, Plan, UnitPlan
from .store import ResultsStore, Unit
from .units import Runner

log = logging.getLogger(__name__)

#: unchanged probes re-measured per unit to check that a re-applied edit reproduces the stored unit
CHECK_SAMPLE = 200
#: share of the sample whose greedy output must be the stored one
CHECK_AGREEMENT = 0.99
EFFICACY_CATEGORIES = ("target", "paraphrase")


@dataclass
class StaleUnit:
    """A stored unit and what differs: per probe set, the planned indices to measure again and the
    stored indices to drop (re-measured ones and ones no longer planned)."""

    stored: Unit
    plan: UnitPlan
    measure: dict[str, list[int]] = field(default_factory=dict)
    drop: dict[str, list[int]] = field(default_factory=dict)
    #: the unit's own edit changed (an unrelated control drawn by a newer rule: its control-target
    #: probe differs), so none of its stored rows measure the planned edit
    edit_changed: bool = False

    @property
    def n_probes(self) -> int:
        return sum(len(v) for v in self.measure.values())


def planned_sets(plan: Plan, unit: UnitPlan) -> dict[str, tuple[int | None, ProbeSet]]:
    """The probe sets a unit evaluates (the base unit: every set of the study)."""
    return plan.all_sets() if unit.method == "base" else plan.eval_sets(unit)


def stale_units(plan: Plan, store: ResultsStore) -> list[StaleUnit]:
    """Every stored unit whose measured probes differ from the plan's (base unit first)."""
    by_key = {(u.method, u.unit): u for u in plan.units}
    wanted_cache: dict[str, dict[int, str]] = {}
    out = []
    for su in store.units():
        up = by_key.get((su.method, su.unit))
        if up is None or su.status not in ("done", "failed"):
            continue
        have = store.probe_digests(su.id)
        if not have and su.method != "base" and not up.evaluate:
            continue  # a unit that evaluates nothing (a sequential step between evaluations)
        st = StaleUnit(su, up)
        for name, (_, ps) in planned_sets(plan, up).items():
            if name not in wanted_cache:
                wanted_cache[name] = {i: probe_digest(p) for i, p in enumerate(ps)}
            want, got = wanted_cache[name], have.get(name, {})
            measure = [i for i, d in want.items() if got.get(i) != d]
            drop = [i for i in got if i not in want or got[i] != want[i]]
            if measure:
                st.measure[name] = measure
                st.edit_changed |= name == up.control_set and any(ps[i].category == CONTROL_TARGET for i in measure)
            if drop:
                st.drop[name] = drop
        if st.measure or st.drop:
            out.append(st)
    return out


def reevaluate_stale(plan: Plan, store: ResultsStore, runner: Runner, stale: list[StaleUnit],
                     progress: bool = False) -> dict[str, int]:
    """Re-measure ``stale`` units on ``runner``'s model (see the module docstring). Returns counts:
    ``units`` re-measured in place, ``probes`` measured, ``redo`` units removed to be computed again."""
    if not stale:
        return {"units": 0, "probes": 0, "redo": 0}
    if plan.config.protocol.kind == "sequential":
        names = ", ".join(f"{s.stored.method}/{s.stored.unit}" for s in stale[:5])
        raise InputError(f"{len(stale)} stored units of this sequential run were measured on other versions of the "
                         f"study's probes ({names}{', ...' if len(stale) > 5 else ''}); a chain cannot be re-measured "
                         "in place. Run the study again into a new --out folder")
    specs = {m.name: m for m in plan.config.all_methods()}
    counts = {"units": 0, "probes": 0, "redo": 0}
    # base first: its re-measurement leaves the base outputs every edited unit is compared with
    stale = sorted(stale, key=lambda s: s.stored.method != "base")
    for st in stale:
        if st.edit_changed:
            log.warning("%s/%s: its unrelated edit is drawn differently now; it is computed again whole",
                        st.stored.method, st.stored.unit)
            store.delete_unit(st.stored.id)
            counts["redo"] += 1
            continue
        sets = planned_sets(plan, st.plan)
        sub = _subsets(sets, st.measure)
        # each whole set's watched target, so a part of it is measured exactly as in the whole set
        watches = {name: default_watch(ps) for name, (_, ps) in sets.items()}
        runner.evaluate_sets(sub, watches=watches)  # on the base weights: the base outputs for these probes
        check: dict[str, object] = {"state": "base"}
        if st.stored.method == "base":
            rows = runner.evaluate_sets(sub, watches=watches)
        else:
            stored_rows = {(r["probe_set"], r["index"]): r for r in store.rows(unit_id=st.stored.id)}
            keys = _check_keys(st, stored_rows, sets)
            sample = _subsets(sets, _by_set(keys))
            runner.evaluate_sets(sample, watches=watches)  # base outputs for the check probes
            with runner.applied(specs[st.stored.method], st.plan) as (key, digests, failure):
                check = {"state": "same"}
                if bool(failure) != (st.stored.status == "failed"):
                    check = {"state": "failed" if failure else "applied", "agree": 0.0}
                elif key != st.stored.fingerprint:
                    check = _agreement(stored_rows, runner.evaluate_sets(sample, digests, watches=watches), keys)
                if check["state"] not in ("same", "measurements"):
                    log.warning("%s/%s: re-applying the edit did not reproduce the stored unit (%s); it is computed "
                                "again whole", st.stored.method, st.stored.unit, check)
                    store.delete_unit(st.stored.id)
                    counts["redo"] += 1
                    continue
                rows = runner.evaluate_sets(sub, digests, watches=watches)
        for name, rs in rows.items():
            full = st.measure[name]
            for r in rs:
                r["index"] = full[r["index"]]  # back to the index in the whole probe set
        store.replace_rows(st.stored.id, st.drop, rows, ("reevaluated", {
            "probes": {k: len(v) for k, v in st.measure.items()}, "dropped": {k: len(v) for k, v in st.drop.items()},
            "reproduced": check}))
        counts["units"] += 1
        counts["probes"] += st.n_probes
        if progress:
            print(f"re-evaluated {st.stored.method}/{st.stored.unit} on {st.n_probes} changed probes", file=sys.stderr)
    return counts


def _by_set(keys: list[tuple[str, int]]) -> dict[str, list[int]]:
    """(set, index) keys grouped by set, in order."""
    out: dict[str, list[int]] = {}
    for name, i in keys:
        out.setdefault(name, []).append(i)
    return out


def _subsets(sets: dict[str, tuple[int | None, ProbeSet]], indices: dict[str, list[int]]
             ) -> dict[str, tuple[int | None, ProbeSet]]:
    """The probes ``indices`` (set -> indices) of ``sets``, as sub-sets under the same names."""
    return {name: (sets[name][0], ProbeSet([sets[name][1][i] for i in idx], name=sets[name][1].name))
            for name, idx in indices.items()}


def _check_keys(st: StaleUnit, stored_rows: dict[tuple[str, int], dict], sets: dict[str, tuple[int | None, ProbeSet]]
                ) -> list[tuple[str, int]]:
    """The unchanged probes a re-applied edit is checked on, as sorted (set, index) keys: every target
    and paraphrase probe and an evenly spread sample of :data:`CHECK_SAMPLE` others."""
    stale = {(name, i) for name, idx in st.measure.items() for i in idx}
    keep = sorted(k for k in stored_rows if k not in stale and k[0] in sets)
    eff = {k for k in keep if sets[k[0]][1][k[1]].category in EFFICACY_CATEGORIES}
    rest = [k for k in keep if k not in eff]
    step = max(1, len(rest) // CHECK_SAMPLE)
    return sorted(eff | set(rest[::step][:CHECK_SAMPLE]))


def _agreement(stored_rows: dict[tuple[str, int], dict], rows: dict[str, list[dict]], keys: list[tuple[str, int]]
               ) -> dict[str, object]:
    """How the re-applied edit's greedy outputs on the check sample compare with the stored ones."""
    by_set = _by_set(keys)
    same = eff_same = eff_n = n = 0
    for name, rs in rows.items():
        for r, i in zip(rs, by_set[name]):
            ok = r["greedy"] == stored_rows[(name, i)]["greedy"]
            n, same = n + 1, same + ok
            if r["category"] in EFFICACY_CATEGORIES:
                eff_n, eff_same = eff_n + 1, eff_same + ok
    agree = same / n if n else 0.0
    good = n > 0 and eff_same == eff_n and agree >= CHECK_AGREEMENT
    return {"state": "measurements" if good else "differs", "checked": n, "agree": round(agree, 4),
            "efficacy_checked": eff_n, "efficacy_agree": eff_same}


__all__ = ["CHECK_AGREEMENT", "CHECK_SAMPLE", "StaleUnit", "planned_sets", "reevaluate_stale", "stale_units"]
