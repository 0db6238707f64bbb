"""``editscope run --backend ray``: a study's units on a Ray cluster (the ``ray`` extra).

Each worker is a Ray actor that loads the model once and computes units with the same
:class:`~editscope.runner.units.Runner` as the local backend. Jobs: a chunk of a single-protocol
method's units (the chunks whose batched part is shared, cut as the local backend cuts them) or one
method's whole sequential chain. The first worker computes the base unit; its base outputs go
through Ray's object store to every other worker (each then runs one base pass to keep the hidden
states the incremental evaluation starts from). The driver pulls one unit result at a time from
each busy worker and alone writes the store, one transaction per unit: a worker that dies loses
only the unit in flight, which is re-run (its job re-queued with what is not stored yet; a chain
replays its stored edits); a killed driver leaves a store that ``--resume`` finishes.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InputError
from .plan import build_plan, Plan
from .unit_results import Skipped, Stored
from .units import Event, prepare_chunks
from .config import parse_config
from .prepare import load_study_model, study_runner
from ..paths import cache_root
from ..evaluation import base_output_path

log = logging.getLogger(__name__)

#: a job that has killed this many workers is not tried again
MAX_ATTEMPTS = 3
#: environment the workers need to find data, caches and the offline switches (sent to every worker)
FORWARDED_ENV = ("EDITSCOPE_", "HF_", "TRANSFORMERS_", "PYTHONPATH")


class BackendError(InputError, RuntimeError):
    """The Ray backend cannot start (extra missing, cluster unreachable) or a job keeps failing."""


@dataclass
class Job:
    """A unit of scheduling: ``units`` of one method (a chunk, or a whole sequential chain)."""

    method: str
    units: list[str]
    chain: bool
    attempts: int = 0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BackendError("--backend ray needs Ray, which is not installed: pip install 'editscope[ray]' "
                           "(or run without --backend ray)") from None
    return ray


def check_address(address: str | None) -> None:
    """Refuse a ``HOST:PORT`` nothing listens on, in seconds instead of Ray's minute of retries."""
    if address in (None, "", "auto", "local") or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise BackendError(f"--address {address!r}: give HOST:PORT of a Ray cluster's head (e.g. 10.0.0.5:6379), "
                           "'auto' for the cluster this machine belongs to, or leave it out for a local cluster")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise BackendError(f"--address {address}: no Ray cluster answers there ({e}); start one with "
                           "`ray start --head` on that machine, or leave --address out for a local cluster") from None


class StudyWorker:
    """A Ray actor's state: one loaded model and a Runner for the study (made a Ray actor by
    :class:`RayExecutor`; a plain class so that it can be tested without Ray)."""

    def __init__(self, config_data: dict[str, Any], stored: Stored, threads: int):
        import torch


        torch.set_num_threads(max(1, threads))
        config = parse_config(config_data, "study (on a Ray worker)")  # imports the study's plugins
        self.plan = build_plan(config)
        self.model = load_study_model(config)
        self.runner = study_runner(self.plan, stored, self.model)
        self._job: Any = None

    def identity(self) -> tuple[str, str]:
        return self.model.base_fingerprint, self.model.name

    def base(self) -> tuple[list[Event], dict[str, bytes]]:
        """The base unit, and the base-output files every other worker needs (name -> bytes)."""
        events = list(self.runner.iter_base())
        return events, self._base_files()

    def warm(self, files: dict[str, bytes]) -> None:
        """Take the base outputs computed elsewhere and run the base pass (kept hidden states, the
        guard's base perplexity) without storing anything."""
        folder = cache_root() / "base_outputs"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            path = folder / name
            if not path.exists():
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
        stored = self.runner.stored
        self.runner.stored = replace(stored, done=stored.done | {("base", "base")})
        for _ in self.runner.iter_base():
            pass
        self.runner.stored = stored

    def _base_files(self) -> dict[str, bytes]:
        out = {}
        for _, probes in self.plan.all_sets().values():
            path = base_output_path(self.model, probes)
            if path.is_file():
                out[path.name] = path.read_bytes()
        return out

    def start(self, method: str, units: list[str], stored: Stored) -> None:
        """Begin a job; :meth:`next` then yields its units one at a time."""
        if self._job is not None:
            self._job.close()
        spec = next(m for m in self.plan.methods if m.name == method)
        wanted = set(units)
        plans = [u for u in self.plan.units_of(method) if u.unit in wanted]
        self.runner.stored = stored
        self._job = self.runner.iter_method(spec, plans)

    def next(self) -> Event | None:
        """The job's next unit (None when it is finished). A single unit is undone only on the
        following call, after the driver stored it."""
        try:
            return next(self._job)
        except StopIteration:
            self._job = None
            return None


class RayExecutor:
    """Runs a plan's units on Ray workers; see the module docstring."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        if workers is not None and workers < 1:
            raise BackendError(f"--workers {workers}: give at least 1")
        self.ray = _import_ray()
        check_address(address)
        self.address, self.workers = address, workers
        self._started = False

    def _init(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
        if self.address in (None, "", "local"):
            # Ray starts its workers at niceness 15, so any other job on the machine (a second
            # study, a test run) would starve the study; a cluster of our own runs them at ours
            os.environ.setdefault("RAY_worker_niceness", str(os.nice(0)))
        try:
            ray.init(address=None if self.address in (None, "", "local") else self.address,
                     include_dashboard=False, log_to_driver=False,
                     # Ray's own notices only with `editscope -v` (which lowers the root logger to INFO)
                     logging_level=logging.INFO if logging.getLogger().isEnabledFor(logging.INFO) else logging.ERROR,
                     runtime_env={"env_vars": env})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise BackendError(f"--address {self.address}: cannot connect to a Ray cluster ({e}); start one with "
                               "`ray start --head`, or leave --address out for a local cluster") from None
        self._started = True

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False

    def run(self, plan: Plan, stored: Stored, deliver: Callable[[Event], None], *,
            admit: Callable[[str, str], None], current: Callable[[], Stored]) -> None:
        """Compute every unit not in ``stored`` and hand each to ``deliver`` (which stores it).
        ``admit(fingerprint, name)`` checks the workers' model before anything is delivered;
        ``current()`` reads what the store holds now (what a job starts from, what a dead worker
        left to do)."""
        self._init()
        ray = self.ray
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = self.workers or cpus
        threads = max(1, cpus // n)
        actor_cls = ray.remote(num_cpus=threads, max_restarts=0)(StudyWorker)
        config_data = plan.config.model_dump(mode="json")

        workers: list[Any] = []

        def new_worker(s: Stored):
            workers.append(actor_cls.remote(config_data, s, threads))
            return workers[-1]

        try:
            self._schedule(plan, stored, deliver, admit, current, new_worker, n)
        finally:  # each holds a model: none outlives the run, even on a cluster the caller keeps
            for w in workers:
                ray.kill(w)

    def _schedule(self, plan: Plan, stored: Stored, deliver: Callable[[Event], None],
                  admit: Callable[[str, str], None], current: Callable[[], Stored],
                  new_worker: Callable[[Stored], Any], n: int) -> None:
        ray = self.ray
        first = new_worker(stored)
        fingerprint, name = self._get(first.identity.remote())
        admit(fingerprint, name)
        events, files = self._get(first.base.remote())
        for ev in events:
            deliver(ev)
        files_ref = ray.put(files)
        delivered: set[tuple[str, str]] = set()
        jobs = deque(self._jobs(plan, stored, deliver, delivered))
        idle = [first] + [new_worker(stored) for _ in range(max(0, min(n, len(jobs)) - 1))]
        for w in idle[1:]:
            w.warm.remote(files_ref)  # queued before the worker's first job (an actor runs calls in order)
        busy: dict[Any, tuple[Any, Job]] = {}  # object ref of next() -> (worker, job)

        def launch(w, job: Job) -> None:
            w.start.remote(job.method, job.units, _for_method(current(), job.method))
            busy[w.next.remote()] = (w, job)

        while jobs or busy:
            while jobs and idle:
                launch(idle.pop(), jobs.popleft())
            ready, _ = ray.wait(list(busy), num_returns=1)
            ref = ready[0]
            w, job = busy.pop(ref)
            try:
                ev = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                job.attempts += 1
                if job.attempts >= MAX_ATTEMPTS:
                    raise BackendError(f"{job.method}: {job.attempts} workers died running units {job.units[0]}.."
                                       f"{job.units[-1]} ({e}); the store keeps every finished unit") from None
                left = job.units if job.chain else [u for u in job.units if (job.method, u) not in current().done]
                log.warning("a Ray worker died during %s; re-running %d unit(s) on a new worker",
                            job.method, len(left))
                if left:
                    jobs.appendleft(Job(job.method, left, job.chain, job.attempts))
                fresh = new_worker(stored)
                fresh.warm.remote(files_ref)
                idle.append(fresh)
                continue
            except ray.exceptions.RayTaskError as e:
                raise e.as_instanceof_cause() from None
            if ev is None:
                idle.append(w)
                continue
            key = (ev.unit.method, ev.unit.unit)
            if not (isinstance(ev, Skipped) and key in delivered):
                delivered.add(key)
                deliver(ev)
            busy[w.next.remote()] = (w, job)

    def _jobs(self, plan: Plan, stored: Stored, deliver: Callable[[Event], None],
              delivered: set[tuple[str, str]]) -> list[Job]:
        """The jobs still to run (chains longest first, see :func:`longest_chains_first`; chunks in plan
        order); units already stored are reported as skipped."""
        jobs = []
        chain = plan.config.protocol.kind == "sequential"
        for m in plan.methods:
            units = plan.units_of(m.name)
            if chain:
                if any((m.name, u.unit) not in stored.done for u in units):
                    jobs.append(Job(m.name, [u.unit for u in units], True))
                    continue
            else:
                jobs += [Job(m.name, [u.unit for u in c], False) for c in prepare_chunks(units, stored)]
            for u in units:
                if (m.name, u.unit) in stored.done:
                    delivered.add((m.name, u.unit))
                    deliver(Skipped(u, "done", resumed=True))
        return longest_chains_first(jobs, stored) if chain else jobs

    def _get(self, ref):
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as e:
            raise e.as_instanceof_cause() from None
        except self.ray.exceptions.RayActorError as e:
            raise BackendError(f"the first Ray worker died while loading the model or computing the base unit "
                               f"({e}); is there memory for the model on every worker?") from None


def longest_chains_first(jobs: list[Job], stored: Stored) -> list[Job]:
    """Chains ordered by the edits they have still to run, most first (ties keep plan order).

    A chain runs whole on one worker, so the study ends when its longest chain does; starting the
    longest ones first (the LPT rule) keeps a resumed study with half-done chains from leaving a full
    one for last, on a worker that would then run it alone."""
    def left(job: Job) -> int:
        return sum((job.method, u) not in stored.done for u in job.units)

    return sorted(jobs, key=left, reverse=True)


def _for_method(stored: Stored, method: str) -> Stored:
    """Only what a job of ``method`` needs to know about the run folder."""
    return Stored(frozenset(p for p in stored.done if p[0] == method), {method: stored.units.get(method, [])})


__all__ = ["BackendError", "RayExecutor", "StudyWorker", "check_address", "longest_chains_first"]
