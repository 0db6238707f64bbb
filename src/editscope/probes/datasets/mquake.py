"""MQuAKE: rewrites with paraphrases, multi-hop portability questions and single-hop cloze prompts."""

from __future__ import annotations

from pathlib import Path

from ...data.fetch import data_path
from ...requests import EditRequest, Probe, ProbeSet
from .records import (register_dataset, EditCase, EditDataset, RecordError, case_id_of, field_value, load_records,
                      make_probe, parse_rewrite, resolve_source, text_field, text_list)


#: the dataset's file under the data folder (folder, file name)
DEFAULT_FILE = ('mquake_hard', 'MQuAKE-hard.json')


MQUAKE_ANSWER_TOKENS = 16


def _mquake_record(rec: dict, index: int) -> EditCase:
    cid = case_id_of(rec, index)
    rewrites = field_value(rec, "requested_rewrite")
    if isinstance(rewrites, dict):
        rewrites = [rewrites]
    if not isinstance(rewrites, list) or not rewrites:
        raise RecordError("field 'requested_rewrite' must be a non-empty list of rewrites",
                          field="requested_rewrite")
    questions = text_list(rec, "questions", allow_str=True, allow_empty=False)
    new_answer = text_field(rec, "new_answer")
    # aliases are how MQuAKE scores an answer: a record without them cannot be scored as published
    new_aliases = text_list(rec, "new_answer_alias")
    old_answer = text_field(rec, "answer", optional=True)
    old_aliases = text_list(rec, "answer_alias", optional=True)

    reqs: list[EditRequest] = []
    probes: list[Probe] = []
    for k, rw in enumerate(rewrites):
        where = f"requested_rewrite[{k}]."
        template, prompt, req = parse_rewrite(rw, where)
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

    hops = field_value(rec, "new_single_hops") if "new_single_hops" in rec else []
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
        meta = {"case_id": cid, "hop": h_i, "aliases": text_list(hop, "answer_alias", where),
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


@register_dataset("mquake", "MQuAKE: target/paraphrase per rewrite, portability (multi-hop), portability-hop")
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
    src, raws = resolve_source(source, lambda: data_path(*DEFAULT_FILE), split)
    return load_records("mquake", src, raws, limit, offset, strict, _mquake_record)
