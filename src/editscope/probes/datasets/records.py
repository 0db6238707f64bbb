"""What every edit-dataset parser shares: the result types (:class:`EditCase`, :class:`EditDataset`,
:class:`LoadReport`), field helpers that raise :class:`RecordError` naming the record and the field,
and reading a source (the shared file, a path, or a hub dataset) into raw records.

``source``:
  * ``None``: the dataset's file under the data folder (:func:`editscope.data.fetch.data_path`);
  * a :class:`~pathlib.Path` or a string naming an existing file: that file (JSON array, or JSONL
    with one object per line);
  * any other string: a Hugging Face hub dataset id, loaded with ``datasets.load_dataset`` (needs
    ``pip install 'editscope[hub]'``; refused with a clear error when ``HF_HUB_OFFLINE`` is set).

Nothing is dropped silently: skipped records are listed in the report and logged
(``logging.warning``); with ``strict=True`` the first bad record raises :class:`RecordError`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ...data.fetch import record_user_file
from ...errors import InputError
from ...registry import Registry
from ...requests import EditRequest, Probe, ProbeSet
from ..registry import register_suite

logger = logging.getLogger(__name__)

_HUB_EXTRA = "pip install 'editscope[hub]'"
_MAX_SKIPS_IN_SUMMARY = 10


# Result types


@dataclass
class EditCase:
    """One dataset record: the edits to apply together and the probes that measure them."""

    case_id: str
    requests: list[EditRequest]
    probes: ProbeSet
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadReport:
    """What a loader read: ``n_records`` considered (after ``offset``/``limit``), ``n_loaded`` kept,
    and ``skipped`` as ``(record label, reason)`` pairs, e.g. ``("record 17", "missing field 'alt'")``.

    ``n_available`` is the number of records in the whole source and ``offset`` the first record
    considered (both informational).
    """

    source: str
    n_records: int
    n_loaded: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    offset: int = 0
    n_available: int | None = None

    def summary(self) -> str:
        """e.g. ``"loaded 498 of 500 records from X; skipped 2: record 17 (missing field 'alt'), ..."``."""
        window = ""
        if self.n_available is not None and (self.offset or self.n_records != self.n_available):
            last = self.offset + self.n_records - 1
            window = f" (records {self.offset}..{last} of {self.n_available})"
        head = f"loaded {self.n_loaded} of {self.n_records} records from {self.source}{window}"
        if not self.skipped:
            return head + "; skipped 0"
        shown = ", ".join(f"{label} ({reason})" for label, reason in self.skipped[:_MAX_SKIPS_IN_SUMMARY])
        more = len(self.skipped) - _MAX_SKIPS_IN_SUMMARY
        if more > 0:
            shown += f", ... and {more} more"
        return f"{head}; skipped {len(self.skipped)}: {shown}"


@dataclass
class EditDataset(Sequence[EditCase]):
    """The cases a loader produced, with its :class:`LoadReport`."""

    cases: list[EditCase]
    report: LoadReport
    name: str

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return EditDataset(self.cases[i], self.report, self.name)
        return self.cases[i]

    def __iter__(self) -> Iterator[EditCase]:
        return iter(self.cases)

    def __repr__(self) -> str:
        return f"EditDataset({self.name!r}, n={len(self)}, skipped={len(self.report.skipped)})"

    def requests(self) -> list[EditRequest]:
        """All edit requests of all cases, in order."""
        return [r for c in self.cases for r in c.requests]

    def probes(self) -> ProbeSet:
        """All probes of all cases in one :class:`ProbeSet`; each probe's meta has ``case_id``."""
        out: list[Probe] = []
        for c in self.cases:
            for p in c.probes:
                if p.meta.get("case_id") != c.case_id:
                    p = replace(p, meta={**p.meta, "case_id": c.case_id})
                out.append(p)
        return ProbeSet(out, name=self.name)


class RecordError(InputError, ValueError):
    """A record that does not fit the expected schema. ``record`` names it, ``field`` the field."""

    def __init__(self, message: str, *, field: str | None = None, record: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.record = record


# Field helpers (raise RecordError naming the field)


def field_value(rec: dict, name: str, where: str = "") -> Any:
    if name not in rec or rec[name] is None:
        raise RecordError(f"missing field {where + name!r}", field=where + name)
    return rec[name]


def text_field(rec: dict, name: str, where: str = "", *, optional: bool = False) -> str | None:
    """A non-blank string field; ``{"str": ...}`` objects (ROME/MQuAKE targets) are unwrapped."""
    if optional and rec.get(name) is None:
        return None
    v = field_value(rec, name, where)
    if isinstance(v, dict) and "str" in v:
        v = v["str"]
        name = name + ".str"
    if not isinstance(v, str):
        raise RecordError(f"field {where + name!r} is {type(v).__name__}, expected a string",
                          field=where + name)
    if not v.strip():
        raise RecordError(f"field {where + name!r} is empty", field=where + name)
    return v


def text_list(rec: dict, name: str, where: str = "", *, optional: bool = False,
               allow_str: bool = False, allow_empty: bool = True) -> list[str]:
    if optional and rec.get(name) is None:
        return []
    v = field_value(rec, name, where)
    if allow_str and isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        raise RecordError(f"field {where + name!r} is {type(v).__name__}, expected a list of strings",
                          field=where + name)
    for i, s in enumerate(v):
        if not isinstance(s, str) or not s.strip():
            raise RecordError(f"field {where + name}[{i}] is {s!r}, expected a non-blank string",
                              field=f"{where + name}[{i}]")
    if not allow_empty and not v:
        raise RecordError(f"field {where + name!r} is an empty list", field=where + name)
    return list(v)


def case_id_of(rec: dict, index: int) -> str:
    cid = rec.get("case_id")
    return str(index) if cid is None else str(cid)


def parse_rewrite(rw: Any, where: str) -> tuple[str, str, EditRequest]:
    """One ``requested_rewrite`` object (ROME CounterFact / MQuAKE): its template, the prompt with
    the subject filled in, and the :class:`EditRequest`."""
    if not isinstance(rw, dict):
        raise RecordError(f"field {where[:-1]!r} is {type(rw).__name__}, expected an object",
                          field=where[:-1])
    template = text_field(rw, "prompt", where)
    subject = text_field(rw, "subject", where)
    new = text_field(rw, "target_new", where)
    true = text_field(rw, "target_true", where)
    prompt = _format_template(template, subject, where)
    return template, prompt, make_request(where, prompt=prompt, target_new=new, subject=subject, target_true=true)


def _format_template(template: str, subject: str, where: str) -> str:
    """Fill a ROME/MQuAKE prompt template (``"The mother tongue of {} is"``) with the subject."""
    n = template.count("{}")
    if n == 1:
        return template.replace("{}", subject)
    if n == 0 and subject in template:  # already formatted
        return template
    raise RecordError(
        f"field {where + 'prompt'!r} ({template!r}) must contain exactly one '{{}}' for the subject "
        f"(found {n})", field=where + "prompt")


def make_request(where: str, **kw: Any) -> EditRequest:
    """EditRequest with its validation errors turned into RecordError naming the field."""
    try:
        return EditRequest(**kw)
    except (TypeError, ValueError) as e:
        msg = str(e)
        m = re.match(r"EditRequest\.(\w+)", msg)
        fld = where + (m.group(1) if m else "prompt")
        raise RecordError(f"invalid edit ({fld}): {msg}", field=fld) from e


def make_probe(prompt: str, target: str, category: str, meta: dict[str, Any], fld: str) -> Probe:
    try:
        return Probe(prompt=prompt, target=target, category=category, meta=meta)
    except (TypeError, ValueError) as e:
        raise RecordError(f"invalid {category} probe ({fld}): {e}", field=fld) from e


# Reading sources


@dataclass
class RawRecord:
    label: str            # "record 17" / "line 18"
    index: int            # absolute record index in the source
    obj: Any = None
    error: str | None = None  # set when the line was not valid JSON


def is_offline() -> bool:
    """The Hugging Face hub is switched off (``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE``)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _looks_like_path(s: str) -> bool:
    return (s.startswith(("/", ".", "~")) or "\\" in s or s.count("/") > 1
            or s.lower().endswith((".json", ".jsonl", ".gz")))


def _read_hub(source: str, split: str) -> list[RawRecord]:
    if is_offline():
        raise RuntimeError(
            f"{source!r} is not an existing file, so it was taken as a Hugging Face hub dataset id, "
            "but HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set: cannot download. Pass the path of a local "
            "JSON/JSONL file instead, or unset HF_HUB_OFFLINE to fetch it from the hub.")
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as e:
        raise ImportError(
            f"{source!r} is not an existing file, so it was taken as a Hugging Face hub dataset id; "
            f"loading from the hub needs the 'datasets' package: {_HUB_EXTRA}") from e
    ds = datasets.load_dataset(source, split=split)
    return [RawRecord(f"record {i}", i, dict(row)) for i, row in enumerate(ds)]


def _parse_jsonl(text: str) -> list[RawRecord]:
    out: list[RawRecord] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        idx = len(out)
        try:
            out.append(RawRecord(f"line {lineno}", idx, json.loads(line)))
        except json.JSONDecodeError as e:
            out.append(RawRecord(f"line {lineno}", idx, error=f"invalid JSON: {e.msg} at column {e.colno}"))
    return out


def _json_kind(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def _read_file(path: Path, *, prefer_jsonl: bool = False) -> list[RawRecord]:
    """Records of a JSON array file or a JSONL file (decided by content, suffix as a hint)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e}); expected JSON or JSONL") from e
    if not text.strip():
        raise ValueError(f"{path}: file is empty; expected a JSON array of records or JSONL")
    stripped = text.lstrip()
    jsonl_hint = prefer_jsonl or path.suffix.lower() == ".jsonl"
    if stripped.startswith("[") or not jsonl_hint:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            first = stripped.splitlines()[0]
            try:
                first_ok = isinstance(json.loads(first), dict)
            except json.JSONDecodeError:
                first_ok = False
            if not first_ok:
                raise ValueError(
                    f"{path}: not JSON or JSONL ({e.msg} at line {e.lineno}, column {e.colno}); "
                    "expected a JSON array of records or one JSON object per line") from e
            return _parse_jsonl(text)
        if isinstance(data, list):
            return [RawRecord(f"record {i}", i, r) for i, r in enumerate(data)]
        if isinstance(data, dict) and jsonl_hint:
            return [RawRecord("line 1", 0, data)]
        raise ValueError(
            f"{path}: top level is a JSON {_json_kind(data)}; expected a JSON array of records "
            "(or JSONL, one object per line)")
    return _parse_jsonl(text)


def resolve_source(source: str | Path | None, default: Callable[[], Path], split: str,
             prefer_jsonl: bool = False) -> tuple[str, list[RawRecord]]:
    if source is None:
        p = default()
        return str(p), _read_file(p, prefer_jsonl=prefer_jsonl)
    if isinstance(source, Path) or Path(str(source)).expanduser().exists():
        p = Path(source).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        if p.is_dir():
            raise ValueError(f"{p} is a directory; pass the JSON/JSONL file inside it")

        record_user_file(p)  # the run's manifest names the user's own file with its hash
        return str(p), _read_file(p, prefer_jsonl=prefer_jsonl)
    s = str(source)
    if not isinstance(source, str) or not s.strip():
        raise TypeError(f"source must be None, a path or a hub dataset id, got {source!r}")
    if _looks_like_path(s):
        raise FileNotFoundError(
            f"{s} does not exist (it looks like a file path, so it was not taken as a hub dataset id)")
    return f"hub:{s}[{split}]", _read_hub(s, split)


def _window(raws: list[RawRecord], limit: int | None, offset: int) -> list[RawRecord]:
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    end = None if limit is None else offset + limit
    return raws[offset:end]


def _label(raw: RawRecord) -> str:
    if isinstance(raw.obj, dict) and raw.obj.get("case_id") is not None:
        return f"{raw.label} [case_id {raw.obj['case_id']}]"
    return raw.label


def load_records(name: str, source_str: str, raws: list[RawRecord], limit: int | None, offset: int, strict: bool,
         parse: Callable[[dict, int], EditCase | None]) -> EditDataset:
    """Parse the records in the window; ``parse`` returning None means the record was consumed
    without making a case of its own (JSONL probe-only records)."""
    window = _window(raws, limit, offset)
    cases: list[EditCase] = []
    skipped: list[tuple[str, str]] = []
    n_loaded = 0
    for raw in window:
        label = _label(raw)
        try:
            if raw.error is not None:
                raise RecordError(raw.error)
            if not isinstance(raw.obj, dict):
                raise RecordError(f"record is a JSON {_json_kind(raw.obj)}, expected an object")
            case = parse(raw.obj, raw.index)
        except RecordError as e:
            if strict:
                raise RecordError(f"{source_str}: {label}: {e}", field=e.field, record=label) from e
            skipped.append((label, str(e)))
            continue
        n_loaded += 1
        if case is not None:
            case.meta.setdefault("record", raw.label)
            if isinstance(raw.obj.get("mined"), dict):  # written by editscope mine: its provenance
                case.meta["mined"] = raw.obj["mined"]
            cases.append(case)
    report = LoadReport(source=source_str, n_records=len(window), n_loaded=n_loaded,
                        skipped=skipped, offset=offset, n_available=len(raws))
    if skipped:
        logger.warning("%s: %s", name, report.summary())
    return EditDataset(cases, report, name)


# ----------------------------------------------------------------------------------------------
# Registration: each parser is an edit dataset (study files' ``edits: [{dataset: NAME}]``,
# ``editscope trace --dataset``) and a suite whose factory returns the flat ProbeSet
# (``get_suite("counterfact", limit=100)``); edits come from ``load_X(...).requests()``.

#: edit datasets by name
EDIT_DATASETS: Registry[Callable[..., EditDataset]] = Registry("edit dataset")


def suite_factory(loader: Callable[..., EditDataset], name: str) -> Callable[..., ProbeSet]:
    def factory(source: str | Path | None = None, *, limit: int | None = None, offset: int = 0,
                strict: bool = False, **kwargs: Any) -> ProbeSet:
        return loader(source, limit=limit, offset=offset, strict=strict, **kwargs).probes()

    factory.__name__ = f"{name}_suite"
    factory.__doc__ = f"The probes of :func:`{loader.__name__}` as one ProbeSet (same arguments)."
    return factory


def register_dataset(name: str, description: str) -> Callable[[Callable[..., EditDataset]], Callable[..., EditDataset]]:
    """Decorator for a parser module's ``load_X(source=None, *, limit, offset, strict)``: registers it
    as the edit dataset ``name`` and as the suite ``name`` (``description`` shown by ``editscope suites``)."""
    def add(loader: Callable[..., EditDataset]) -> Callable[..., EditDataset]:
        EDIT_DATASETS.register(name, loader)
        register_suite(name, description, suite_factory(loader, name), needs_edit=False, overwrite=True)
        return loader
    return add
