"""Dataset loaders: CounterFact (ROME and MEND/EasyEdit forms), zsRE (MEND form), MQuAKE, plain JSONL.

Every loader has the signature ``load_X(source=None, *, limit=None, offset=0, strict=False)`` and
returns an :class:`EditDataset`: one :class:`EditCase` per record (its :class:`EditRequest` list and
its :class:`ProbeSet`) plus a :class:`LoadReport` saying how many records were read and which were
skipped and why. Nothing is dropped silently: skipped records are listed in the report and logged
(``logging.warning``); with ``strict=True`` the first bad record raises :class:`RecordError`
(a ``ValueError``) naming the record and the field.

``source``:
  * ``None``: the shared data file (``<shared>/data/...``, see :mod:`editscope.paths`);
  * a :class:`~pathlib.Path` or a string naming an existing file: that file (JSON array, or JSONL
    with one object per line);
  * any other string: a Hugging Face hub dataset id, loaded with ``datasets.load_dataset`` (needs
    ``pip install 'editscope[hub]'``; refused with a clear error when ``HF_HUB_OFFLINE`` is set).

Probe categories produced (every probe's ``meta`` has ``case_id``):
  * ``target``: the edit prompt; target = ``target_new``; ``meta["target_true"]``.
  * ``paraphrase``: rephrasings of the edit prompt; target = ``target_new``; ``meta["target_true"]``.
  * ``near``: neighbourhood / locality prompts; target = their own true answer;
    ``meta["target_new"]`` = the edit's new target (so ROME's NS = P(true) > P(new) is computable).
  * ``portability``: multi-hop questions; target = the new answer; ``meta["aliases"]``.
  * ``portability-hop``: MQuAKE single-hop cloze prompts of the edited chain; target = the new
    answer of that hop; ``meta["hop"]``, ``meta["aliases"]``.
  * ``attribute``: ROME attribute prompts (subjects that truly have ``target_new``);
    target = ``target_new``; ``meta["target_true"]``.
  * ``generation``: ROME generation prompts (free generation for fluency/consistency);
    target = ``target_new`` as a placeholder; ``meta["kind"] = "generation"``.

Also here: MQuAKE metrics (:func:`edit_wise_accuracy`, :func:`instance_wise_accuracy`,
:func:`multi_hop_accuracy`) and the answer-matching rule :func:`answer_matches`.
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

from ..metrics.multihop import (  # noqa: F401 - re-exported: loaders and their scoring were one module
    answer_matches,
    edit_wise_accuracy,
    instance_wise_accuracy,
    multi_hop_accuracy,
    normalize_answer,
)
from ..data.fetch import data_path, record_user_file
from ..registry import Registry
from ..requests import EditRequest, Probe, ProbeSet
from ..errors import InputError
from .registry import register_suite

logger = logging.getLogger(__name__)

__all__ = [
    "EditCase", "EditDataset", "LoadReport", "RecordError",
    "load_counterfact", "load_zsre", "load_mquake", "load_jsonl", "load_edit_dataset", "EDIT_DATASETS",
    "edit_wise_accuracy", "instance_wise_accuracy", "multi_hop_accuracy", "answer_matches",
    "normalize_answer",
]

_HUB_EXTRA = "pip install 'editscope[hub]'"
_MAX_SKIPS_IN_SUMMARY = 10


# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Field helpers (raise RecordError naming the field)



def _field(rec: dict, name: str, where: str = "") -> Any:
    if name not in rec or rec[name] is None:
        raise RecordError(f"missing field {where + name!r}", field=where + name)
    return rec[name]


def text_field(rec: dict, name: str, where: str = "", *, optional: bool = False) -> str | None:
    """A non-blank string field; ``{"str": ...}`` objects (ROME/MQuAKE targets) are unwrapped."""
    if optional and rec.get(name) is None:
        return None
    v = _field(rec, name, where)
    if isinstance(v, dict) and "str" in v:
        v = v["str"]
        name = name + ".str"
    if not isinstance(v, str):
        raise RecordError(f"field {where + name!r} is {type(v).__name__}, expected a string",
                          field=where + name)
    if not v.strip():
        raise RecordError(f"field {where + name!r} is empty", field=where + name)
    return v


def _text_list(rec: dict, name: str, where: str = "", *, optional: bool = False,
               allow_str: bool = False, allow_empty: bool = True) -> list[str]:
    if optional and rec.get(name) is None:
        return []
    v = _field(rec, name, where)
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


def _parse_rewrite(rw: Any, where: str) -> tuple[str, str, EditRequest]:
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


# ----------------------------------------------------------------------------------------------
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
# CounterFact


def _counterfact_mend(rec: dict, index: int) -> EditCase:
    """MEND/EasyEdit flattened form (``counterfact-edit.json``)."""
    cid = case_id_of(rec, index)
    prompt = text_field(rec, "prompt")
    subject = text_field(rec, "subject")
    new = text_field(rec, "target_new")
    true = text_field(rec, "ground_truth")
    rephrases = _text_list(rec, "rephrase_prompt", allow_str=True)
    loc_prompts = _text_list(rec, "locality_prompt", allow_str=True)
    loc_truths = _text_list(rec, "locality_ground_truth", allow_str=True)
    if len(loc_truths) != len(loc_prompts):
        raise RecordError(f"field 'locality_ground_truth' has {len(loc_truths)} entries for "
                          f"{len(loc_prompts)} locality prompts", field="locality_ground_truth")
    req = make_request("", prompt=prompt, target_new=new, subject=subject, target_true=true)
    probes = [make_probe(prompt, new, "target", {"case_id": cid, "target_true": true}, "prompt")]
    probes += [make_probe(p, new, "paraphrase", {"case_id": cid, "target_true": true}, "rephrase_prompt")
               for p in rephrases]
    probes += [make_probe(p, t, "near", {"case_id": cid, "target_new": new, "target_true": t},
                      "locality_prompt") for p, t in zip(loc_prompts, loc_truths)]
    return EditCase(cid, [req], ProbeSet(probes, name=f"counterfact:{cid}"),
                    {"dataset": "counterfact", "format": "mend", "index": index})


def _counterfact_rome(rec: dict, index: int) -> EditCase:
    """ROME ``counterfact.json`` form (``requested_rewrite`` with a ``{}`` prompt template)."""
    cid = case_id_of(rec, index)
    rw_field = _field(rec, "requested_rewrite")
    rewrites = rw_field if isinstance(rw_field, list) else [rw_field]
    if not rewrites:
        raise RecordError("field 'requested_rewrite' is an empty list", field="requested_rewrite")
    reqs: list[EditRequest] = []
    probes: list[Probe] = []
    templates, relations = [], []
    for k, rw in enumerate(rewrites):
        where = "requested_rewrite." if len(rewrites) == 1 else f"requested_rewrite[{k}]."
        template, prompt, req = _parse_rewrite(rw, where)
        new, true = req.target_new, req.target_true
        reqs.append(req)
        probes.append(make_probe(prompt, new, "target",
                             {"case_id": cid, "target_true": true, "rewrite": k}, where + "prompt"))
        templates.append(template)
        relations.append(rw.get("relation_id"))
    new, true = reqs[0].target_new, reqs[0].target_true
    assert true is not None
    for p in _text_list(rec, "paraphrase_prompts", allow_str=True):
        probes.append(make_probe(p, new, "paraphrase", {"case_id": cid, "target_true": true},
                             "paraphrase_prompts"))
    for p in _text_list(rec, "neighborhood_prompts", allow_str=True):
        probes.append(make_probe(p, true, "near", {"case_id": cid, "target_new": new, "target_true": true},
                             "neighborhood_prompts"))
    for p in _text_list(rec, "attribute_prompts", optional=True):
        probes.append(make_probe(p, new, "attribute", {"case_id": cid, "target_true": true},
                             "attribute_prompts"))
    for p in _text_list(rec, "generation_prompts", optional=True):
        probes.append(make_probe(p, new, "generation",
                             {"case_id": cid, "kind": "generation", "target_true": true},
                             "generation_prompts"))
    meta = {"dataset": "counterfact", "format": "rome", "index": index,
            "prompt_template": templates[0] if len(templates) == 1 else templates,
            "relation_id": relations[0] if len(relations) == 1 else relations}
    if "pararel_idx" in rec:
        meta["pararel_idx"] = rec["pararel_idx"]
    return EditCase(cid, reqs, ProbeSet(probes, name=f"counterfact:{cid}"), meta)


def _counterfact_record(rec: dict, index: int) -> EditCase:
    if "requested_rewrite" in rec:
        return _counterfact_rome(rec, index)
    if "prompt" in rec or "target_new" in rec:
        return _counterfact_mend(rec, index)
    raise RecordError("record has neither 'requested_rewrite' (ROME form) nor 'prompt' "
                      "(MEND/EasyEdit form)", field="requested_rewrite")


#: each dataset's file in ../shared/data (folder, file name)
DEFAULT_FILES = {"counterfact": ("counterfact", "counterfact-edit.json"), "zsre": ("zsre", "zsre_mend_train-1k.json"),
                 "mquake": ("mquake_hard", "MQuAKE-hard.json")}


def load_counterfact(source: str | Path | None = None, *, limit: int | None = None, offset: int = 0,
                     strict: bool = False, split: str = "train") -> EditDataset:
    """CounterFact, in either form, detected per record.

    * MEND/EasyEdit flattened form (the shared ``counterfact/counterfact-edit.json``): ``case_id,
      prompt, subject, target_new, ground_truth, rephrase_prompt, locality_prompt,
      locality_ground_truth`` (all required; the last three may also be lists). Probes:
      ``target`` 1, ``paraphrase`` per rephrase, ``near`` per locality prompt (target = its
      ``locality_ground_truth``).
    * ROME ``counterfact.json`` form: ``requested_rewrite{prompt with "{}", subject,
      target_new{str}, target_true{str}, relation_id}``, ``paraphrase_prompts``,
      ``neighborhood_prompts`` (required), ``attribute_prompts``, ``generation_prompts``
      (optional). ``near`` targets are the edit's ``target_true`` (ROME's convention: the
      neighbour subjects share the true attribute).

    The request gets ``subject`` and ``target_true``. ``split`` is used only for hub ids.
    """
    src, raws = resolve_source(source, lambda: data_path(*DEFAULT_FILES["counterfact"]), split)
    return load_records("counterfact", src, raws, limit, offset, strict, _counterfact_record)


# ----------------------------------------------------------------------------------------------
# zsRE


def _zsre_record(rec: dict, index: int) -> EditCase:
    cid = case_id_of(rec, index)
    src = text_field(rec, "src")
    alt = text_field(rec, "alt")
    answers = _text_list(rec, "answers", allow_str=True, allow_empty=False)
    true = answers[0]
    rephrases = _text_list(rec, "rephrase", allow_str=True)
    loc = text_field(rec, "loc")
    loc_ans = text_field(rec, "loc_ans")
    subject = text_field(rec, "subject", optional=True)
    meta: dict[str, Any] = {"dataset": "zsre", "index": index, "answers": answers}
    for k in ("pred", "cond"):
        if rec.get(k) is not None:
            meta[k] = rec[k]
    if subject is not None and subject not in src:
        meta["subject_note"] = f"subject {subject!r} does not occur in src; left unset"
        meta["subject_raw"] = subject
        subject = None
    elif subject is None:
        meta["subject_note"] = "record has no subject"
    req = make_request("", prompt=src, target_new=alt, subject=subject, target_true=true)
    probes = [make_probe(src, alt, "target", {"case_id": cid, "target_true": true}, "src")]
    probes += [make_probe(p, alt, "paraphrase", {"case_id": cid, "target_true": true}, "rephrase")
               for p in rephrases]
    probes.append(make_probe(loc, loc_ans, "near", {"case_id": cid, "target_new": alt, "target_true": loc_ans},
                         "loc"))
    return EditCase(cid, [req], ProbeSet(probes, name=f"zsre:{cid}"), meta)


def load_zsre(source: str | Path | None = None, *, limit: int | None = None, offset: int = 0,
              strict: bool = False, split: str = "train") -> EditDataset:
    """zsRE in the MEND form (``subject, src, pred, rephrase, alt, answers, loc, loc_ans, cond``).

    EasyEdit's convention: prompt = ``src``, target_new = ``alt``, target_true = ``answers[0]``;
    ``paraphrase`` = ``rephrase``; ``near`` = ``loc`` (verbatim, with its ``"nq question: "``
    prefix) whose target is ``loc_ans``. ``subject`` is used only when it occurs in ``src``;
    otherwise the request has no subject and ``meta["subject_note"]`` says why. ``case_id`` is
    the record index (the file has no ids) unless the record carries one.
    """
    src, raws = resolve_source(source, lambda: data_path(*DEFAULT_FILES["zsre"]), split)
    return load_records("zsre", src, raws, limit, offset, strict, _zsre_record)


# ----------------------------------------------------------------------------------------------
# MQuAKE


#: greedy tokens generated for a multi-hop question: room for a few words before the answer
MQUAKE_ANSWER_TOKENS = 16


def _mquake_record(rec: dict, index: int) -> EditCase:
    cid = case_id_of(rec, index)
    rewrites = _field(rec, "requested_rewrite")
    if isinstance(rewrites, dict):
        rewrites = [rewrites]
    if not isinstance(rewrites, list) or not rewrites:
        raise RecordError("field 'requested_rewrite' must be a non-empty list of rewrites",
                          field="requested_rewrite")
    questions = _text_list(rec, "questions", allow_str=True, allow_empty=False)
    new_answer = text_field(rec, "new_answer")
    # aliases are how MQuAKE scores an answer: a record without them cannot be scored as published
    new_aliases = _text_list(rec, "new_answer_alias")
    old_answer = text_field(rec, "answer", optional=True)
    old_aliases = _text_list(rec, "answer_alias", optional=True)

    reqs: list[EditRequest] = []
    probes: list[Probe] = []
    for k, rw in enumerate(rewrites):
        where = f"requested_rewrite[{k}]."
        template, prompt, req = _parse_rewrite(rw, where)
        new, true = req.target_new, req.target_true
        reqs.append(req)
        base = {"case_id": cid, "rewrite": k, "target_true": true}
        if rw.get("relation_id") is not None:
            base["relation_id"] = rw["relation_id"]
        probes.append(make_probe(prompt, new, "target", dict(base), where + "prompt"))
        question = text_field(rw, "question", where, optional=True)
        if question is not None:
            probes.append(make_probe(question, new, "paraphrase", dict(base), where + "question"))

    for q_i, q in enumerate(questions):
        probes.append(make_probe(q, new_answer, "portability",
                             {"case_id": cid, "question": q_i, "aliases": list(new_aliases),
                              "old_answer": old_answer, "answer_alias": list(old_aliases),
                              "gen_tokens": MQUAKE_ANSWER_TOKENS}, "questions"))

    hops = _field(rec, "new_single_hops") if "new_single_hops" in rec else []
    if not isinstance(hops, list):
        raise RecordError("field 'new_single_hops' must be a list", field="new_single_hops")
    old_hops = rec.get("single_hops") if isinstance(rec.get("single_hops"), list) else []
    for h_i, hop in enumerate(hops):
        where = f"new_single_hops[{h_i}]."
        if not isinstance(hop, dict):
            raise RecordError(f"field {where[:-1]!r} is {type(hop).__name__}, expected an object",
                              field=where[:-1])
        hop_q = text_field(hop, "question", where, optional=True)
        cloze = text_field(hop, "cloze", where, optional=True) or hop_q
        if cloze is None:
            raise RecordError(f"missing field {where + 'cloze'!r}", field=where + "cloze")
        ans = text_field(hop, "answer", where)
        meta = {"case_id": cid, "hop": h_i, "aliases": _text_list(hop, "answer_alias", where),
                "question": hop_q}
        if h_i < len(old_hops) and isinstance(old_hops[h_i], dict):
            meta["old_answer"] = old_hops[h_i].get("answer")
            meta["old_aliases"] = old_hops[h_i].get("answer_alias", [])
        probes.append(make_probe(cloze, ans, "portability-hop", meta, where + "cloze"))

    meta = {"dataset": "mquake", "index": index, "n_rewrites": len(reqs), "new_answer": new_answer,
            "new_answer_alias": new_aliases, "answer": old_answer, "answer_alias": old_aliases}
    if isinstance(rec.get("orig"), dict):
        meta["orig"] = rec["orig"]
    return EditCase(cid, reqs, ProbeSet(probes, name=f"mquake:{cid}"), meta)


def load_mquake(source: str | Path | None = None, *, limit: int | None = None, offset: int = 0,
                strict: bool = False, split: str = "train") -> EditDataset:
    """MQuAKE (official format; default: the shared ``mquake_hard/MQuAKE-hard.json``).

    One case per instance, all its ``requested_rewrite`` entries as requests (apply them
    together). Probes: ``target`` per rewrite (template filled with the subject), ``paraphrase``
    per rewrite ``question``, ``portability`` per multi-hop question (target ``new_answer``,
    ``meta["aliases"]`` = ``new_answer_alias``, ``meta["old_answer"]``/``["answer_alias"]``),
    ``portability-hop`` per ``new_single_hops`` cloze (target = that hop's new answer,
    ``meta["hop"]``, ``meta["aliases"]``, and the pre-edit answer of the same hop when
    ``single_hops`` is present). Score them with :func:`answer_matches` and the accuracy helpers.
    """
    src, raws = resolve_source(source, lambda: data_path(*DEFAULT_FILES["mquake"]), split)
    return load_records("mquake", src, raws, limit, offset, strict, _mquake_record)


# ----------------------------------------------------------------------------------------------
# Plain JSONL

_EDIT_KEYS = ("target_new", "subject", "target_true", "paraphrases", "neighbours", "neighbors", "near",
              "portability")


def _jsonl_neighbours(rec: dict, cid: str, new: str, true: str | None) -> list[Probe]:
    out: list[Probe] = []
    for key in ("neighbours", "neighbors", "near"):
        items = rec.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise RecordError(f"field {key!r} must be a list of {{prompt, target}}", field=key)
        for i, it in enumerate(items):
            fld = f"{key}[{i}]"
            if isinstance(it, str):
                if true is None:
                    raise RecordError(f"field {fld} is a bare prompt but the record has no target_true "
                                      "to use as its answer; give {prompt, target}", field=fld)
                prompt, target = it, true
            elif isinstance(it, dict):
                prompt = text_field(it, "prompt", fld + ".")
                target = text_field(it, "target", fld + ".")
            else:
                raise RecordError(f"field {fld} is {type(it).__name__}, expected {{prompt, target}}",
                                  field=fld)
            out.append(make_probe(prompt, target, "near",
                              {"case_id": cid, "target_new": new, "target_true": target}, fld))
    return out


def _jsonl_edit(rec: dict, index: int, raw_label: str) -> EditCase:
    cid = case_id_of(rec, index)
    prompt = text_field(rec, "prompt")
    if rec.get("target_new") is not None:
        new = text_field(rec, "target_new")
    elif rec.get("target") is not None:
        new = text_field(rec, "target")
    else:
        raise RecordError("missing field 'target_new' (or 'target')", field="target_new")
    subject = text_field(rec, "subject", optional=True)
    true = text_field(rec, "target_true", optional=True)
    sep = rec.get("sep")
    if sep is not None and not isinstance(sep, str):
        raise RecordError("field 'sep' must be a string", field="sep")
    req = make_request("", prompt=prompt, target_new=new, subject=subject, target_true=true, sep=sep)
    probes = [make_probe(prompt, new, "target", {"case_id": cid, "target_true": true}, "prompt")]
    probes += [make_probe(p, new, "paraphrase", {"case_id": cid, "target_true": true}, "paraphrases")
               for p in _text_list(rec, "paraphrases", optional=True, allow_str=True)]
    probes += _jsonl_neighbours(rec, cid, new, true)
    port = rec.get("portability")
    if port is not None:
        if not isinstance(port, list):
            raise RecordError("field 'portability' must be a list of {prompt, target, aliases?}",
                              field="portability")
        for i, it in enumerate(port):
            fld = f"portability[{i}]"
            if not isinstance(it, dict):
                raise RecordError(f"field {fld} is {type(it).__name__}, expected an object", field=fld)
            probes.append(make_probe(text_field(it, "prompt", fld + "."), text_field(it, "target", fld + "."),
                                 "portability",
                                 {"case_id": cid, "aliases": _text_list(it, "aliases", fld + ".",
                                                                        optional=True)}, fld))
    meta: dict[str, Any] = {"dataset": "jsonl", "index": index, "record": raw_label}
    if rec.get("category") is not None:
        meta["category"] = rec["category"]
    if isinstance(rec.get("meta"), dict):
        meta.update(rec["meta"])
    return EditCase(cid, [req], ProbeSet(probes, name=f"jsonl:{cid}"), meta)


def _jsonl_probe(rec: dict, raw_label: str) -> Probe:
    prompt = text_field(rec, "prompt")
    target = text_field(rec, "target")
    category = rec.get("category", "general")
    if not isinstance(category, str) or not category:
        raise RecordError(f"field 'category' is {category!r}, expected a non-empty string",
                          field="category")
    meta: dict[str, Any] = dict(rec["meta"]) if isinstance(rec.get("meta"), dict) else {}
    meta.update({"case_id": "probes", "record": raw_label})
    sep = rec.get("sep")
    try:
        return Probe(prompt=prompt, target=target, category=category, meta=meta, sep=sep)
    except (TypeError, ValueError) as e:
        raise RecordError(f"invalid probe: {e}", field="prompt") from e


def load_jsonl(source: str | Path, *, limit: int | None = None, offset: int = 0,
               strict: bool = False, split: str = "train") -> EditDataset:
    """Plain JSONL, one object per line (blank lines ignored; a JSON array file is accepted too).

    Two kinds of record, told apart by their keys (or an explicit ``"kind": "edit"|"probe"``):

    * edit record: ``{prompt, target_new (or target), subject?, target_true?, sep?,
      paraphrases?: [str], neighbours?/neighbors?/near?: [{prompt, target}] (a bare string prompt
      takes target_true as its answer), portability?: [{prompt, target, aliases?}], category?,
      case_id?, meta?}`` -> one :class:`EditCase` (``category`` and ``meta`` go to the case meta);
      a record is an edit record when it has any of ``target_new, subject, target_true,
      paraphrases, neighbours, near, portability``;
    * probe-only record: ``{prompt, target, category? (default "general"), sep?, meta?}`` -> all
      collected, in order, into one case with no requests, ``case_id="probes"``, placed last.

    ``limit``/``offset`` count non-blank lines. A line that is not valid JSON is skipped (or
    raises with ``strict=True``) and named by its 1-based line number.
    """
    if source is None:
        raise TypeError("load_jsonl needs a source: the path of a JSONL file (or a hub dataset id)")
    src, raws = resolve_source(source, _no_default, split, prefer_jsonl=True)
    probe_only: list[Probe] = []
    probe_lines: list[str] = []

    def parse(rec: dict, index: int) -> EditCase | None:
        raw_label = raws[index].label
        kind = rec.get("kind")
        if kind is None:
            kind = "edit" if any(rec.get(k) is not None for k in _EDIT_KEYS) else "probe"
        if kind == "edit":
            return _jsonl_edit(rec, index, raw_label)
        if kind == "probe":
            probe_only.append(_jsonl_probe(rec, raw_label))
            probe_lines.append(raw_label)
            return None
        raise RecordError(f"field 'kind' is {kind!r}, expected 'edit' or 'probe'", field="kind")

    ds = load_records("jsonl", src, raws, limit, offset, strict, parse)
    if probe_only:
        ds.cases.append(EditCase("probes", [], ProbeSet(probe_only, name="jsonl:probes"),
                                 {"dataset": "jsonl", "kind": "probes", "records": probe_lines}))
    return ds


def _no_default() -> Path:  # pragma: no cover - load_jsonl rejects source=None first
    raise TypeError("load_jsonl needs a source")


# ----------------------------------------------------------------------------------------------
# Suite registration: each loader is also a suite whose factory returns the flat ProbeSet
# (``get_suite("counterfact", limit=100)``); edits come from ``load_X(...).requests()``.


def suite_factory(loader: Callable[..., EditDataset], name: str) -> Callable[..., ProbeSet]:
    def factory(source: str | Path | None = None, *, limit: int | None = None, offset: int = 0,
                strict: bool = False, **kwargs: Any) -> ProbeSet:
        return loader(source, limit=limit, offset=offset, strict=strict, **kwargs).probes()

    factory.__name__ = f"{name}_suite"
    factory.__doc__ = f"The probes of :func:`{loader.__name__}` as one ProbeSet (same arguments)."
    return factory


#: edit datasets by name (study files' ``edits: [{dataset: NAME}]``, ``editscope trace --dataset``)
EDIT_DATASETS: Registry[Callable[..., EditDataset]] = Registry("edit dataset", {
    "counterfact": load_counterfact, "zsre": load_zsre, "mquake": load_mquake, "jsonl": load_jsonl})


def load_edit_dataset(name: str, source: str | Path | None = None, *, limit: int | None = None,
                      offset: int = 0) -> EditDataset:
    """The edit dataset ``name`` (one of :data:`EDIT_DATASETS`) from ``source`` (default: its file
    under ../shared/data, or the hub when online)."""
    loader = EDIT_DATASETS[name]  # an unknown name: UnknownNameError with the nearest
    if loader is load_jsonl and source is None:
        raise RecordError("the jsonl dataset needs a source (a .jsonl path)")
    return loader(source, limit=limit, offset=offset)


def _register_suites() -> None:
    for name, loader, desc in (
        ("counterfact", load_counterfact,
         "CounterFact (MEND/EasyEdit or ROME form): target/paraphrase/near[/attribute/generation]"),
        ("zsre", load_zsre, "zsRE (MEND form): target/paraphrase/near (nq questions)"),
        ("mquake", load_mquake,
         "MQuAKE: target/paraphrase per rewrite, portability (multi-hop), portability-hop"),
        ("jsonl", load_jsonl, "plain JSONL edit or probe records (source= a .jsonl path)"),
    ):
        register_suite(name, desc, suite_factory(loader, name), needs_edit=False, overwrite=True)


_register_suites()
