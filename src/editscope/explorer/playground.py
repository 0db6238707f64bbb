"""The explorer's edit playground: a typed edit run on a chosen model by a chosen method, one job at
a time, with its progress, the answers before and after on a small suite, and the blast radius.

Jobs wait in a first-in, first-out queue served by one worker thread (a 2-core machine edits one
model at a time); a waiting job knows its place. A job's edit stays on the model until the user
undoes it or the next job starts (which undoes it first), so "save" and "undo" act on what was
shown. A browser that disconnects does not stop a job: it finishes (or is cancelled by its id).

The suite: for an arithmetic edit (``a op b=``) the ``0..10`` grid for + - * with paraphrases (the
blast radius is drawn from it); for any other edit, the edit's prompt and the 217 written facts.
Nothing from a request reaches the file system: models are chosen from the names the server was
started with, and saved edits go to the server's save folder under the job's id.
"""

from __future__ import annotations

import re
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import EditscopeError
from ..evaluation import evaluate
from ..methods.apply import apply_edit
from ..methods.base import UnknownMethodError, get_method, list_methods
from ..methods.handle import EditHandle
from ..models.model import Model
from ..probes.arithmetic import arithmetic, parse_arithmetic
from ..probes.facts import facts
from ..report.data.grid import grid_of
from ..requests import EditRequest, Probe, ProbeSet
from ..runner.config import parse_config
from ..runner.prepare import model_by_name
from .views import grid_json

#: the grid's largest operand in the playground's arithmetic suite
GRID_N = 10
#: jobs kept (finished ones beyond this are forgotten, oldest first)
KEEP_JOBS = 50
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
#: the states a job ends in
FINISHED = ("done", "failed", "cancelled")
STAGES = ("loading the model", "building the probes", "base answers", "editing", "evaluating the edit")


class FormError(ValueError):
    """Bad playground input: ``fields`` maps each form field to what is wrong with it."""

    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


class EditForm(BaseModel):
    """The playground's form."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    model: str = Field(min_length=1, max_length=200)
    method: str = Field(min_length=1, max_length=100)
    prompt: str = Field(min_length=1, max_length=500)
    target: str = Field(min_length=1, max_length=200)
    subject: str | None = Field(None, max_length=200)
    target_true: str | None = Field(None, max_length=200)

    @field_validator("subject", "target_true", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    def request(self) -> EditRequest:
        return EditRequest(prompt=self.prompt, target_new=self.target, subject=self.subject,
                           target_true=self.target_true)


@dataclass
class Job:
    """One playground edit: its form, where it is, what it produced."""

    id: str
    form: EditForm
    state: JobState = "queued"
    stage: str = "waiting"
    step: int = 0  # stages done, of len(STAGES)
    error: str | None = None
    result: dict[str, Any] | None = None
    saved: str | None = None
    undone: bool = False
    created: float = field(default_factory=time.time)
    seconds: float | None = None
    handle: EditHandle | None = field(default=None, repr=False)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    #: bumped on every change, so a stream knows when to send
    version: int = 0

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class Cancelled(Exception):
    pass


def edit_methods() -> list[str]:
    """The methods the playground offers: every registered one but the controls."""
    return [m["name"] for m in list_methods() if m["family"] != "control"]


def playground_probes(req: EditRequest) -> ProbeSet:
    """The suite an edit is shown on (see the module docstring)."""
    if parse_arithmetic(req.prompt) is not None:
        return arithmetic(req, n=GRID_N)
    return ProbeSet([Probe(req.prompt, req.target_new, "target", sep=req.sep), *facts()], name="playground")


def blast(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """An evaluation's blast radius as the page draws it (:func:`grid_json`); None without grid rows."""
    g = grid_of("this edit", rows)
    return None if g is None else grid_json(g)


class Playground:
    """The job queue and the one loaded model."""

    def __init__(self, models: list[str], save_dir: str | Path, *, dtype: str = "float32"):
        if not models:
            raise ValueError("the playground needs at least one model name")
        self.models = list(dict.fromkeys(models))
        self.save_dir = Path(save_dir)
        self.dtype = dtype
        self.methods = edit_methods()
        self._jobs: dict[str, Job] = {}
        self._queue: deque[str] = deque()
        self._cv = threading.Condition(threading.RLock())
        self._model: tuple[str, Model] | None = None
        self._live: Job | None = None  # the job whose edit is on the loaded model
        self._worker: threading.Thread | None = None
        self._stop = False
        #: held while the model's weights may change (a job running, an undo, a save)
        self._model_lock = threading.RLock()

    # ---- the form
    def check(self, data: dict[str, Any]) -> EditForm:
        """The form validated, or :class:`FormError` naming each bad field."""
        try:
            form = EditForm.model_validate(data)
        except ValidationError as e:
            raise FormError({str(err["loc"][0]) if err["loc"] else "form": err["msg"] for err in e.errors()}) from None
        bad: dict[str, str] = {}
        if form.model not in self.models:
            bad["model"] = f"not offered here; choose one of {', '.join(self.models)}"
        try:
            name = get_method(form.method).name
            if name not in self.methods:
                bad["method"] = f"{name!r} is a control, not an edit; choose one of {', '.join(self.methods)}"
        except UnknownMethodError as e:
            bad["method"] = str(e)
        try:
            form.request()
        except ValueError as e:
            text = str(e)
            bad["subject" if "subject" in text else "target" if "target" in text else "prompt"] = text
        if bad:
            raise FormError(bad)
        return form

    # ---- the queue
    def submit(self, data: dict[str, Any]) -> Job:
        form = self.check(data)
        job = Job(uuid.uuid4().hex[:12], form)
        with self._cv:
            self._jobs[job.id] = job
            self._queue.append(job.id)
            self._forget_old()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name="playground", daemon=True)
                self._worker.start()
            self._cv.notify_all()
        return job

    def _forget_old(self) -> None:
        done = [j for j in self._jobs.values() if j.finished and j is not self._live]
        for j in sorted(done, key=lambda j: j.created)[:max(0, len(self._jobs) - KEEP_JOBS)]:
            del self._jobs[j.id]

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def place(self, job: Job) -> int | None:
        """1 for the next job to run, 2 after it, ...; None when not waiting."""
        with self._cv:  # re-entrant: snapshot() holds it already
            return self._queue.index(job.id) + 1 if job.id in self._queue else None

    def cancel(self, job: Job) -> None:
        """A waiting job leaves the queue; a running one stops at its next stage (its edit undone)."""
        with self._cv:
            if job.id in self._queue:
                self._queue.remove(job.id)
                self._set(job, state="cancelled", stage="cancelled before it started")
                self._cv.notify_all()
                return
        job.cancel.set()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    def _set(self, job: Job, **changes: Any) -> None:
        """Change a job's fields together (a reader never sees half of a change) and wake its watchers."""
        with self._cv:
            for k, v in changes.items():
                setattr(job, k, v)
            job.version += 1
            self._bump_queue()
            self._cv.notify_all()

    def _bump_queue(self) -> None:
        """Waiting jobs' places moved: their watchers should hear it (call holding ``_cv``)."""
        for other in self._queue:
            o = self._jobs.get(other)
            if o is not None:
                o.version += 1

    def snapshot(self, job: Job) -> dict[str, Any]:
        """What the page shows of a job, read in one piece (see :func:`job_json`)."""
        with self._cv:
            return job_json(self, job)

    def wait_change(self, job: Job, version: int, timeout: float) -> None:
        """Block until ``job`` changes past ``version`` (or ``timeout`` seconds pass)."""
        with self._cv:
            self._cv.wait_for(lambda: job.version != version or self._stop, timeout)

    def _serve(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._queue or self._stop)
                if self._stop:
                    return
                job = self._jobs[self._queue.popleft()]
                self._bump_queue()
                self._cv.notify_all()
            with self._model_lock:
                try:
                    self._run(job)
                except BaseException as e:  # noqa: BLE001 - the worker outlives any one job
                    traceback.print_exc()
                    self._set(job, state="failed", stage="failed", error=f"{type(e).__name__}: {e}")

    def _stage(self, job: Job, i: int) -> None:
        if job.cancel.is_set():
            raise Cancelled
        self._set(job, stage=STAGES[i], step=i)

    def _run(self, job: Job) -> None:
        t0 = time.perf_counter()
        self._set(job, state="running")
        try:
            self._stage(job, 0)
            model = self._load(job.form.model)
            self._undo_live()
            self._stage(job, 1)
            req = job.form.request()
            probes = playground_probes(req)
            self._stage(job, 2)
            before = evaluate(model, probes)
            self._stage(job, 3)
            handle = apply_edit(model, [req], job.form.method)
            job.handle, self._live = handle, job
            self._stage(job, 4)
            after = evaluate(model, probes)
            if job.cancel.is_set():
                raise Cancelled
            result = self._result(req, before.rows, after.rows, handle)
            self._set(job, state="done", stage="done", step=len(STAGES), result=result,
                      seconds=time.perf_counter() - t0)
        except Cancelled:
            try:
                self._undo_live()
            finally:
                self._set(job, state="cancelled", stage="cancelled", seconds=time.perf_counter() - t0)
        except EditscopeError as e:  # the method refused the edit, or a model failed to load: the user's to fix
            self._set(job, state="failed", stage="refused", error=str(e), seconds=time.perf_counter() - t0)
        except (ValueError, TypeError) as e:
            self._set(job, state="failed", stage="refused", error=str(e), seconds=time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - a job must never take the worker down; the page shows why
            traceback.print_exc()
            self._set(job, state="failed", stage="failed", error=f"{type(e).__name__}: {e}",
                      seconds=time.perf_counter() - t0)

    def _load(self, name: str) -> Model:
        if self._model is None or self._model[0] != name:
            self._undo_live()
            self._model = None  # one model in memory at a time
            self._model = (name, model_by_name(name, dtype=self.dtype))
        return self._model[1]

    def _undo_live(self) -> None:
        live, self._live = self._live, None
        if live is not None and live.handle is not None and not live.undone:
            live.handle.undo()
            self._set(live, undone=True)

    @staticmethod
    def _result(req: EditRequest, before: list[dict[str, Any]], after: list[dict[str, Any]],
                handle: EditHandle) -> dict[str, Any]:
        shown = [{"category": a["category"], "prompt": a["prompt"], "target": a["target"],
                  "before": b["greedy"], "after": a["greedy"], "changed": not a["unchanged"]}
                 for b, a in zip(before, after) if a["category"] in ("target", "paraphrase")]
        others = [a for a in after if a["category"] not in ("target", "paraphrase")]
        changed = [{"category": a["category"], "prompt": a["prompt"], "before": a["base_greedy"], "after": a["greedy"]}
                   for a in others if not a["unchanged"]]
        return {"answers": shown, "changed_elsewhere": changed[:50], "n_changed_elsewhere": len(changed),
                "n_elsewhere": len(others), "blast": blast(after), "tensors": len(handle.names),
                "edit_seconds": handle.info.get("seconds")}

    # ---- after a job
    def _holding_model(self) -> bool:
        """Take the model lock if no job is running (True), else False: undo and save answer at once."""
        return self._model_lock.acquire(blocking=False)

    def undo(self, job: Job) -> None:
        if job.state != "done" or job.handle is None:
            raise FormError({"job": "only a finished edit can be undone"})
        if job.undone:
            raise FormError({"job": "this edit was already undone (by you, or by the next job)"})
        if not self._holding_model():
            raise FormError({"job": "another edit is running on the model; this one is undone when it starts"})
        try:
            if self._live is job:
                self._undo_live()
        finally:
            self._model_lock.release()

    def save(self, job: Job) -> Path:
        """Write the live edit as ``editscope edit --save`` does, under the save folder."""
        if job.state != "done" or job.handle is None or job.undone:
            raise FormError({"job": "only an edit still on the model can be saved (run it again)"})
        out = self.save_dir / f"{job.id}-{re.sub(r'[^a-z0-9-]+', '-', job.form.method.lower())}"
        if not self._holding_model():
            raise FormError({"job": "another edit is running on the model (it undoes this one first); run this "
                                    "one again to save it"})
        try:
            if job.undone:
                raise FormError({"job": "this edit was undone by the next job; run it again to save it"})
            path = Path(job.handle.save(out))
        finally:
            self._model_lock.release()
        self._set(job, saved=str(path))
        return path

    @staticmethod
    def study_yaml(job: Job) -> str:
        """A study file that measures this edit properly: the method, the identity edit (noise
        floor), the playground's suite and perplexity; validated before it is returned."""
        f = job.form
        edit = {"prompt": f.prompt, "target_new": f.target, **({"subject": f.subject} if f.subject else {}),
                **({"target_true": f.target_true} if f.target_true else {})}
        arith = parse_arithmetic(f.prompt) is not None
        slug = re.sub(r"[^a-z0-9]+", "-", f"{f.method}-{f.prompt}-{f.target}".lower()).strip("-")[:60] or "edit"
        study = {"name": f"playground-{slug}", "model": f.model, "seed": 0, "methods": [f.method, "identity"],
                 "edits": [edit], "probes": [{"suite": "arithmetic", "args": {"n": GRID_N}}, "facts"] if arith else ["facts"],
                 "perplexity": {"corpus": "me_ppl_50", "limit": 20}, "protocol": {"kind": "single"}}
        parse_config(study, "playground study")
        head = (f"# From the editscope playground: {f.method} edit {f.prompt!r} -> {f.target!r} on {f.model}.\n"
                f"#   editscope run {study['name']}.yaml --resume\n")
        return head + yaml.safe_dump(study, sort_keys=False, allow_unicode=True)


def job_json(pg: Playground, job: Job) -> dict[str, Any]:
    """What the page shows of a job."""
    return {"id": job.id, "state": job.state, "stage": job.stage, "step": job.step, "steps": len(STAGES),
            "place": pg.place(job), "error": job.error, "result": job.result, "saved": job.saved,
            "undone": job.undone, "seconds": job.seconds, "form": job.form.model_dump()}


__all__ = ["EditForm", "FINISHED", "FormError", "GRID_N", "Job", "Playground", "STAGES", "blast", "edit_methods", "job_json",
           "playground_probes"]
