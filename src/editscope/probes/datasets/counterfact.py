"""CounterFact in both published forms (ROME's ``counterfact.json`` and the MEND/EasyEdit flattened
form), detected per record.
"""

from __future__ import annotations

from pathlib import Path

from ...data.fetch import data_path
from ...requests import EditRequest, Probe, ProbeSet
from .records import (register_dataset, EditCase, EditDataset, RecordError, case_id_of, field_value, load_records, make_probe, make_request,
                      parse_rewrite, resolve_source, text_field, text_list)


#: the dataset's file under the data folder (folder, file name)
DEFAULT_FILE = ('counterfact', 'counterfact-edit.json')


def _counterfact_mend(rec: dict, index: int) -> EditCase:
    """MEND/EasyEdit flattened form (``counterfact-edit.json``)."""
    cid = case_id_of(rec, index)
    prompt = text_field(rec, "prompt")
    subject = text_field(rec, "subject")
    new = text_field(rec, "target_new")
    true = text_field(rec, "ground_truth")
    rephrases = text_list(rec, "rephrase_prompt", allow_str=True)
    loc_prompts = text_list(rec, "locality_prompt", allow_str=True)
    loc_truths = text_list(rec, "locality_ground_truth", allow_str=True)
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
    rw_field = field_value(rec, "requested_rewrite")
    rewrites = rw_field if isinstance(rw_field, list) else [rw_field]
    if not rewrites:
        raise RecordError("field 'requested_rewrite' is an empty list", field="requested_rewrite")
    reqs: list[EditRequest] = []
    probes: list[Probe] = []
    templates, relations = [], []
    for k, rw in enumerate(rewrites):
        where = "requested_rewrite." if len(rewrites) == 1 else f"requested_rewrite[{k}]."
        template, prompt, req = parse_rewrite(rw, where)
        new, true = req.target_new, req.target_true
        reqs.append(req)
        probes.append(make_probe(prompt, new, "target",
                             {"case_id": cid, "target_true": true, "rewrite": k}, where + "prompt"))
        templates.append(template)
        relations.append(rw.get("relation_id"))
    new, true = reqs[0].target_new, reqs[0].target_true
    assert true is not None
    for p in text_list(rec, "paraphrase_prompts", allow_str=True):
        probes.append(make_probe(p, new, "paraphrase", {"case_id": cid, "target_true": true},
                             "paraphrase_prompts"))
    for p in text_list(rec, "neighborhood_prompts", allow_str=True):
        probes.append(make_probe(p, true, "near", {"case_id": cid, "target_new": new, "target_true": true},
                             "neighborhood_prompts"))
    for p in text_list(rec, "attribute_prompts", optional=True):
        probes.append(make_probe(p, new, "attribute", {"case_id": cid, "target_true": true},
                             "attribute_prompts"))
    for p in text_list(rec, "generation_prompts", optional=True):
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


@register_dataset("counterfact", "CounterFact (MEND/EasyEdit or ROME form): target/paraphrase/near[/attribute/generation]")
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
    src, raws = resolve_source(source, lambda: data_path(*DEFAULT_FILE), split)
    return load_records("counterfact", src, raws, limit, offset, strict, _counterfact_record)
