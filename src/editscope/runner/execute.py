"""Run a study plan into a run folder: protocols, the collapse guard, resume.

Each unit (see :mod:`editscope.runner.plan`) is computed and then written in one transaction, so
Ctrl-C or kill -9 loses at most the unit in flight. On ``resume`` the stored units are skipped;
a sequential method's accepted edits are re-applied first (same seeds) and the model's
fingerprint is checked against the stored one, so the continued run starts from exactly the state
it stopped in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..evaluation import evaluate
from ..methods import EditFailed, apply_edit, prepare_edits
from ..methods.base import METHODS, EditMethod, get_method
from ..interventions import Intervention, install, installed, remove_all
from ..methods.handle import active_edits
from ..metrics.perplexity import is_collapsed, perplexity
from ..metrics.weight_change import anatomy_scalars
from ..models.model import Model, StateWatch, tensor_digests
from .config import MethodSpec, StudyConfig
from .plan import Plan, UnitPlan, build_plan
from ..paths import file_in_the_way
from ..progress import working
from .store import FILENAME, ResultsStore, StoreError, now_iso
from ..errors import InputError

log = logging.getLogger(__name__)


class RunFolderError(InputError, RuntimeError):
    """The output folder holds something this run must not overwrite."""


def load_study_model(config: StudyConfig) -> Model:
    """The config's model: a name/path/hub id (:func:`editscope.load_model`) or ``tiny:<type>``
    (a random tiny model, for tests and examples that must run in seconds)."""
    spec = config.model
    if spec.name.startswith("tiny:"):
        from ..models.tiny import tiny_model

        return tiny_model(spec.name.split(":", 1)[1], seed=config.seed, num_hidden_layers=4)
    from ..models import load_model

    return load_model(spec.name, dtype=spec.dtype, device=spec.device, revision=spec.revision,
                      trust_remote_code=spec.trust_remote_code)


def unit_seed(seed: int, method: str, unit: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{method}/{unit}".encode()).digest()[:4], "little")


def extends(stored: dict[str, Any], config: StudyConfig) -> bool:
    """``config`` is the stored study grown in place, everything else equal: methods appended at
    the end (a hyperparameter search grown by new grid points, more methods), and/or unrelated-edit
    ``controls:`` added to a study that had none. Either only adds units, so ``--resume`` may
    continue it in place; reordered, removed or changed methods or changed controls may not."""
    new = config.model_dump(mode="json")
    old_methods, new_methods = stored.get("methods", []), new["methods"]
    if not old_methods or new_methods[:len(old_methods)] != old_methods:
        return False
    controls_added = "controls" not in stored and "controls" in new
    if len(new_methods) == len(old_methods) and not controls_added:
        return False
    if not controls_added and stored.get("controls") != new.get("controls"):
        return False
    rest = lambda d: {k: v for k, v in d.items() if k not in ("methods", "criterion", "controls")}  # noqa: E731
    return rest(stored) == rest(new)


#: what a run folder may hold besides its store: editscope's own outputs
#: single protocol: the units whose shared computation (ROME/MEMIT/AlphaEdit's target residuals) is
#: batched together on the base weights (es.prepare_edits) before they are applied one by one
PREPARE_CHUNK = 16

RUN_FOLDER_FILES = ("study.json", "report.md", "report.html", "latex", "figures")


def check_run_folder(out: str | Path) -> Path:
    """Refuse, before any work, an ``--out`` that is a file, lies under a file, or is a folder
    holding files that are not an editscope run's (a store is checked when it is opened)."""
    out = Path(out)
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise RunFolderError(f"--out {out}: {'it' if blocker == out else blocker} is a file, not a folder; give a "
                             "new or empty folder, or the folder of the run to --resume")
    if out.is_dir() and not (out / FILENAME).exists():
        foreign = sorted(e.name for e in out.iterdir()
                         if e.name not in RUN_FOLDER_FILES and not e.name.startswith(FILENAME))
        if foreign:
            raise RunFolderError(f"--out {out}: holds other files ({', '.join(foreign[:3])}"
                                 f"{', ...' if len(foreign) > 3 else ''}) and no editscope run; give a new or empty "
                                 "folder (editscope never writes into a folder that is not a run's)")
    return out


def open_run(out: str | Path, config: StudyConfig, *, resume: bool = False, force: bool = False) -> ResultsStore:
    """Create or reopen the store in ``out``. Refuses a folder holding another study's run (unless
    ``force``, which moves the old file aside, never deletes it) or this study's run without
    ``resume``. With ``resume``, a study whose only change is methods appended to its list or
    controls added is extended in place (see :func:`extends`)."""
    out = check_run_folder(out)
    path = out / FILENAME
    if path.exists():
        try:
            store = ResultsStore(path)
        except StoreError:
            if not force:
                raise
            store = None
        h = store.get_meta("config_hash") if store else None
        same = h == config.config_hash()
        if store is not None and same and resume:
            # report-only settings (the criterion) may change without a new run
            store.set_meta(config=config.model_dump(mode="json"))
            return store
        if store is not None and resume and extends(store.get_meta("config") or {}, config):
            added = len(config.methods) - len((store.get_meta("config") or {}).get("methods", []))
            log.warning("%s: extending the stored study with %d appended method(s)%s; done units are kept", out,
                        added, " and unrelated-edit controls" if "controls" not in (store.get_meta("config") or {})
                        and config.controls is not None else "")
            store.set_meta(config_hash=config.config_hash(), config=config.model_dump(mode="json"),
                           extended=now_iso())
            (out / "study.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
            return store
        if store is not None:
            store.close()
        if not force:
            if same:
                raise RunFolderError(f"{out} already holds a run of this study; pass --resume to continue it or "
                                     "--force to start over (the old results are kept as a backup)")
            raise RunFolderError(f"{out} holds a run of another study (config hash {h}, this one "
                                 f"{config.config_hash()}); pick another --out, or --force to start over "
                                 "(the old results are kept as a backup)")
        backup = path.with_name(f"{FILENAME}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        shutil.move(path, backup)
        for extra in ("-wal", "-shm"):
            side = Path(str(path) + extra)
            if side.exists():
                shutil.move(side, Path(str(backup) + extra))
    elif resume and out.exists() and any(out.iterdir()):
        raise RunFolderError(f"{out} has no {FILENAME} to resume; run without --resume")
    out.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(path, create=True)
    import transformers

    from .. import __version__

    store.set_meta(config_hash=config.config_hash(), config=config.model_dump(mode="json"), name=config.name,
                   editscope_version=__version__, torch_version=torch.__version__,
                   transformers_version=transformers.__version__, python=platform.python_version(),
                   seed=config.seed, created=now_iso(), status="running")
    (out / "study.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    return store


class Runner:
    """Executes a :class:`Plan` into a :class:`ResultsStore` (one model, methods one after another)."""

    def __init__(self, plan: Plan, store: ResultsStore, model: Model,
                 on_unit: Callable[[UnitPlan, dict[str, Any]], None] | None = None):
        self.plan, self.store, self.model = plan, store, model
        self.config = plan.config
        self.on_unit = on_unit or (lambda u, info: None)
        self.base_fp = model.base_fingerprint
        self.base_guard_ppl: float | None = None
        self.keep_hidden: int | None = None  # see shared_first_block
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
        digests = digests if digests is not None else tensor_digests(self.model.hf)
        out = {}
        keep = self.keep_hidden if unit.method == "base" else None
        for name, (edit_index, ps) in sets.items():
            res = evaluate(self.model, ps, digests=digests, keep_hidden=keep)
            out[name] = [{**r, "edit_index": edit_index} for r in res.rows]
        return out

    def _scalars(self) -> dict[str, tuple[float | None, dict[str, Any]]]:
        out: dict[str, tuple[float | None, dict[str, Any]]] = {}
        if self.config.perplexity is not None:
            spec = self.config.perplexity
            r = perplexity(self.model, spec.corpus, limit=spec.limit)
            out[f"ppl:{spec.corpus}"] = (r.ppl, {"tokens": r.n_tokens, "documents": r.n_documents})
        for d in self.config.downstream:
            from ..metrics.downstream import run_task

            r = run_task(self.model, d.task, limit=d.limit, seed=self.config.seed, num_fewshot=d.num_fewshot)
            for k, v in r.metrics.items():
                out[f"{d.task}:{k}"] = (float(v), {"n": r.n, **{kk: vv for kk, vv in r.summary().items()
                                                                  if kk.startswith(k + "_")}})
        return out

    def _guard_ppl(self) -> float:
        return perplexity(self.model, self.config.protocol.guard_corpus).ppl

    # ---- protocol steps
    def _hparams(self, method: MethodSpec, unit: UnitPlan) -> dict[str, Any]:
        """The unit's hyperparameters; a placebo gets its matched method's and the seed that
        method's own unit runs under, so that the delta it matches is that unit's delta."""
        if method.match is None:
            return dict(method.hparams)
        matched = next(m for m in self.config.method_specs() if m.name == method.match)
        return {**method.hparams, "match": matched.method, "match_hparams": matched.hparams,
                "match_seed": unit_seed(self.config.seed, matched.name, unit.of_unit or unit.unit),
                "draw": unit.draw or 0}

    def _requests(self, unit: UnitPlan) -> list:
        """What a unit applies: its own requests (a control's) or those of the study edits it covers."""
        return list(unit.requests) if unit.requests else [r for i in unit.edits for r in self.plan.edits[i].requests]

    def _apply(self, method: MethodSpec, unit: UnitPlan, events: list) -> tuple[list, float, str | None]:
        reqs = self._requests(unit)
        torch.manual_seed(unit_seed(self.config.seed, method.name, unit.unit))
        hparams = self._hparams(method, unit)
        t = time.perf_counter()
        handles = []
        try:
            m = METHODS[type(get_method(method.method)).name]
            if m.one_at_a_time and len(reqs) > 1:
                for r in reqs:
                    handles.append(apply_edit(self.model, [r], method.method, **hparams))
            else:
                handles.append(apply_edit(self.model, reqs, method.method, **hparams))
            failure = None
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
        the tensors this step touched from the base weights. Nothing for interventions."""
        if not handles or any(h.kind != "weights" for h in handles):
            return {}
        before: dict[str, torch.Tensor] = {}
        delta: dict[str, torch.Tensor] = {}
        for h in handles:
            was = h.weights_before()
            for n, d in h.delta().items():
                before.setdefault(n, was[n])
                delta[n] = delta[n] + d if n in delta else d
        out = anatomy_scalars(before, delta)
        if base is not None and delta:
            now = dict(self.model.hf.named_parameters())
            per = {n: float((now[n].detach() - base[n]).double().norm()) for n in delta if n in base}
            out["cumulative:fro"] = (sum(v ** 2 for v in per.values()) ** 0.5, per)
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

    def _record(self, method: str, unit: UnitPlan, status: str, *, seconds_edit=None, eval_=True,
                info=None, events=(), extra_scalars=None, digests: dict[str, str] | None = None) -> None:
        t = time.perf_counter()
        if digests is None:
            digests = tensor_digests(self.model.hf)  # one hash of the weights serves every probe set
        rows = self._evaluate(unit, digests) if eval_ else {}
        scalars = self._scalars() if eval_ else {}
        scalars.update(extra_scalars or {})
        fp = self.model.state_key(digests)
        self.store.add_unit(method, unit.unit, unit.step, unit.edits, status, seconds_edit=seconds_edit,
                            seconds_eval=time.perf_counter() - t, fingerprint=fp, info=info or {},
                            rows=rows, scalars=scalars, events=events)
        shown = {k: v[0] for k, v in scalars.items()}
        self.on_unit(unit, {"status": status, "scalars": shown})

    def run_base(self, done: set) -> None:
        unit = self.plan.units_of("base")[0]
        extra = {}
        if self.config.protocol.kind == "sequential" and self.config.protocol.guard != "off":
            self.base_guard_ppl = self._guard_ppl()
            extra["guard_ppl"] = (self.base_guard_ppl, {"corpus": self.config.protocol.guard_corpus})
        if ("base", "base") in done:
            self._evaluate(unit)  # base outputs for every probe set (from the disk cache when there)
            self.on_unit(unit, {"status": "done", "resumed": True})
            return
        self._record("base", unit, "done", extra_scalars=extra)

    def run_method(self, method: MethodSpec, done: set) -> None:
        units = self.plan.units_of(method.name)
        if self.config.protocol.kind == "sequential":
            self._run_sequential(method, units, done)
            return
        pending = [u for u in units if (method.name, u.unit) not in done]
        for unit in units:
            if (method.name, unit.unit) in done:
                self.on_unit(unit, {"status": "done", "resumed": True})
                continue
            if pending and unit is pending[0]:
                self._prepare(method, pending[:PREPARE_CHUNK])
                del pending[:PREPARE_CHUNK]
            events: list = []
            handles, secs, failure = self._apply(method, unit, events)
            try:
                self._record(method.name, unit, "failed" if failure else "done", seconds_edit=secs,
                             info={**self._info(handles), **({"error": failure} if failure else {})}, events=events,
                             extra_scalars=self._anatomy(handles), digests=self._digests_with(handles))
            finally:
                for h in reversed(handles):
                    h.undo()
            if not self.base_watch.holds(self.model):
                raise RuntimeError(f"{method.name}: undo did not restore the base model after {unit.unit}")

    def _run_sequential(self, method: MethodSpec, units: list[UnitPlan], done: set) -> None:
        proto = self.config.protocol
        stored = {u.unit: u for u in self.store.units(method.name)}
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
                            self.on_unit(u, {"status": "stopped", "resumed": True})
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
                    self.on_unit(unit, {"status": prev.status, "resumed": True})
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
                self._record(method.name, unit, status, seconds_edit=secs, eval_=unit.evaluate or status == "stopped",
                             info={**self._info(handles), **({"error": failure} if failure else {})},
                             events=events, extra_scalars=extra, digests=self.digests)
                if status == "stopped":
                    for u in units[units.index(unit) + 1:]:
                        self.on_unit(u, {"status": "stopped"})
                    return
        finally:
            _restore_all(self.model, saved, saved_ivs)
            self.digests = dict(self.base_watch.digests)
        if not self.base_watch.holds(self.model):
            raise RuntimeError(f"{method.name}: the sequential chain did not restore the base model")


def first_block(model: Model, spec: MethodSpec) -> int:
    """Lowest block an edit by ``spec`` can change (0 when it may change anything: input
    interventions, placebos, hyperparameters that do not resolve)."""
    from ..methods.base import get_method

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
    from ..methods.base import get_method

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
    model.meta.get("edit_stack", []).clear()


def run_study(config: StudyConfig, out: str | Path, *, resume: bool = False, force: bool = False,
              model: Model | None = None, progress: bool = True) -> Path:
    """Run ``config`` into the folder ``out`` (``results.sqlite``, ``study.json``); returns ``out``.

    ``resume`` continues a stopped run of the same study; ``force`` starts over in a folder that
    holds another run (its results file is kept as a ``.bak``). ``model``: an already loaded model
    (must be the config's; the base weights are checked against a resumed run's).
    """
    plan = build_plan(config)
    store = open_run(out, config, resume=resume, force=force)
    try:
        if model is None:
            with working(f"loading {config.model.name}", progress):
                model = load_study_model(config)
        fp = store.get_meta("model_fingerprint")
        if fp is not None and fp != model.base_fingerprint:
            raise RunFolderError(f"{out}: the stored run used base weights {fp}, this model is "
                                 f"{model.base_fingerprint}; resume with the same model or use --force")
        store.set_meta(model_fingerprint=model.base_fingerprint, model_name=model.name, status="running")
        from ..mining import check_mined_provenance

        for warning in check_mined_provenance([e.meta for e in plan.edits], model.base_fingerprint):
            logging.getLogger(__name__).warning("%s", warning)
            print(f"warning: {warning}", file=sys.stderr)
        done = store.done()
        pending = [m for m in plan.methods if any((m.name, u.unit) not in done for u in plan.units_of(m.name))]
        with working("key statistics for the locate-then-edit methods (cached after the first run)", progress):
            _prefetch_statistics(model, pending, config)
        with _progress(plan, progress) as on_unit:
            runner = Runner(plan, store, model, on_unit)
            runner.keep_hidden = shared_first_block(model, pending)
            runner.run_base(done)
            for m in plan.methods:
                runner.run_method(m, done)
        model.clear_caches()
        store.set_meta(status="complete", finished=now_iso())
    finally:
        store.close()
    return Path(out)


def _prefetch_statistics(model: Model, methods: list[MethodSpec], config: StudyConfig | None = None) -> None:
    """Key statistics of every locate-then-edit method still to run, one corpus pass per settings
    (ROME at layer 5 and MEMIT at 1-5 would otherwise each pass over the corpus). Bad
    hyperparameters are left for the method's own unit to report."""
    from ..covariance import prefetch_key_statistics
    from ..methods.base import get_method

    requests = []
    by_label = {m.name: m for m in (config.method_specs() if config is not None else methods)}
    for spec in methods:
        if spec.match is not None:  # a placebo reads what its matched method reads
            spec = by_label.get(spec.match, spec)
        try:
            m = get_method(spec.method)
            requests.append(m.statistics_request(model, m.resolve_hparams(model.arch, model.n_layers, spec.hparams)))
        except Exception as e:  # noqa: BLE001 - reported by the unit that uses these hyperparameters
            log.debug("no statistics prefetch for %s: %s", spec.name, e)
    prefetch_key_statistics(model, requests)


class _progress:
    """A rich progress bar: units done, ETA, the current perplexity."""

    def __init__(self, plan: Plan, enabled: bool):
        self.plan, self.enabled = plan, enabled

    def __enter__(self):
        if not self.enabled:
            return lambda u, info: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[status]}"))
        self.bar.__enter__()
        self.task = self.bar.add_task(self.plan.config.name, total=len(self.plan.units), status="")

        def on_unit(unit: UnitPlan, info: dict[str, Any]) -> None:
            ppl = next((f"ppl {v:.1f}" for k, v in info.get("scalars", {}).items()
                        if k.startswith(("ppl:", "guard_ppl")) and v is not None), "")
            self.bar.update(self.task, advance=1, description=f"{unit.method} {unit.unit}",
                            status=" ".join(x for x in (info.get("status", ""), ppl) if x))

        return on_unit

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False


__all__ = ["RunFolderError", "Runner", "load_study_model", "open_run", "run_study", "unit_seed"]
