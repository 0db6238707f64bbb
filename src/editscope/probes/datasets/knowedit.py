"""KnowEdit (Zhang et al., 2024) in its published JSON forms, as edit cases with typed probes.

Sub-formats (``subset=``, or detected from the first record), with the fields each record needs:

| subset | edit | probes |
|---|---|---|
| ``zsre`` | ``subject, prompt, target_new`` (+ ``ground_truth``) | ``rephrase_prompt`` -> paraphrase; ``portability``; ``locality`` |
| ``wiki_recent`` | ``subject, prompt, target_new`` | ``portability``; ``locality`` |
| ``wiki_counterfact`` | ``subject, prompt, target_new, ground_truth`` | ``portability``; ``locality`` |
| ``wikibio`` | ``concept`` (subject), ``text`` (prompt), ``labels`` (target) | ``locality`` |
| ``convsent`` | ``ent``, ``pos`` or ``neg`` (lists of sentences) | - |
| ``sanitation`` | an object ``{"K_F": [...], "K_R": [...]}`` of ``{question, ground_truth, target_new}`` items | ``K_R`` -> locality |

``portability`` is an object of typed lists: ``{"Reasoning": [...], "Subject_Aliasing": [...],
"Logical_Generalization": [...]}``, each item ``{prompt, ground_truth}``; ``locality`` likewise
(``Relation_Specificity``, ``Forgetfulness``). A ``ground_truth`` is a string, a list of strings, or
a list of alias lists (``[["Paris", "City of Light"]]``): the first string is the probe's target,
the rest its aliases (``meta["aliases"]``). Probe categories: ``target``, ``paraphrase``,
``portability`` (``meta["portability_type"]``: ``reasoning``, ``subject_aliasing``,
``logical_generalization``; EasyEdit's portability set's ``Subject_Replace``, ``Reversed_Relation``
and ``One_Hop`` give ``subject_replace``, ``reversed_relation``, ``one_hop``), ``near`` (``meta["locality_type"]``: ``relation_specificity``,
``forgetfulness``). An untyped portability or locality list is refused: the survey's measures are
per type.

ConvSent: the edit asks the model's opinion of ``ent`` ("What do you think of {ent}?") and targets
the first ``pos`` sentence (``sentiment="positive"``, default) or ``neg``; Sanitation: each ``K_F``
item is an edit (``question`` -> ``target_new``, e.g. "I don't know."), and the ``K_R`` items are
locality probes, dealt round-robin to the edits (item ``j`` to edit ``j mod n``).

With a network, ``source="zjunlp/KnowEdit:benchmark/ZsRE/ZsRE-test-all.json"`` (a hub dataset
repository, a colon, a file in it) downloads that published file into the Hugging Face cache and
reads it; offline, pass the JSON path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...requests import Probe, ProbeSet
from .records import (EditCase, EditDataset, RawRecord, RecordError, case_id_of, is_offline, load_records, make_probe,
                      make_request, register_dataset, resolve_source, text_field)

SUBSETS = ("zsre", "wiki_recent", "wiki_counterfact", "wikibio", "convsent", "sanitation")
#: the fields that identify each sub-format (checked in this order when detecting)
REQUIRED = {"wikibio": ("concept", "text", "labels"), "convsent": ("ent",),
            "zsre": ("subject", "prompt", "target_new", "rephrase_prompt"),
            "wiki_counterfact": ("subject", "prompt", "target_new", "ground_truth"),
            "wiki_recent": ("subject", "prompt", "target_new")}
#: KnowEdit's portability keys, and those of EasyEdit's portability set (the survey's sub-types)
PORTABILITY_TYPES = {"Reasoning": "reasoning", "Subject_Aliasing": "subject_aliasing",
                     "Logical_Generalization": "logical_generalization", "Subject_Replace": "subject_replace",
                     "Reversed_Relation": "reversed_relation", "One_Hop": "one_hop"}
LOCALITY_TYPES = {"Relation_Specificity": "relation_specificity", "Forgetfulness": "forgetfulness"}


def _answers(v: Any, where: str) -> list[str]:
    """A ground truth as ``[target, *aliases]``: a string, a list of strings, or alias lists."""
    flat: list[str] = []
    items = v if isinstance(v, list) else [v]
    for x in items:
        for y in (x if isinstance(x, list) else [x]):
            if isinstance(y, str) and y.strip() and y not in flat:
                flat.append(y)
    if not flat:
        raise RecordError(f"field {where!r} has no answer text (got {json.dumps(v)[:80]})", field=where)
    return flat


def _typed(rec: dict, key: str, types: dict[str, str], category: str, cid: str, **meta: Any) -> list[Probe]:
    """The probes of a typed portability/locality object."""
    v = rec.get(key)
    if v is None or v == {} or v == []:
        return []
    if not isinstance(v, dict):
        raise RecordError(f"field {key!r} is a {type(v).__name__} without types; expected an object of typed lists "
                          f"{{{', '.join(f'{t!r}: [...]' for t in types)}}}", field=key)
    out = []
    for name, items in v.items():
        if name not in types:
            raise RecordError(f"field '{key}.{name}': unknown {key} type; expected one of {', '.join(types)}",
                              field=f"{key}.{name}")
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            raise RecordError(f"field '{key}.{name}' must be a list of {{prompt, ground_truth}}", field=f"{key}.{name}")
        for j, item in enumerate(items):
            where = f"{key}.{name}[{j}]"
            if not isinstance(item, dict):
                raise RecordError(f"field {where!r} must be an object {{prompt, ground_truth}}", field=where)
            prompts = item.get("prompt")
            prompts = prompts if isinstance(prompts, list) else [prompts]
            answers = _answers(item.get("ground_truth"), where + ".ground_truth")
            for k, p in enumerate(prompts):
                if not isinstance(p, str) or not p.strip():
                    raise RecordError(f"field '{where}.prompt' must be non-empty text", field=where + ".prompt")
                type_key = "portability_type" if category == "portability" else "locality_type"
                out.append(make_probe(p, answers[0], category,
                                  {"case_id": cid, type_key: types[name], "aliases": answers[1:], **meta},
                                  f"{where}.prompt"))
    return out


def detect_subset(rec: Any) -> str:
    """The sub-format of one record (see the module table)."""
    if isinstance(rec, dict) and ("K_F" in rec or "K_R" in rec):
        return "sanitation"
    if isinstance(rec, dict):
        for name, fields in REQUIRED.items():
            if all(f in rec for f in fields):
                return name
    have = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
    raise RecordError("not a KnowEdit record: expected the fields of one sub-format: " + "; ".join(
        f"{n}: {', '.join(f)}" for n, f in REQUIRED.items()) + f"; sanitation: K_F, K_R. Got {have}")


def _check_fields(rec: dict, subset: str) -> None:
    missing = [f for f in REQUIRED[subset] if f not in rec]
    if missing:
        raise RecordError(f"not a KnowEdit {subset} record: missing {', '.join(repr(f) for f in missing)} "
                          f"(a {subset} record has {', '.join(REQUIRED[subset])}; have {', '.join(sorted(rec))})",
                          field=missing[0])


def _fact_record(rec: dict, index: int, subset: str) -> EditCase:
    _check_fields(rec, subset)
    cid = case_id_of(rec, index)
    if subset == "wikibio":
        subject, prompt, new = text_field(rec, "concept"), text_field(rec, "text"), text_field(rec, "labels")
        true = None
    else:
        subject, prompt, new = text_field(rec, "subject"), text_field(rec, "prompt"), text_field(rec, "target_new")
        gt = rec.get("ground_truth")
        true = _answers(gt, "ground_truth")[0] if gt not in (None, "", [], "<|endoftext|>") else None
    subj = subject if subject and subject in prompt else None
    req = make_request("", prompt=prompt, target_new=new, subject=subj, target_true=true)
    base = {"case_id": cid, **({"target_true": true} if true else {})}
    probes = [make_probe(prompt, new, "target", dict(base), "prompt")]
    rephrase = rec.get("rephrase_prompt") or rec.get("rephrase")
    for p in (rephrase if isinstance(rephrase, list) else [rephrase] if rephrase else []):
        probes.append(make_probe(p, new, "paraphrase", dict(base), "rephrase_prompt"))
    probes += _typed(rec, "portability", PORTABILITY_TYPES, "portability", cid)
    probes += _typed(rec, "locality", LOCALITY_TYPES, "near", cid, target_new=new)
    meta = {"dataset": f"knowedit-{subset}", "index": index, "subject": subject}
    if subj is None:
        meta["subject_note"] = f"subject {subject!r} does not occur in the prompt; left unset"
    return EditCase(cid, [req], ProbeSet(probes, name=f"knowedit-{subset}:{cid}"), meta)


def _convsent_record(rec: dict, index: int, sentiment: str) -> EditCase:
    _check_fields(rec, "convsent")
    cid = case_id_of(rec, index)
    ent = text_field(rec, "ent")
    side = "pos" if sentiment == "positive" else "neg"
    sents = rec.get(side)
    if not isinstance(sents, list) or not sents or not isinstance(sents[0], str) or not sents[0].strip():
        raise RecordError(f"field {side!r} must be a non-empty list of sentences (the {sentiment} targets)", field=side)
    prompt = f"What do you think of {ent}?"
    req = make_request("", prompt=prompt, target_new=sents[0], subject=ent)
    probes = [make_probe(prompt, sents[0], "target", {"case_id": cid, "sentiment": sentiment}, side)]
    return EditCase(cid, [req], ProbeSet(probes, name=f"knowedit-convsent:{cid}"),
                    {"dataset": "knowedit-convsent", "index": index, "sentiment": sentiment})


def _sanitation_raws(doc: Any, source: str) -> tuple[list[RawRecord], list[dict]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("K_F"), list):
        raise RecordError(f"{source}: not a KnowEdit sanitation file: expected an object with lists 'K_F' (to forget) "
                          "and 'K_R' (to retain)", field="K_F")
    retain = doc.get("K_R") or []
    if not isinstance(retain, list):
        raise RecordError(f"{source}: field 'K_R' must be a list", field="K_R")
    return [RawRecord(f"K_F[{i}]", i, obj) for i, obj in enumerate(doc["K_F"])], retain


def _sanitation_record(rec: dict, index: int, retain: list, n_forget: int) -> EditCase:
    cid = case_id_of(rec, index)
    q, new = text_field(rec, "question"), text_field(rec, "target_new")
    true = _answers(rec["ground_truth"], "ground_truth")[0] if rec.get("ground_truth") else None
    req = make_request("", prompt=q, target_new=new, target_true=true)
    probes = [make_probe(q, new, "target", {"case_id": cid, **({"target_true": true} if true else {})}, "question")]
    for j in range(index, len(retain), max(n_forget, 1)):
        item = retain[j]
        where = f"K_R[{j}]"
        if not isinstance(item, dict):
            raise RecordError(f"field {where!r} must be an object {{question, ground_truth}}", field=where)
        ans = _answers(item.get("ground_truth"), where + ".ground_truth")
        probes.append(make_probe(text_field(item, "question", where + "."), ans[0], "near",
                             {"case_id": cid, "locality_type": "retain", "aliases": ans[1:]}, where))
    return EditCase(cid, [req], ProbeSet(probes, name=f"knowedit-sanitation:{cid}"),
                    {"dataset": "knowedit-sanitation", "index": index})


def _hub_file(source: str) -> Path:
    """``"owner/name:path/in/repo.json"``: that file of a hub dataset repository, downloaded (cached)."""
    repo, _, filename = source.partition(":")
    if not repo.count("/") == 1 or not filename:
        raise RecordError(f"source {source!r}: give a JSON path, or a hub file as 'owner/name:path/in/repo.json' "
                          "(e.g. 'zjunlp/KnowEdit:benchmark/ZsRE/ZsRE-test-all.json')", field="source")
    if is_offline():
        raise RecordError(f"source {source!r} names a hub file, but HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set: "
                          "download it once with a network, or pass the path of a local copy", field="source")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo, filename, repo_type="dataset"))


@register_dataset("knowedit", "KnowEdit JSON (ZsRE, WikiData_recent/counterfact, WikiBio, ConvSent, Sanitation): "
                  "target/paraphrase/portability (typed)/near (typed)")
def load_knowedit(source: str | Path, *, subset: str | None = None, limit: int | None = None, offset: int = 0,
                  strict: bool = False, split: str = "train", sentiment: str = "positive") -> EditDataset:
    """A KnowEdit file (see the module docstring for the sub-formats). ``subset`` forces one (a record
    without its fields is then refused naming the fields expected); by default it is detected from
    the first record. Records that do not fit are skipped and listed in the report (``strict``:
    the first one raises)."""
    if subset is not None and subset not in SUBSETS:
        raise RecordError(f"subset={subset!r}: expected one of {', '.join(SUBSETS)}", field="subset")
    if sentiment not in ("positive", "negative"):
        raise RecordError(f"sentiment={sentiment!r}: expected 'positive' or 'negative'", field="sentiment")
    if source is None:
        raise RecordError("KnowEdit is not in ../shared/data: pass the JSON file (or, online, a published file "
                          "as 'zjunlp/KnowEdit:benchmark/ZsRE/ZsRE-test-all.json')", field="source")
    p = Path(str(source)).expanduser()
    if not p.exists() and ":" in str(source):
        p = _hub_file(str(source))
        source = p
    if (subset == "sanitation" or subset is None) and p.is_file():
        doc = json.loads(p.read_text())
        if isinstance(doc, dict) and "K_F" in doc:
            raws, retain = _sanitation_raws(doc, str(p))
            return load_records("knowedit-sanitation", str(p), raws, limit, offset, strict,
                        lambda rec, i: _sanitation_record(rec, i, retain, len(raws)))
    src, raws = resolve_source(source, lambda: p, split)
    if subset == "sanitation":
        raise RecordError(f"{src}: not a KnowEdit sanitation file: expected an object with lists 'K_F' and 'K_R'",
                          field="K_F")
    if subset is None:
        first = next((r.obj for r in raws if isinstance(r.obj, dict)), None)
        subset = detect_subset(first)
    name = f"knowedit-{subset}"
    if subset == "convsent":
        return load_records(name, src, raws, limit, offset, strict, lambda rec, i: _convsent_record(rec, i, sentiment))
    return load_records(name, src, raws, limit, offset, strict, lambda rec, i, s=subset: _fact_record(rec, i, s))


__all__ = ["LOCALITY_TYPES", "PORTABILITY_TYPES", "REQUIRED", "SUBSETS", "detect_subset", "load_knowedit"]
