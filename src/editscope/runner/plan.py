"""From a validated study config to a plan: the edits, the probe sets each evaluation uses, and the
ordered units of work per method (docs/architecture.md "Protocols").

Units: the base evaluation (method ``base``); then per method, ``single``: one unit per edit
(``edit-0003``), ``batch``: one per batch (``batch-0000``), ``sequential``: one per edit step
(``step-0004`` = after 4 edits).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from collections.abc import Sequence
from typing import Any

from ..probes.protocols import free_generation, with_answer_rule
from ..probes.registry import lookup_suite
from ..probes.registry import get_suite
from ..control_draws import ARITH_OPERANDS, unrelated_edits, UnrelatedEdit
from ..requests import EditRequest, Probe, ProbeSet
from .config import ConfigError, DatasetEdits, InlineEdit, MethodSpec, StudyConfig
from ..probes import datasets
from ..probes.arithmetic import number_aliases


@dataclass
class EditItem:
    """One edit of the study: the requests applied together (a dataset case may hold several) and
    the probe sets that measure it (its own case probes, and the suites built for it)."""

    index: int
    requests: list[EditRequest]
    label: str
    probe_sets: dict[str, ProbeSet] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # a dataset case's meta (record label, mined provenance)


@dataclass(frozen=True)
class UnitPlan:
    """One unit of work. ``edits``: the study edits whose probe sets it evaluates (and, unless
    ``requests`` is given, applies). ``draw``: a placebo's draw. ``requests``: an unrelated-edit
    control's own edit, applied instead of the study edit's. ``of_unit``: the unit a control
    belongs to (``edit-0000`` for ``edit-0000-d01``)."""

    method: str
    unit: str
    step: int
    edits: tuple[int, ...]
    evaluate: bool = True
    #: also measure perplexity, fluency and downstream tasks when it evaluates (sequential ``general_every``)
    general: bool = True
    draw: int | None = None
    requests: tuple[EditRequest, ...] | None = None
    of_unit: str | None = None
    #: an unrelated-edit control's own probe set (its edit's prompt and target: did the control edit
    #: take?), named ``control#e<edit>-<u|o><NN>``
    control_set: str | None = None


@dataclass
class Plan:
    config: StudyConfig
    edits: list[EditItem]
    global_sets: dict[str, ProbeSet]
    units: list[UnitPlan]
    #: the unrelated-edit controls' own target probes (``UnitPlan.control_set`` -> (edit index, set))
    control_sets: dict[str, tuple[int, ProbeSet]] = field(default_factory=dict)

    @property
    def methods(self) -> list[MethodSpec]:
        """Every method the study runs, controls included, in run order."""
        return self.config.all_methods()

    def units_of(self, method: str) -> list[UnitPlan]:
        return [u for u in self.units if u.method == method]

    def eval_sets(self, unit: UnitPlan) -> dict[str, tuple[int | None, ProbeSet]]:
        """Probe sets a unit evaluates: name -> (edit index or None, probes). Sequential units see
        every edit applied so far (retention of earlier edits); with ``score_on: batch`` only their
        own edits (and the chain's first ``track_first``), but the last step sees every edit."""
        proto = self.config.protocol
        scope: Sequence[int] = unit.edits
        if proto.kind == "sequential" and (proto.score_on != "batch" or unit.edits[-1] == len(self.edits) - 1):
            scope = range(unit.edits[-1] + 1)
        elif proto.kind == "sequential" and proto.track_first:  # retention of the chain's first edits
            scope = sorted(set(range(min(proto.track_first, unit.edits[-1] + 1))) | set(unit.edits))
        out: dict[str, tuple[int | None, ProbeSet]] = {}
        for i in scope:
            for name, ps in self.edits[i].probe_sets.items():
                out[f"{name}#e{i}"] = (i, ps)
        for name, ps in self.global_sets.items():
            out[name] = (None, ps)
        if unit.control_set is not None:
            out[unit.control_set] = self.control_sets[unit.control_set]
        return out

    def all_sets(self) -> dict[str, tuple[int | None, ProbeSet]]:
        """Every probe set of the study (what the base evaluation covers)."""
        out: dict[str, tuple[int | None, ProbeSet]] = {}
        for e in self.edits:
            for name, ps in e.probe_sets.items():
                out[f"{name}#e{e.index}"] = (e.index, ps)
        out.update({n: (None, ps) for n, ps in self.global_sets.items()})
        out.update(self.control_sets)
        return out

    @property
    def n_probes(self) -> int:
        return sum(len(ps) for _, ps in self.all_sets().values())


def _load_dataset(spec: DatasetEdits):
    """The edit dataset a study's ``edits:`` entry names."""
    if spec.dataset == "jsonl" and spec.source is None:
        raise ConfigError("edits: {dataset: jsonl} needs `source:` (a .jsonl path)")
    return datasets.load_edit_dataset(spec.dataset, spec.source, limit=spec.limit, offset=spec.offset)


def _suite_names(config: StudyConfig) -> list[str]:
    names, seen = [], {}
    for p in config.probes:
        seen[p.suite] = seen.get(p.suite, 0) + 1
        names.append(p.suite if seen[p.suite] == 1 else f"{p.suite}-{seen[p.suite]}")
    return names


def build_plan(config: StudyConfig) -> Plan:
    """Load the edits and probe sets and lay out the units. Raises :class:`ConfigError` for edits
    or suites that yield nothing, or a per-edit suite that cannot use an edit."""
    items: list[EditItem] = []
    for j, src in enumerate(config.edits):
        if isinstance(src, InlineEdit):
            req = EditRequest(**src.model_dump())
            items.append(EditItem(len(items), [req], f"{req.prompt!r} -> {req.target_new!r}"))
            continue
        try:
            ds = _load_dataset(src)
        except (ValueError, FileNotFoundError, OSError) as e:
            raise ConfigError(f"edits[{j}] ({src.dataset}): {e}") from None
        if not len(ds):
            raise ConfigError(f"edits[{j}] ({src.dataset}): no records loaded ({ds.report.summary()}); check "
                              "source/offset/limit")
        for case in ds:
            item = EditItem(len(items), list(case.requests), f"{src.dataset}:{case.case_id}", meta=dict(case.meta))
            if src.case_probes and len(case.probes):
                item.probe_sets["case"] = case.probes if src.generate is None else \
                    free_generation(case.probes, src.generate)
            items.append(item)
    global_sets: dict[str, ProbeSet] = {}
    for name, spec in zip(_suite_names(config), config.probes):
        info = lookup_suite(spec.suite)
        if info.needs_edit:
            for item in items:
                try:
                    ps = get_suite(spec.suite, edit=item.requests[0], **spec.args)
                except (TypeError, ValueError) as e:
                    raise ConfigError(f"probes: suite {spec.suite!r} for edit {item.label}: {e}") from None
                if not len(ps):
                    raise ConfigError(f"probes: suite {spec.suite!r} yields no probes for edit {item.label}")
                item.probe_sets[name] = with_answer_rule(ps, spec.answer_rule)
        else:
            try:
                ps = get_suite(spec.suite, **spec.args)
            except (TypeError, ValueError, FileNotFoundError) as e:
                raise ConfigError(f"probes: suite {spec.suite!r} with args {spec.args}: {e}") from None
            if not len(ps):
                raise ConfigError(f"probes: suite {spec.suite!r} with args {spec.args} yields no probes")
            global_sets[name] = with_answer_rule(ps, spec.answer_rule)
    if not global_sets and not any(e.probe_sets for e in items) and config.perplexity is None \
            and not config.downstream:
        raise ConfigError("probes: nothing to evaluate; add a suite under `probes:` (e.g. facts), dataset "
                          "edits with their case probes, `perplexity:` or `downstream:`")
    units = [UnitPlan("base", "base", 0, ())]
    for m in config.method_specs():
        units += _method_units(config, m, len(items))
    control_units, drawn = _unrelated_units(config, items)
    units += control_units
    return Plan(config, items, global_sets, units, _control_sets(config, control_units, drawn))


def _protocol_units(config: StudyConfig, label: str, n: int) -> list[UnitPlan]:
    proto = config.protocol
    if proto.kind == "single":
        return [UnitPlan(label, f"edit-{i:04d}", i, (i,)) for i in range(n)]
    if proto.kind == "batch":
        size = proto.batch_size or n
        return [UnitPlan(label, f"batch-{b:04d}", b, tuple(range(start, min(n, start + size))))
                for b, start in enumerate(range(0, n, size))]
    size = proto.batch_size or 1  # sequential: edits applied per step
    starts = list(range(0, n, size))
    out = []
    for b, start in enumerate(starts):
        step, last = b + 1, b + 1 == len(starts)
        ev = proto.eval_when == "each" or last or (proto.eval_when == "every_k" and step % proto.k == 0)
        general = proto.general_every is None or last or step % proto.general_every == 0
        out.append(UnitPlan(label, f"step-{step:04d}", step, tuple(range(start, min(n, start + size))), evaluate=ev,
                            general=general))
    return out


def _method_units(config: StudyConfig, m: MethodSpec, n: int) -> list[UnitPlan]:
    """A method's units; a placebo has ``draws`` units per unit of its protocol (``-dNN``)."""
    units = _protocol_units(config, m.name, n)
    if m.match is None:
        return units
    if config.protocol.kind == "sequential":  # one chain (draws == 1, checked by the config)
        return [UnitPlan(u.method, u.unit, u.step, u.edits, u.evaluate, draw=0, of_unit=u.unit) for u in units]
    return [UnitPlan(u.method, f"{u.unit}-d{d:02d}", u.step, u.edits, draw=d, of_unit=u.unit)
            for u in units for d in range(m.draws)]


def _grid_operands(config: StudyConfig) -> range:
    """The operands of unrelated arithmetic edits: those of the study's arithmetic grid (``n`` of
    its first ``arithmetic`` suite, so each unrelated edit's own neighbourhood lies on the grid it
    is measured on), else 0..20."""
    for spec in config.probes:
        if spec.suite == "arithmetic":
            n = spec.args.get("n")
            return range(0, int(n) + 1) if isinstance(n, int) and n >= 1 else ARITH_OPERANDS
    return ARITH_OPERANDS


def _unrelated_units(config: StudyConfig, items: list[EditItem]) -> tuple[list[UnitPlan], dict[str, UnrelatedEdit]]:
    """Units of the unrelated-edit controls (single protocol): per control method, edit and
    unrelated edit ``-uNN``; the unrelated edits are drawn once per study edit (seeded), so
    every method is controlled by the same edits. Also returns each control set's unrelated edit."""
    specs = config.control_specs()
    if not specs:
        return [], {}

    c = config.controls
    exclude = {r.prompt for it in items for r in it.requests}
    operands = _grid_operands(config)
    drawn: dict[str, list[list[UnrelatedEdit]]] = {}
    for kind in ("unrelated", "unrelated_other"):
        k = getattr(c, kind)
        if k == 0:
            continue
        drawn[kind] = []
        for it in items:
            try:
                drawn[kind].append(unrelated_edits(it.requests[0], k, other_kind=kind == "unrelated_other",
                                                   seed=config.seed, exclude=exclude, source=c.source,
                                                   operands=operands))
            except (ValueError, FileNotFoundError, OSError) as e:
                raise ConfigError(f"controls.{kind} for edit {it.label}: {e}") from None
    units, by_set = [], {}
    for kind, spec in specs:
        tag = "u" if kind == "unrelated" else "o"
        for it, edits in zip(items, drawn[kind]):
            for j, u in enumerate(edits):
                name = f"{CONTROL_SET}#e{it.index}-{tag}{j:02d}"
                by_set[name] = u
                units.append(UnitPlan(spec.name, f"edit-{it.index:04d}-u{j:02d}", it.index, (it.index,),
                                      requests=(u.request,), of_unit=f"edit-{it.index:04d}", control_set=name))
    return units, by_set


#: the probe set of an unrelated edit's own prompt, and its category (an efficacy category of its own:
#: never pooled into locality, never mixed with the study edit's target)
CONTROL_SET = "control"
CONTROL_TARGET = "control-target"
#: an unrelated edit's own neighbourhood is stored under ``control-<category>`` (``control-near``)
CONTROL_OWN_PREFIX = "control-"


def own_category(category: str) -> str:
    """The category an unrelated edit's own probe of ``category`` is stored under."""
    return CONTROL_OWN_PREFIX + category


def _own_probes(config: StudyConfig, u: UnrelatedEdit) -> list[Probe]:
    """An unrelated edit's own neighbourhood (its target aside, which :data:`CONTROL_TARGET` holds):
    its dataset record's probes, or the study's per-edit suites built around it (a suite that does
    not take this kind of edit, e.g. the arithmetic grid for a fact, is skipped)."""
    if u.probes is not None:
        src = list(u.probes)
    else:
        src = []
        for spec in config.probes:
            if not lookup_suite(spec.suite).needs_edit:
                continue
            try:
                ps = get_suite(spec.suite, edit=u.request, **spec.args)
            except (TypeError, ValueError):
                continue
            src += list(with_answer_rule(ps, spec.answer_rule))
    return [replace(p, category=own_category(p.category)) for p in src if p.category != "target"]


def _control_sets(config: StudyConfig, units: list[UnitPlan], drawn: dict[str, UnrelatedEdit]
                  ) -> dict[str, tuple[int, ProbeSet]]:
    """Each unrelated edit's own probe set (shared by every control method of that kind): its
    target probe, then (``controls.own_probes``, default on) its own neighbourhood."""
    own = config.controls is not None and config.controls.measures_own
    out: dict[str, tuple[int, ProbeSet]] = {}
    for u in units:
        if u.control_set is None or u.control_set in out or not u.requests:
            continue
        r = u.requests[0]
        meta = {"control": True, **({"target_true": r.target_true} if r.target_true else {}),
                **({"aliases": number_aliases(r.target_new)} if number_aliases(r.target_new) else {})}
        probe = Probe(r.prompt, r.target_new, CONTROL_TARGET, meta=meta, sep=r.sep if r.sep_explicit else None)
        extra = _own_probes(config, drawn[u.control_set]) if own else []
        out[u.control_set] = (u.step, ProbeSet([probe, *extra], name=CONTROL_SET))
    return out


def check_mined_provenance(metas: list[dict[str, Any]], fingerprint: str) -> list[str]:
    """Warnings for edits mined on another model (their ``mined.model_fingerprint`` differs)."""
    seen = {m["mined"].get("model_fingerprint") for m in metas if isinstance(m.get("mined"), dict)}
    return [f"these edits were mined on a model with fingerprint {fp}, but the study runs a model with fingerprint "
            f"{fingerprint}: the hard cases of one model need not be hard for another" for fp in sorted(seen - {fingerprint, None})]


__all__ = ["CONTROL_OWN_PREFIX", "CONTROL_SET", "CONTROL_TARGET", "EditItem", "Plan", "UnitPlan", "build_plan",
           "check_mined_provenance", "own_category"]
