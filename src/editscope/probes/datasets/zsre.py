"""zsRE in the MEND form: target, paraphrase and near (nq questions) probes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...data.fetch import data_path
from ...requests import ProbeSet
from .records import (register_dataset, EditCase, EditDataset, case_id_of, load_records, make_probe, make_request,
                      resolve_source, text_field, text_list)


#: the dataset's file under the data folder (folder, file name)
DEFAULT_FILE = ('zsre', 'zsre_mend_train-1k.json')


def _zsre_record(rec: dict, index: int) -> EditCase:
    cid = case_id_of(rec, index)
    src = text_field(rec, "src")
    alt = text_field(rec, "alt")
    answers = text_list(rec, "answers", allow_str=True, allow_empty=False)
    true = answers[0]
    rephrases = text_list(rec, "rephrase", allow_str=True)
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


@register_dataset("zsre", "zsRE (MEND form): target/paraphrase/near (nq questions)")
def load_zsre(source: str | Path | None = None, *, limit: int | None = None, offset: int = 0,
              strict: bool = False, split: str = "train") -> EditDataset:
    """zsRE in the MEND form (``subject, src, pred, rephrase, alt, answers, loc, loc_ans, cond``).

    EasyEdit's convention: prompt = ``src``, target_new = ``alt``, target_true = ``answers[0]``;
    ``paraphrase`` = ``rephrase``; ``near`` = ``loc`` (verbatim, with its ``"nq question: "``
    prefix) whose target is ``loc_ans``. ``subject`` is used only when it occurs in ``src``;
    otherwise the request has no subject and ``meta["subject_note"]`` says why. ``case_id`` is
    the record index (the file has no ids) unless the record carries one.
    """
    src, raws = resolve_source(source, lambda: data_path(*DEFAULT_FILE), split)
    return load_records("zsre", src, raws, limit, offset, strict, _zsre_record)
