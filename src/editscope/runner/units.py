"""Computing units of work: a :class:`Runner` holds one loaded model and turns units of a plan
into :class:`~editscope.runner.unit_results.UnitResult` values, without touching the store. The same
code runs in the driver (``--backend local``) and in each Ray worker (``--backend ray``): a unit's
result depends only on (config, unit, base weights), through per-unit seeds.

Protocols: ``single``/``batch`` units start from the base weights and are undone after; a
``sequential`` chain keeps its edits, replays the stored ones on resume (checking the stored
fingerprint) and stops or skips at the collapse guard.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..peak_memory import peak_rss_mb, reset_peak

from ..errors import InputError
from ..evaluation import StateMemo, evaluate
from ..interventions import Intervention, install, installed, remove_all
from ..methods import EditFailed, apply_edit, prepare_edits
from ..methods.base import EditMethod, get_method, METHODS
from ..methods.handle import active_edits, parameters
from ..metrics.fluency import fluency
from ..metrics.perplexity import is_collapsed, perplexity
from ..metrics.weight_change import anatomy_scalars
from ..models.model import Model
from ..models.state import StateWatch, tensor_digests
from .config import MethodSpec
from .plan import Plan, UnitPlan
from .unit_results import Scalars, Skipped, Stored, UnitResult
from ..metrics.downstream import run_task

log = logging.getLogger(__name__)

#: single protocol: the units whose shared computation (ROME/MEMIT/AlphaEdit's target residuals) is
#: batched together on the base weights (es.prepare_edits) before they are applied one by one
PREPARE_CHUNK = 16

#: what the runner yields per unit: a result to store, or a unit with nothing to store
Event = UnitResult | Skipped


def unit_seed(seed: int, method: str, unit: str) -> int:
    """The torch seed a unit's edit runs under: a function of the study seed, method label and unit
    name only, so the unit gives the same result in any process and any order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{method}/{unit}".encode()).digest()[:4], "little")


def prepare_chunks(units: list[UnitPlan], stored: Stored) -> list[list[UnitPlan]]:
    """The pending units of one single-protocol method in the chunks whose batched part is shared
    (every backend cuts them the same way, so each unit gets the same result)."""
    pending = [u for u in units if (u.method, u.unit) not in stored.done]
    return [pending[i:i + PREPARE_CHUNK] for i in range(0, len(pending), PREPARE_CHUNK)]


class Runner:
    """Computes the units of a :class:`Plan` on ``model`` (one model, one unit at a time).

    ``stored``: what the run folder already holds (skipped, or replayed by sequential chains).
    ``keep_hidden``: see :func:`shared_first_block`.
    """

    def __init__(self, plan: Plan, model: Model, stored: Stored | None = None, keep_hidden: int | None = None):
        self.plan, self.model = plan, model
        self.config = plan.config
        self.stored = stored or Stored()
        self.keep_hidden = keep_hidden
        # base outputs per probe, shared by every evaluation of the run (re-measured stale probes,
        # then the whole sets they belong to, compute each probe on the base once)
        self._base_memo: dict[str, dict[tuple, tuple]] = {}
        self.base_guard_ppl: float | None = None
        # The weights' digests are kept current from the edit handles (each knows the digests of the
        # tensors it wrote) instead of re-hashing the model per unit; a watch checks each undo.
        self.base_watch = StateWatch.take(model)
        self.digests = dict(self.base_watch.digests)
        by_storage: dict[int, list[str]] = {}
        for name, t in model.hf.state_dict(keep_vars=True).items():
            by_storage.setdefault(t.data_ptr(), []).append(name)
        self._aliases = {n: names for names in by_storage.values() for n in names}  # tied weights

    # ---- measurements
    def _evaluate(self, unit: UnitPlan, digests: dict[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
        sets = self.plan.all_sets() if unit.method == "base" else self.plan.eval_sets(unit)
        keep = self.keep_hidden if unit.method == "base" else None
        return self.evaluate_sets(sets, digests, keep_hidden=keep)

    def evaluate_sets(self, sets: dict[str, tuple[int | None, Any]], digests: dict[str, str] | None = None, *,
                      keep_hidden: int | None = None, watches: dict[str, str | None] | None = None
                      ) -> dict[str, list[dict[str, Any]]]:
        """The current model state on probe sets (name -> (edit index, ProbeSet)): name -> rows.
        ``watches``: a set's watched target when it is part of a larger set (default: its own)."""
        digests = digests if digests is not None else tensor_digests(self.model.hf)
        # a probe held by several sets is scored once per state; its base outputs once per run
        out, memo = {}, StateMemo(base=self._base_memo)
        for name, (edit_index, ps) in sets.items():
            watch = (watches or {}).get(name)
            res = evaluate(self.model, ps, digests=digests, keep_hidden=keep_hidden, watch=watch, memo=memo)
            out[name] = [{**r, "edit_index": edit_index} for r in res.rows]
        return out

    @contextmanager
    def applied(self, method: MethodSpec, unit: UnitPlan) -> Iterator[tuple[str, dict[str, str], str | None]]:
        """The model with a single or batch unit's edit applied as the unit applies it (same seed and
        hyperparameters), undone on exit: yields (the state's key, the weights' digests, the failure
        message of an edit that was rolled back, or None)."""
        handles, _, failure = self._apply(method, unit, [])
        try:
            digests = self._digests_with(handles)
            yield self.model.state_key(digests), digests, failure
        finally:
            for h in reversed(handles):
                h.undo()

    def _scalars(self, unit: UnitPlan) -> Scalars:
        out: Scalars = {}
        if self.config.fluency is not None:
            spec = self.config.fluency
            reqs = self._requests(unit) or [r for e in self.plan.edits for r in e.requests]
            prompts = list(dict.fromkeys(r.prompt for r in reqs))[:spec.limit]
            iv, _ = fluency(self.model, prompts, spec.max_new_tokens)
            out["fluency:ngram_entropy"] = (iv.value, {"prompts": len(prompts), "low": iv.low, "high": iv.high,
                                                       "max_new_tokens": spec.max_new_tokens})
        if self.config.perplexity is not None:
            spec = self.config.perplexity
            r = perplexity(self.model, spec.corpus, limit=spec.limit)
            out[f"ppl:{spec.corpus}"] = (r.ppl, {"tokens": r.n_tokens, "documents": r.n_documents})
        for d in self.config.downstream:
            r = run_task(self.model, d.task, limit=d.limit, seed=self.config.seed, num_fewshot=d.num_fewshot)
            for k, v in r.metrics.items():
                out[f"{d.task}:{k}"] = (float(v), {"n": r.n, **{kk: vv for kk, vv in r.summary().items()
                                                                  if kk.startswith(k + "_")}})
        return out

    def _guard_ppl(self) -> float:
        return perplexity(self.model, self.config.protocol.guard_corpus).ppl

    def _measure(self, unit: UnitPlan, status: str, *, seconds_edit: float | None = None, eval_: bool = True,
                 info: dict[str, Any] | None = None, events: list | None = None, extra_scalars: Scalars | None = None,
                 digests: dict[str, str] | None = None) -> UnitResult:
        t = time.perf_counter()
        if digests is None:
            digests = tensor_digests(self.model.hf)  # one hash of the weights serves every probe set
        rows = self._evaluate(unit, digests) if eval_ else {}
        scalars = self._scalars(unit) if eval_ and unit.general else {}
        scalars.update(extra_scalars or {})
        return UnitResult(unit, status, seconds_edit, time.perf_counter() - t, self.model.state_key(digests),
                          info=info or {}, rows=rows, scalars=scalars, events=list(events or []))

    # ---- protocol steps
    def _hparams(self, method: MethodSpec, unit: UnitPlan) -> dict[str, Any]:
        """The unit's hyperparameters; a placebo gets its matched method's and the seed that
        method's own unit runs under, so that the delta it matches is that unit's delta."""
        if method.match is None:
            return dict(method.hparams)
        matched = next(m for m in self.config.method_specs() if m.name == method.match)
        out = {**method.hparams, "match": matched.method, "match_hparams": matched.hparams,
               "match_seed": unit_seed(self.config.seed, matched.name, unit.of_unit or unit.unit),
               "draw": unit.draw or 0}
        if matched.strength is not None:  # the delta its matched unit applied: scaled to the level
            out["match_strength"] = {"strength": matched.strength.p, "strength_tolerance": matched.strength.tolerance}
        return out

    def _requests(self, unit: UnitPlan) -> list:
        """What a unit applies: its own requests (a control's) or those of the study edits it covers."""
        return list(unit.requests) if unit.requests else [r for i in unit.edits for r in self.plan.edits[i].requests]

    def _apply(self, method: MethodSpec, unit: UnitPlan, events: list) -> tuple[list, float, str | None]:
        reqs = self._requests(unit)
        torch.manual_seed(unit_seed(self.config.seed, method.name, unit.unit))
        hparams = self._hparams(method, unit)
        measured = reset_peak()
        cuda = self.model.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.model.device)
        t = time.perf_counter()
        handles = []
        try:
            m = METHODS[type(get_method(method.method)).name]
            st = {} if method.strength is None else {"strength": method.strength.p,
                                                     "strength_tolerance": method.strength.tolerance}
            if m.one_at_a_time and len(reqs) > 1:
                for r in reqs:
                    handles.append(apply_edit(self.model, [r], method.method, **st, **hparams))
            else:
                handles.append(apply_edit(self.model, reqs, method.method, **st, **hparams))
            failure = None
            if measured and handles:  # the edit's peak resident memory (the model included), MiB
                handles[0].info["peak_rss_mb"] = peak_rss_mb()
            if cuda and handles:  # and on the GPU, where the model lives then
                handles[0].info["peak_gpu_mb"] = torch.cuda.max_memory_allocated(self.model.device) / 2**20
        except EditFailed as e:
            for h in reversed(handles):
                h.undo()
            handles, failure = [], str(e)
            events.append(("edit_failed", {"error": failure, "edits": list(unit.edits)}))
        return handles, time.perf_counter() - t, failure

    def _prepare(self, method: MethodSpec, units: list[UnitPlan]) -> None:
        """Let the coming single-request units of a method with a batched part share it (see
        :func:`editscope.methods.prepare_edits`); each edit still equals what it gets alone. A
        failure here costs nothing: every edit then computes its own part (and reports its error)."""
        m = get_method(method.method)
        if type(m).prepare is EditMethod.prepare or method.match is not None or self.config.protocol.kind != "single":
            return
        reqs = [r for u in units for r in self._requests(u)]
        if len(reqs) < 2 or len(reqs) != len(units):
            return
        try:
            prepare_edits(self.model, reqs, method.method, **dict(method.hparams))
        except (EditFailed, InputError, ValueError) as e:
            logging.getLogger(__name__).info("%s: batched preparation skipped (%s)", method.name, e)

    def _anatomy(self, handles: list, base: dict[str, torch.Tensor] | None = None
                 ) -> dict[str, tuple[float | None, dict[str, Any]]]:
        """The unit's weight-change scalars (``delta:*``, :mod:`editscope.metrics.weight_change`) of
        its edits together; with ``base`` (sequential) also ``cumulative:fro``, the distance of
        the tensors this step touched from the base weights, and ``weight_norm:fro``, their norms
        now (per tensor, with the base's: norm growth tracks collapse). Nothing for interventions."""
        if not handles or any(h.kind != "weights" for h in handles):
            return {}
        # several stacked edits (a one-at-a-time method given a case's requests) may touch the same
        # tensors: the unit's change is the weights now minus what the first of them found
        before: dict[str, torch.Tensor] = {}
        for h in handles:
            for n, w in h.weights_before().items():
                before.setdefault(n, w)
        now = parameters(self.model, list(before))
        delta = {n: now[n].detach() - w for n, w in before.items()}
        out = anatomy_scalars(before, delta)
        if base is not None and delta:
            now = dict(self.model.hf.named_parameters())
            per = {n: float((now[n].detach() - base[n]).double().norm()) for n in delta if n in base}
            out["cumulative:fro"] = (sum(v ** 2 for v in per.values()) ** 0.5, per)
            norms = {n: float(now[n].detach().double().norm()) for n in delta if n in base}
            out["weight_norm:fro"] = (sum(v ** 2 for v in norms.values()) ** 0.5,
                                      {"now": norms, "base": {n: float(base[n].double().norm()) for n in norms}})
        return out

    def _digests_with(self, handles: list) -> dict[str, str]:
        """The current weights' digests: ``self.digests`` with what ``handles`` wrote on top."""
        out = dict(self.digests)
        for h in handles:
            for n, d in h.after_digests.items():
                for alias in self._aliases.get(n, [n]):
                    out[alias] = d
        return out

    def _info(self, handles: list) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for h in handles:
            for k, v in h.info.items():
                if isinstance(v, (int, float, str, bool)) or v is None:
                    info.setdefault(k, v)
        return info

    # ---- units
    def iter_base(self) -> Iterator[Event]:
        """The base unit (the base model on every probe set). Always evaluates, stored or not: it
        leaves the base outputs (and kept hidden states) that every later unit is compared with, and
        the guard's base perplexity."""
        unit = self.plan.units_of("base")[0]
        extra: Scalars = {}
        if self.config.protocol.kind == "sequential" and self.config.protocol.guard != "off":
            self.base_guard_ppl = self._guard_ppl()
            extra["guard_ppl"] = (self.base_guard_ppl, {"corpus": self.config.protocol.guard_corpus})
        if ("base", "base") in self.stored.done:
            pending = any((u.method, u.unit) not in self.stored.done for u in self.plan.units if u.method != "base")
            if pending:  # base outputs for every probe set (from the disk cache when there)
                self._evaluate(unit)
            yield Skipped(unit, "done", resumed=True)
            return
        yield self._measure(unit, "done", extra_scalars=extra)

    def iter_method(self, method: MethodSpec, units: list[UnitPlan] | None = None) -> Iterator[Event]:
        """``method``'s units (default: all of them; a sequential chain always runs whole), each
        as a result to store or a skipped unit. The consumer stores a result before asking for the
        next one: a single unit is undone only after that."""
        units = self.plan.units_of(method.name) if units is None else units
        if self.config.protocol.kind == "sequential":
            yield from self._iter_sequential(method, units)
            return
        chunks = {id(c[0]): c for c in prepare_chunks(units, self.stored)}
        for unit in units:
            if (method.name, unit.unit) in self.stored.done:
                yield Skipped(unit, "done", resumed=True)
                continue
            if id(unit) in chunks:
                self._prepare(method, chunks[id(unit)])
            events: list = []
            handles, secs, failure = self._apply(method, unit, events)
            try:
                yield self._measure(unit, "failed" if failure else "done", seconds_edit=secs,
                                    info={**self._info(handles), **({"error": failure} if failure else {})},
                                    events=events, extra_scalars=self._anatomy(handles),
                                    digests=self._digests_with(handles))
            finally:
                for h in reversed(handles):
                    h.undo()
            if not self.base_watch.holds(self.model):
                raise RuntimeError(f"{method.name}: undo did not restore the base model after {unit.unit}")

    def _iter_sequential(self, method: MethodSpec, units: list[UnitPlan]) -> Iterator[Event]:
        proto = self.config.protocol
        stored = {u.unit: u for u in self.stored.units.get(method.name, [])}
        # base values of the tensors the chain touches, copied on first touch (not the whole model)
        saved: dict[str, torch.Tensor] = {}
        saved_ivs = {site: iv.copy() for site, iv in installed(self.model).items()}

        def keep_base(handles: list) -> None:
            for h in handles:
                if h.kind == "weights":
                    for n, t in h.weights_before().items():
                        if n not in saved:
                            saved[n] = t.detach().clone()
        try:
            for unit in units:
                prev = stored.get(unit.unit)
                if prev is not None:  # resume: replay the accepted edit to reach the stored state
                    if prev.status == "stopped":
                        for u in units[units.index(unit):]:
                            yield Skipped(u, "stopped", resumed=True)
                        return
                    if prev.status == "done":
                        handles, _, failure = self._apply(method, unit, [])
                        keep_base(handles)
                        self.digests = self._digests_with(handles)
                        for h in handles:
                            h.release()
                        if failure or self.model.state_key(self.digests) != prev.fingerprint:
                            raise RuntimeError(
                                f"resume of {method.name}: re-applying {unit.unit} did not reproduce the stored "
                                "model state (non-deterministic method or changed code); start over with --force")
                    yield Skipped(unit, prev.status, resumed=True)
                    continue
                events: list = []
                handles, secs, failure = self._apply(method, unit, events)
                keep_base(handles)
                status, extra = ("failed" if failure else "done"), self._anatomy(handles, saved)
                check = proto.guard != "off" and (unit.step % proto.guard_every == 0 or unit.step == len(units))
                if check and not failure:
                    ppl = self._guard_ppl()
                    extra["guard_ppl"] = (ppl, {"corpus": proto.guard_corpus})
                    if is_collapsed(ppl, proto.threshold, self.base_guard_ppl if proto.ratio else None, proto.ratio):
                        detail = {"ppl": ppl, "base_ppl": self.base_guard_ppl, "threshold": proto.threshold,
                                  "ratio": proto.ratio, "action": proto.guard}
                        events.append(("collapse", detail))
                        if proto.guard == "skip":
                            for h in reversed(handles):
                                h.undo()
                            handles, status = [], "skipped"
                            extra.pop("cumulative:fro", None)  # the model is back where it was
                        else:
                            status = "stopped"
                self.digests = self._digests_with(handles)
                for h in handles:
                    h.release()
                yield self._measure(unit, status, seconds_edit=secs, eval_=unit.evaluate or status == "stopped",
                                    info={**self._info(handles), **({"error": failure} if failure else {})},
                                    events=events, extra_scalars=extra, digests=self.digests)
                if status == "stopped":
                    for u in units[units.index(unit) + 1:]:
                        yield Skipped(u, "stopped", resumed=False)
                    return
        finally:
            _restore_all(self.model, saved, saved_ivs)
            self.digests = dict(self.base_watch.digests)
        if not self.base_watch.holds(self.model):
            raise RuntimeError(f"{method.name}: the sequential chain did not restore the base model")


def first_block(model: Model, spec: MethodSpec) -> int:
    """Lowest block an edit by ``spec`` can change (0 when it may change anything: input
    interventions, placebos, hyperparameters that do not resolve)."""
    m = get_method(spec.method)
    if spec.match is not None or m.kind == "input":
        return 0
    try:
        hp = type(m).resolve_hparams(model.arch, model.n_layers, dict(spec.hparams))
        if m.kind == "module":
            return int(getattr(hp, "layer", 0))
        names = m.touched(model, hp)
    except Exception:  # the unit itself reports bad hyperparameters
        return 0
    return model.first_changed_layer(names) or 0 if names else 0


def shared_first_block(model: Model, methods: list[MethodSpec]) -> int | None:
    """The block whose input the base evaluation keeps, so that every edit that changes only blocks
    at or above it is evaluated from there (exactly the full pass): the lowest first block of the
    methods, or None when one of them may change block 0 (nothing to gain)."""
    # input interventions never resume (other token sequences) and the identity changes nothing
    blocks = [first_block(model, m) for m in methods
              if get_method(m.method).kind != "input" and get_method(m.method).name != "identity"]
    low = min(blocks, default=0)
    return low if 0 < low < model.n_layers else None


def _restore_all(model: Model, state: dict[str, torch.Tensor], ivs: dict[str, Intervention]) -> None:
    """Put the weights in ``state`` (the touched ones) and every intervention back, and drop the
    (released) edits from the model's edit stack."""
    with torch.no_grad():
        for k, v in model.hf.state_dict().items():
            if k in state:
                v.copy_(state[k])
    remove_all(model)
    for iv in ivs.values():
        install(model, iv)
    for h in reversed(active_edits(model)):
        if h.method in METHODS:
            METHODS[h.method]().on_undo(model, h)
        h.active = False
    model.state.edit_stack.clear()




__all__ = ["PREPARE_CHUNK", "Event", "Runner", "first_block", "prepare_chunks", "shared_first_block", "unit_seed"]
