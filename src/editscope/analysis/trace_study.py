"""Causal traces of many prompts, stored and resumable: the paper's dataset view.

A trace study folder holds ``meta.json`` (model, fingerprint, settings, the noise standard deviation
computed once over every subject, as the paper does) and ``traces.jsonl``: one line per case
considered, ``{"case": id, "status": "traced" | "skipped", "reason": ..., "trace": TraceResult}``,
appended and flushed case by case, so that a killed run resumes where it stopped (a torn last line
is ignored and redone) without tracing a case twice.

``known_only`` keeps the paper's filter: a fact is traced only when the model's top-1 next token is
the first token of its true answer (the paper traces facts the model knows); the others are
recorded as skipped with their reason, so the scan does not repeat.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.model import Model
from ..scoring import encode_prompts
from .tracing import KINDS, TraceError, TraceResult, last_probs, embedding_std, target_token, trace
from ..probes.datasets import load_edit_dataset

META = "meta.json"
TRACES = "traces.jsonl"
ARCHIVE_SUFFIX = ".traces.tar.xz"


@dataclass
class TraceCase:
    """One prompt to trace: its subject, the answer to score (None: the model's own top-1) and where
    it came from."""

    case: str
    prompt: str
    subject: str
    target: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    sep: str | None = None  # the record's explicit separator before the target (None: resolved)


def dataset_cases(name: str, source: str | None = None, *, limit: int | None = None, offset: int = 0) -> list[TraceCase]:
    """The edit requests of a dataset (CounterFact, zsRE, ...) as trace cases: the request's prompt
    and subject, scored on its true answer (``target_true``)."""
    out = []
    for case in load_edit_dataset(name, source, limit=limit, offset=offset):
        for i, r in enumerate(case.requests):
            if r.subject and r.target_true:
                out.append(TraceCase(f"{case.case_id}" + (f"/{i}" if len(case.requests) > 1 else ""), r.prompt,
                                     r.subject, r.target_true, {"dataset": name, **case.meta},
                                     r.sep if r.sep_explicit else None))
    if not out:
        raise TraceError(f"dataset {name!r}: no record has a subject and a true answer to trace")
    return out


def arithmetic_cases(ops: Sequence[str] = ("+",), operands: Sequence[int] = range(10)) -> list[TraceCase]:
    """``a op b=`` for every pair of ``operands``, the operands and operator as the subject, scored on
    the model's own answer (these models rarely know the true sum)."""
    bad = [o for o in ops if o not in "+-*"]
    if bad:
        raise TraceError(f"ops={list(ops)}: use + - *")
    return [TraceCase(f"{a}{op}{b}", f"{a}{op}{b}=", f"{a}{op}{b}", None, {"op": op, "a": a, "b": b})
            for op in ops for a in operands for b in operands]


def _settings(samples: int, noise: float, window: int, kinds: Sequence[str], seed: int) -> dict[str, Any]:
    return {"samples": samples, "noise": noise, "window": window, "kinds": list(kinds), "seed": seed}


def read_traces(folder: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(meta, lines)`` of a trace study folder; a torn last line (a killed run) is dropped."""
    folder = Path(folder)
    if not (folder / META).is_file():
        raise TraceError(f"{folder} holds no trace study ({META} missing); write one with editscope trace --dataset ...")
    meta = json.loads((folder / META).read_text())
    lines = []
    path = folder / TRACES
    if path.is_file():
        for raw in path.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                break  # only the last line can be torn: everything before it was flushed whole
    return meta, lines


def traced(lines: list[dict[str, Any]]) -> list[TraceResult]:
    """The traces among stored lines (skipped cases left out)."""
    return [TraceResult.from_json(json.dumps(ln["trace"])) for ln in lines if ln.get("status") == "traced"]


def load_traces(folder: str | Path) -> tuple[dict[str, Any], list[TraceResult]]:
    """The stored traces of a study folder (skipped cases left out)."""
    meta, lines = read_traces(folder)
    return meta, traced(lines)


def trace_cases(model: Model, cases: Sequence[TraceCase], out: str | Path, *, limit: int | None = None,
                known_only: bool = True, samples: int = 10, noise: float = 3.0, window: int = 10,
                kinds: Sequence[str] = KINDS, seed: int = 0, description: str = "",
                on_case: Callable[[int, int, TraceCase, str], None] | None = None) -> list[TraceResult]:
    """Trace ``cases`` in order into the study folder ``out`` until ``limit`` are traced (see the
    module docstring); returns every stored trace. A folder holding another model's or other
    settings' traces is refused. ``on_case(traced, considered, case, status)`` reports progress."""
    out = Path(out)
    settings = _settings(samples, noise, window, kinds, seed)
    fp = model.base_fingerprint
    if (out / META).is_file():
        meta, lines = read_traces(out)
        if meta.get("fingerprint") != fp or meta.get("settings") != settings or meta.get("known_only") != known_only:
            raise TraceError(f"{out} holds traces of another model or settings ({meta.get('model')}, {meta.get('settings')}, "
                             f"known_only={meta.get('known_only')}); use another folder")
        std = float(meta["noise_std"])
    else:
        out.mkdir(parents=True, exist_ok=True)
        std = embedding_std(model, [c.subject for c in cases])
        meta = {"model": model.name, "fingerprint": fp, "settings": settings, "known_only": known_only,
                "noise_std": std, "description": description}
        (out / META).write_text(json.dumps(meta, indent=1))
        lines = []
    done = {ln["case"] for ln in lines}
    traced = sum(ln.get("status") == "traced" for ln in lines)
    path = out / TRACES
    if lines:  # rewrite without a torn tail before appending
        path.write_text("".join(json.dumps(ln) + "\n" for ln in lines))
    with path.open("a") as f:
        for i, c in enumerate(cases):
            if limit is not None and traced >= limit:
                break
            if c.case in done:
                continue
            status, reason, result = "traced", "", None
            if known_only and c.target is not None:
                ids = encode_prompts(model, [c.prompt])[0]
                probs = last_probs(model, torch.tensor([ids], device=model.device))[0]  # no states needed here
                try:
                    known = int(torch.argmax(probs)) == target_token(model, c.prompt, c.target, c.sep)
                except TraceError:
                    known = False
                if not known:
                    status, reason = "skipped", "not known: the model's top-1 next token is not the answer's first token"
            if status == "traced":
                try:
                    result = trace(model, c.prompt, c.target, c.subject, samples=samples, noise=noise, noise_std=std,
                                   window=window, kinds=kinds, seed=seed, cache=False, sep=c.sep)
                except TraceError as e:
                    status, reason = "skipped", str(e)
            line = {"case": c.case, "status": status, "reason": reason, "meta": c.meta,
                    "trace": json.loads(result.to_json()) if result is not None else None}
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
            traced += status == "traced"
            if on_case is not None:
                on_case(traced, i + 1, c, status)
    return load_traces(out)[1]


def is_trace_study(folder: str | Path) -> bool:
    """Whether ``folder`` holds a trace study (its ``meta.json`` and ``traces.jsonl``)."""
    return (Path(folder) / META).is_file() and (Path(folder) / TRACES).is_file()


def export_traces(folder: str | Path, out: str | Path) -> Path:
    """Write a trace study's ``meta.json`` and ``traces.jsonl`` (a torn last line dropped) as one
    xz-compressed tar ``out`` (must end in ``.traces.tar.xz``): what a write-up commits next to its
    text so that its figures and numbers can be re-derived."""
    out = Path(out)
    if not out.name.endswith(ARCHIVE_SUFFIX):
        raise TraceError(f"archive name {out.name!r} must end in {ARCHIVE_SUFFIX}")
    meta, lines = read_traces(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w:xz", preset=9) as tar:
        for name, text in ((META, json.dumps(meta, indent=1)), (TRACES, "".join(json.dumps(ln) + "\n" for ln in lines))):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    return out


def unpack_traces(archive: str | Path, folder: str | Path) -> Path:
    """Restore an :func:`export_traces` archive into ``folder`` (new or empty): a trace study folder
    that write-ups read and ``editscope trace`` resumes. Only the two study files are extracted, after
    a check in a temporary folder, so a damaged or foreign archive leaves nothing behind."""
    archive, folder = Path(archive), Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise TraceError(f"{folder}: not a new or empty folder; unpack the traces elsewhere")
    if not archive.is_file():
        raise TraceError(f"{archive}: no such archive (write one with `editscope export TRACE_FOLDER NAME{ARCHIVE_SUFFIX}`)")
    with tempfile.TemporaryDirectory() as d:
        try:
            with tarfile.open(archive, "r:xz") as tar:
                names = sorted(tar.getnames())
                if names != sorted([META, TRACES]):
                    raise TraceError(f"{archive}: holds {names}, not a trace study's {META} and {TRACES}")
                for name in names:
                    member = tar.extractfile(name)
                    if member is None:
                        raise TraceError(f"{archive}: {name} is not a file")
                    (Path(d) / name).write_bytes(member.read())
        except (tarfile.TarError, EOFError, OSError) as e:
            raise TraceError(f"{archive}: not a readable trace archive ({e})") from None
        read_traces(d)  # the metadata parses
        folder.mkdir(parents=True, exist_ok=True)
        for name in (META, TRACES):
            shutil.move(Path(d) / name, folder / name)  # across file systems
    return folder


__all__ = ["ARCHIVE_SUFFIX", "TraceCase", "arithmetic_cases", "dataset_cases", "export_traces", "is_trace_study",
           "load_traces", "read_traces", "trace_cases", "traced", "unpack_traces"]
