"""Plain JSONL: one edit (with its own probes) or one probe per line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...requests import Probe, ProbeSet
from .records import (register_dataset, EditCase, EditDataset, RecordError, case_id_of, load_records, make_probe,
                      make_request, resolve_source, text_field, text_list)


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
               for p in text_list(rec, "paraphrases", optional=True, allow_str=True)]
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
                                 {"case_id": cid, "aliases": text_list(it, "aliases", fld + ".",
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


@register_dataset("jsonl", "plain JSONL edit or probe records (source= a .jsonl path)")
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
