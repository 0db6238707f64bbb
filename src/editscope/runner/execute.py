"""Run a study plan into a run folder: the folder's rules, the model check, the backends (``local``
here, ``ray`` in :mod:`editscope.runner.ray_backend`); the units themselves are computed by
:mod:`editscope.runner.units`.

Each unit (see :mod:`editscope.runner.plan`) is computed and then written in one transaction, so
Ctrl-C or kill -9 loses at most the unit in flight. On ``resume`` the stored units are skipped;
a sequential method's accepted edits are re-applied first (same seeds) and the model's
fingerprint is checked against the stored one, so the continued run starts from exactly the state
it stopped in.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import transformers

from ..errors import InputError
from ..models.derive import derived_summary
from ..models.model import Model
from ..paths import file_in_the_way
from ..progress import working
from .config import REPORT_ONLY, StudyConfig, without_unset_later_keys
from .plan import Plan, UnitPlan, build_plan, check_mined_provenance
from .prepare import load_study_model, study_runner
from .ray_backend import RayExecutor
from .unit_results import Stored, UnitResult
from .store import FILENAME, ResultsStore, StoreError, now_iso
from .reevaluate import StaleUnit, reevaluate_stale, stale_units
from ..version import __version__
from .units import Event
from ..data.fetch import used_files

log = logging.getLogger(__name__)


class RunFolderError(InputError, RuntimeError):
    """The output folder holds something this run must not overwrite."""


def _controls_grown(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """More unrelated edits drawn, nothing else changed: the draws are seeded and prefix-stable
    (the first ``k`` of ``n`` draws are the ``k`` drawn before), so growing only adds units."""
    if not old or not new:
        return False
    counts = ("unrelated", "unrelated_other")
    rest = lambda d: {k: v for k, v in d.items() if k not in counts}  # noqa: E731
    more = [new.get(k, 0) >= old.get(k, 0) for k in counts]
    return rest(old) == rest(new) and all(more) and any(new.get(k, 0) > old.get(k, 0) for k in counts)


def extends(stored: dict[str, Any], config: StudyConfig) -> bool:
    """``config`` is the stored study grown in place, everything else equal: methods appended at
    the end (a hyperparameter search grown by new grid points, more methods), unrelated-edit
    ``controls:`` added to a study that had none, and/or more unrelated edits drawn. Each only adds
    units, so ``--resume`` may continue it in place; reordered, removed or changed methods or
    otherwise changed controls may not."""
    new = without_unset_later_keys(config.model_dump(mode="json"))
    stored = without_unset_later_keys(json.loads(json.dumps(stored)))  # a copy, written by any version
    old_methods, new_methods = stored.get("methods", []), new["methods"]
    if not old_methods or new_methods[:len(old_methods)] != old_methods:
        return False
    controls_added = "controls" not in stored and "controls" in new
    grown = _controls_grown(stored.get("controls"), new.get("controls"))
    if len(new_methods) == len(old_methods) and not controls_added and not grown:
        return False
    if not controls_added and not grown and stored.get("controls") != new.get("controls"):
        return False
    rest = lambda d: {k: v for k, v in d.items() if k not in ("methods", "controls", *REPORT_ONLY)}  # noqa: E731
    return rest(stored) == rest(new)


#: what a run folder may hold besides its store: editscope's own outputs
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
    store.set_meta(config_hash=config.config_hash(), config=config.model_dump(mode="json"), name=config.name,
                   editscope_version=__version__, torch_version=torch.__version__,
                   transformers_version=transformers.__version__, python=platform.python_version(),
                   seed=config.seed, created=now_iso(), status="running")
    (out / "study.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    return store


BACKENDS = ("local", "ray")


class _Enough(Exception):
    """Raised by the delivery of the ``max_units``-th unit: the run stops there, resumable."""


def run_study(config: StudyConfig, out: str | Path, *, resume: bool = False, force: bool = False,
              model: Model | None = None, progress: bool = True, backend: str = "local",
              address: str | None = None, workers: int | None = None, max_units: int | None = None) -> Path:
    """Run ``config`` into the folder ``out`` (``results.sqlite``, ``study.json``); returns ``out``.

    ``resume`` continues a stopped run of the same study; ``force`` starts over in a folder that
    holds another run (its results file is kept as a ``.bak``). ``model``: an already loaded model
    (must be the config's; the base weights are checked against a resumed run's; local backend).
    ``backend``: ``local`` (this process) or ``ray`` (units and sequential chains on Ray workers,
    :mod:`editscope.runner.ray_backend`; ``address``: a running cluster, ``auto``, or None for a
    local one; ``workers``: how many, default one per CPU of the cluster). Either way this process
    alone writes the store, one transaction per unit. ``max_units``: stop after writing that many
    units (the base evaluation counts; local backend), leaving the run to ``resume``. The data files
    read (registry files with their source, a user's own files) are recorded with their SHA-256 in
    the store's ``data_files`` meta.
    """
    if max_units is not None and (max_units < 1 or backend != "local"):
        raise InputError(f"max_units={max_units}: give at least 1, with the local backend")
    if backend not in BACKENDS:
        raise InputError(f"backend {backend!r}: give one of {', '.join(BACKENDS)}")
    plan = build_plan(config)
    executor = None
    if backend == "ray":  # refused before the run folder is touched: the extra, the address
        executor = RayExecutor(address=address, workers=workers)
    store = open_run(out, config, resume=resume, force=force)
    try:
        stored = Stored.of(store)

        def admit(fingerprint: str, name: str) -> None:
            _admit_model(store, plan, out, fingerprint, name)

        written = 0
        finished = True
        with _progress(plan, progress) as on_unit:
            def deliver(ev: Event) -> None:
                nonlocal written
                if isinstance(ev, UnitResult):
                    ev.write(store)
                    written += 1
                on_unit(ev.unit, ev.progress_info())
                if max_units is not None and written >= max_units:
                    raise _Enough

            stale = stale_units(plan, store) if resume else []
            if executor is None:
                if model is None:
                    with working(f"loading {config.model.name}", progress):
                        model = load_study_model(config)
                admit(model.base_fingerprint, model.name)
                with _run_threads(store, config):
                    if stale:
                        _reevaluate(plan, store, model, stored, stale, progress)
                        stored = Stored.of(store)  # units that did not reproduce are computed again
                    try:
                        run_local(plan, stored, model, deliver, progress=progress)
                    except _Enough:
                        finished = False
            else:
                if stale:
                    raise InputError(f"{len(stale)} stored units were measured on other versions of the study's "
                                     "probes; resume once with --backend local to re-evaluate them, then continue "
                                     "with --backend ray")
                executor.run(plan, stored, deliver, admit=admit, current=lambda: Stored.of(store))
        store.set_meta(status="complete" if finished else "stopped", finished=now_iso())
    finally:
        store.set_meta(data_files={**(store.get_meta("data_files") or {}), **used_files()})
        store.close()
        if executor is not None:
            executor.close()
    return Path(out)


@contextmanager
def _run_threads(store: ResultsStore, config: StudyConfig) -> Iterator[None]:
    """Record the torch thread count a run starts with; a resumed sequential run computes at the
    recorded count. CPU float results depend on the thread count (reductions split differently),
    and resuming a chain replays its stored edits and checks the model's fingerprint after each, so
    a chain begun at 2 threads and resumed at 1 (say under ``OMP_NUM_THREADS=1``) would otherwise
    be refused as not reproducible."""
    now = torch.get_num_threads()
    recorded = store.get_meta("torch_threads")
    if recorded is None:
        store.set_meta(torch_threads=now)
    if recorded is None or int(recorded) == now or config.protocol.kind != "sequential":
        yield
        return
    print(f"note: this run was started at {recorded} torch threads; the resumed chains compute at {recorded} "
          f"(not {now}) so that replaying them reproduces the stored models exactly", file=sys.stderr)
    torch.set_num_threads(int(recorded))
    try:
        yield
    finally:
        torch.set_num_threads(now)


def _admit_model(store: ResultsStore, plan: Plan, out: str | Path, fingerprint: str, name: str) -> None:
    """Check the model's base weights against a resumed run's, record them, and warn about mined
    edits that came from another model."""
    fp = store.get_meta("model_fingerprint")
    if fp is not None and fp != fingerprint:
        raise RunFolderError(f"{out}: the stored run used base weights {fp}, this model is "
                             f"{fingerprint}; resume with the same model or use --force")
    store.set_meta(model_fingerprint=fingerprint, model_name=name, status="running")
    derived = derived_summary(name)
    if derived is not None:  # what the derived model is, kept with the numbers measured on it
        store.set_meta(derived_model=derived)
    for warning in check_mined_provenance([e.meta for e in plan.edits], fingerprint):
        log.warning("%s", warning)
        print(f"warning: {warning}", file=sys.stderr)


def _reevaluate(plan: Plan, store: ResultsStore, model: Model, stored: Stored, stale: list[StaleUnit],
                progress: bool) -> None:
    """Re-measure the stale units (:mod:`editscope.runner.reevaluate`) before the run continues."""
    names = list(dict.fromkeys(s.stored.method for s in stale))
    specs = [m for m in plan.config.all_methods() if m.name in names]
    print(f"note: {len(stale)} stored units were measured on other versions of the study's probes "
          f"({sum(s.n_probes for s in stale)} probes in all); re-evaluating them", file=sys.stderr)
    runner = study_runner(plan, stored, model, progress=progress, methods=specs)
    counts = reevaluate_stale(plan, store, runner, stale, progress=progress)
    store.set_meta(reevaluated=now_iso())
    print(f"note: re-evaluated {counts['units']} units ({counts['probes']} probes); {counts['redo']} units did not "
          "reproduce their stored state and are computed again", file=sys.stderr)


def run_local(plan: Plan, stored: Stored, model: Model, deliver: Callable[[Event], None], *,
              progress: bool = False) -> None:
    """The local backend: every unit in this process, in plan order."""
    runner = study_runner(plan, stored, model, progress=progress)
    for ev in runner.iter_base():
        deliver(ev)
    for m in plan.methods:
        for ev in runner.iter_method(m):
            deliver(ev)
    model.clear_caches()


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


__all__ = ["BACKENDS", "RunFolderError", "open_run", "run_local", "run_study"]
