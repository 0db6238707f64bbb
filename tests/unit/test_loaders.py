"""Dataset loaders on the real shared data (no model is loaded here)."""

import json
import logging

import pytest

from editscope import EditRequest, ProbeSet
from editscope.data.fetch import data_path
from editscope.metrics.multihop import (answer_matches, edit_wise_accuracy, instance_wise_accuracy, multi_hop_accuracy,
                                        normalize_answer)
from editscope.probes.datasets import EditCase, EditDataset, LoadReport, RecordError, load_counterfact, load_jsonl, load_mquake, load_zsre

CF_FILE = ("counterfact", "counterfact-edit.json")
ZSRE_FILE = ("zsre", "zsre_mend_train-1k.json")
MQ_FILE = ("mquake_hard", "MQuAKE-hard.json")


def _n_records(*parts):
    return len(json.loads(data_path(*parts).read_text()))


@pytest.fixture(scope="module")
def counterfact():
    return load_counterfact()


# ---------------------------------------------------------------- CounterFact (MEND form, shared)


def test_counterfact_loads_all_records(counterfact):
    assert _n_records(*CF_FILE) == 10_000  # PROVENANCE: counterfact-edit.json = 10,000
    assert len(counterfact) == 10_000
    rep = counterfact.report
    assert (rep.n_records, rep.n_loaded, rep.skipped) == (10_000, 10_000, [])
    assert rep.summary().startswith("loaded 10000 of 10000 records from ")
    assert counterfact.probes().counts() == {"target": 10_000, "paraphrase": 10_000, "near": 10_000}
    assert len(counterfact.requests()) == 10_000


def test_counterfact_first_record_mapping(counterfact):
    case = counterfact[0]
    assert isinstance(case, EditCase) and case.case_id == "0"
    (req,) = case.requests
    assert req == EditRequest("The mother tongue of Danielle Darrieux is", "English",
                              subject="Danielle Darrieux", target_true="French")
    assert req.continuation == " English"
    t, = case.probes.by_category("target")
    assert (t.prompt, t.target, t.meta["target_true"]) == (req.prompt, "English", "French")
    para, = case.probes.by_category("paraphrase")
    assert para.prompt == "Where Danielle Darrieux is from, people speak the language of"
    assert para.target == "English" and para.meta["target_true"] == "French"
    near, = case.probes.by_category("near")
    assert near.prompt == "Michel Rocard is a native speaker of"
    assert near.target == "French" and near.meta["target_new"] == "English"
    assert all(p.meta["case_id"] == "0" for p in case.probes)


def test_dataset_probes_and_slicing(counterfact):
    head = counterfact[:3]
    assert isinstance(head, EditDataset) and len(head) == 3
    ps = head.probes()
    assert isinstance(ps, ProbeSet) and len(ps) == 9
    assert [p.meta["case_id"] for p in ps] == [c.case_id for c in head for _ in range(3)]


def test_limit_and_offset():
    ds = load_counterfact(limit=5, offset=10)
    full_ids = [str(r["case_id"]) for r in json.loads(data_path(*CF_FILE).read_text())[10:15]]
    assert [c.case_id for c in ds] == full_ids
    assert (ds.report.n_records, ds.report.n_loaded, ds.report.offset) == (5, 5, 10)
    assert "records 10..14 of 10000" in ds.report.summary()
    assert len(load_zsre(limit=0)) == 0
    assert len(load_mquake(offset=214)) == 1
    with pytest.raises(ValueError, match="offset"):
        load_zsre(offset=-1)


def _corrupt_copy(tmp_path, parts, n, mutate):
    recs = json.loads(data_path(*parts).read_text())[:n]
    mutate(recs)
    p = tmp_path / parts[-1]
    p.write_text(json.dumps(recs))
    return p


def test_counterfact_corrupted_record_skipped_and_reported(tmp_path, caplog):
    def mutate(recs):
        del recs[2]["ground_truth"]
        recs[4]["subject"] = "Nobody In The Prompt"
    p = _corrupt_copy(tmp_path, CF_FILE, 6, mutate)
    with caplog.at_level(logging.WARNING, logger="editscope.probes.datasets.records"):
        ds = load_counterfact(p)
    assert len(ds) == 4 and ds.report.n_records == 6 and ds.report.n_loaded == 4
    (lab2, why2), (lab4, why4) = ds.report.skipped
    assert lab2.startswith("record 2") and "ground_truth" in why2
    assert lab4.startswith("record 4") and "subject" in why4
    s = ds.report.summary()
    assert "loaded 4 of 6 records" in s and "skipped 2" in s and "record 2" in s
    assert any("skipped 2" in r.getMessage() for r in caplog.records)

    with pytest.raises(ValueError, match=r"record 2.*ground_truth") as ei:
        load_counterfact(p, strict=True)
    assert isinstance(ei.value, RecordError) and ei.value.field == "ground_truth"
    # strict with the bad records outside the window is fine
    assert len(load_counterfact(p, strict=True, limit=2)) == 2


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("this is not json")
    with pytest.raises(ValueError, match=r"bad\.json.*not JSON or JSONL"):
        load_counterfact(bad)
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"case_id": 0}))
    with pytest.raises(ValueError, match=r"obj\.json.*expected a JSON array"):
        load_zsre(obj)
    empty = tmp_path / "empty.json"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        load_mquake(empty)
    with pytest.raises(FileNotFoundError):
        load_counterfact(str(tmp_path / "missing.json"))
    # a JSON array of non-objects: per-record error
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    ds = load_counterfact(arr)
    assert len(ds) == 0 and "expected an object" in ds.report.skipped[0][1]


def test_jsonl_form_of_a_json_loader(tmp_path):
    recs = json.loads(data_path(*ZSRE_FILE).read_text())[:3]
    p = tmp_path / "z.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in recs[:2]) + "\n{oops\n" + json.dumps(recs[2]) + "\n")
    ds = load_zsre(p)
    assert len(ds) == 3 and ds.report.skipped == [("line 3", ds.report.skipped[0][1])]


# ---------------------------------------------------------------- CounterFact (ROME form fixture)

ROME_RECORDS = [
    {
        "case_id": 0,
        "pararel_idx": 2796,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is",
            "relation_id": "P103",
            "target_new": {"str": "English", "id": "Q1860"},
            "target_true": {"str": "French", "id": "Q150"},
            "subject": "Danielle Darrieux",
        },
        "paraphrase_prompts": [
            "Shayna does this and Yossel goes still and dies. Danielle Darrieux, a native",
            "An album was recorded for Capitol Nashville but never released. Danielle Darrieux spoke the language",
        ],
        "neighborhood_prompts": [
            "The mother tongue of L\u00e9on Blum is",
            "The native language of Montesquieu is",
            "Fran\u00e7ois Bayrou, a native",
        ],
        "attribute_prompts": [
            "J.\u00a0R.\u00a0R. Tolkien is a native speaker of",
            "The mother tongue of Douglas Adams is",
        ],
        "generation_prompts": [
            "Danielle Darrieux's mother tongue is",
            "Where Danielle Darrieux is from, people speak the language of",
        ],
    },
    {
        "case_id": 1,
        "pararel_idx": 15584,
        "requested_rewrite": {
            "prompt": "{} is located in the continent of",
            "relation_id": "P30",
            "target_new": {"str": "Antarctica", "id": "Q51"},
            "target_true": {"str": "Asia", "id": "Q48"},
            "subject": "Kotgarh",
        },
        "paraphrase_prompts": ["Kotgarh is in the continent of"],
        "neighborhood_prompts": ["Matsuyama is located in the continent of"],
        "attribute_prompts": ["Byrd Glacier is located in the continent of"],
        "generation_prompts": ["People around Kotgarh speak the language of"],
    },
    {  # broken: template without "{}" and subject not in it
        "case_id": 2,
        "requested_rewrite": {
            "prompt": "The capital city is",
            "target_new": {"str": "Rome"},
            "target_true": {"str": "Paris"},
            "subject": "France",
        },
        "paraphrase_prompts": [],
        "neighborhood_prompts": [],
    },
]


def test_counterfact_rome_form(tmp_path):
    p = tmp_path / "counterfact.json"
    p.write_text(json.dumps(ROME_RECORDS))
    ds = load_counterfact(p)
    assert [c.case_id for c in ds] == ["0", "1"]
    assert ds.report.skipped[0][0] == "record 2 [case_id 2]"
    assert "requested_rewrite.prompt" in ds.report.skipped[0][1]
    c = ds[0]
    (req,) = c.requests
    assert req.prompt == "The mother tongue of Danielle Darrieux is"
    assert (req.subject, req.target_new, req.target_true) == ("Danielle Darrieux", "English", "French")
    assert c.probes.counts() == {"target": 1, "paraphrase": 2, "near": 3, "attribute": 2, "generation": 2}
    near = c.probes.by_category("near")[0]
    assert (near.prompt, near.target, near.meta["target_new"]) == ("The mother tongue of L\u00e9on Blum is",
                                                                   "French", "English")
    assert {p.target for p in c.probes.by_category("attribute")} == {"English"}
    gen = c.probes.by_category("generation")[0]
    assert gen.meta["kind"] == "generation" and gen.target == "English"
    assert c.meta["prompt_template"] == "The mother tongue of {} is" and c.meta["relation_id"] == "P103"
    assert ds[1].requests[0].prompt == "Kotgarh is located in the continent of"
    with pytest.raises(RecordError, match=r"case_id 2.*requested_rewrite\.prompt"):
        load_counterfact(p, strict=True)


def test_mixed_forms_and_jsonl_of_rome(tmp_path):
    mend = json.loads(data_path(*CF_FILE).read_text())[:1]
    p = tmp_path / "mixed.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [ROME_RECORDS[1], mend[0]]))
    ds = load_counterfact(p)
    assert [c.meta["format"] for c in ds] == ["rome", "mend"]


# ---------------------------------------------------------------- zsRE


def test_zsre():
    n = _n_records(*ZSRE_FILE)
    assert n == 500  # PROVENANCE says 1,000, the file holds 500
    ds = load_zsre()
    assert len(ds) == n and ds.report.skipped == []
    assert ds.probes().counts() == {"target": n, "paraphrase": n, "near": n}
    c = ds[0]
    assert c.case_id == "0"
    (req,) = c.requests
    assert req == EditRequest("What is the product made by UniFirst?", "unmanned aircraft",
                              subject="UniFirst", target_true="uniform")
    para, = c.probes.by_category("paraphrase")
    assert para.prompt == "What will be the product of UniFirst?" and para.target == "unmanned aircraft"
    near, = c.probes.by_category("near")
    assert near.prompt == "nq question: john goodman's character in the big lebowski"
    assert near.target == "Walter Sobchak" and near.meta["target_new"] == "unmanned aircraft"
    assert c.meta["pred"] == "uniform"


def test_zsre_subject_not_in_src_and_missing_field(tmp_path):
    def mutate(recs):
        recs[0]["subject"] = "Somebody Else"
        del recs[1]["alt"]
    p = _corrupt_copy(tmp_path, ZSRE_FILE, 3, mutate)
    ds = load_zsre(p)
    assert [c.case_id for c in ds] == ["0", "2"]
    assert ds[0].requests[0].subject is None and "does not occur" in ds[0].meta["subject_note"]
    assert ds.report.skipped == [("record 1", "missing field 'alt'")]
    assert "record 1 (missing field 'alt')" in ds.report.summary()
    with pytest.raises(ValueError, match=r"record 1.*'alt'"):
        load_zsre(p, strict=True)


# ---------------------------------------------------------------- MQuAKE


def test_mquake():
    n = _n_records(*MQ_FILE)
    assert n == 215  # PROVENANCE says 429, the file holds 215
    ds = load_mquake()
    assert len(ds) == n and ds.report.skipped == []
    assert ds.probes().counts() == {"target": 4 * n, "paraphrase": 4 * n, "portability": 3 * n,
                                    "portability-hop": 4 * n}
    c = ds[0]
    assert c.case_id == "7417" and len(c.requests) == 4
    r0 = c.requests[0]
    assert (r0.prompt, r0.subject, r0.target_new, r0.target_true) == (
        "Hey Jude was performed by", "Hey Jude", "Madonna", "The Beatles")
    assert c.requests[3].prompt == "The official language of Australia is"
    para = c.probes.by_category("paraphrase")[0]
    assert para.prompt == "Who performed Hey Jude?" and para.target == "Madonna"
    port = c.probes.by_category("portability")
    assert len(port) == 3 and {p.target for p in port} == {"Arabic"}
    assert "Arabic language" in port[0].meta["aliases"]
    assert port[0].meta["old_answer"] == "English" and "eng" in port[0].meta["answer_alias"]
    hops = c.probes.by_category("portability-hop")
    assert [h.meta["hop"] for h in hops] == [0, 1, 2, 3]
    assert (hops[1].prompt, hops[1].target) == ("The director of Madonna is", "Narendra Modi")
    assert hops[0].meta["old_answer"] == "The Beatles"


def test_mquake_bad_rewrite(tmp_path):
    def mutate(recs):
        del recs[1]["requested_rewrite"][2]["target_new"]
    p = _corrupt_copy(tmp_path, MQ_FILE, 2, mutate)
    ds = load_mquake(p)
    assert len(ds) == 1
    label, why = ds.report.skipped[0]
    assert label.startswith("record 1 [case_id ") and "requested_rewrite[2].target_new" in why
    with pytest.raises(RecordError, match=r"record 1.*requested_rewrite\[2\]\.target_new"):
        load_mquake(p, strict=True)


def test_mquake_records_without_aliases_are_refused_naming_the_field(tmp_path):
    def mutate(recs):
        del recs[0]["new_answer_alias"]
        del recs[1]["new_single_hops"][1]["answer_alias"]
    p = _corrupt_copy(tmp_path, MQ_FILE, 3, mutate)
    ds = load_mquake(p)
    assert len(ds) == 1
    (l0, w0), (l1, w1) = ds.report.skipped
    assert l0.startswith("record 0") and "new_answer_alias" in w0
    assert l1.startswith("record 1") and "new_single_hops[1].answer_alias" in w1
    with pytest.raises(RecordError, match=r"record 0.*new_answer_alias"):
        load_mquake(p, strict=True)


def test_multi_hop_metrics():
    rewrites = [[True, True, True, True], [True, False, True, True], [False, False, False, False]]
    assert edit_wise_accuracy(rewrites) == pytest.approx(7 / 12)
    assert instance_wise_accuracy(rewrites) == pytest.approx(1 / 3)
    questions = [[False, True, False], [False, False, False], [True, True, True], [False, False, True]]
    assert multi_hop_accuracy(questions) == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        multi_hop_accuracy([])
    with pytest.raises(ValueError):
        instance_wise_accuracy([[True], []])


def test_answer_matches():
    aliases = ["Arabic", "ar", "Arabian language", "Arabic language"]
    assert answer_matches("Arabic", aliases)
    assert answer_matches(" arabic.", aliases)
    assert answer_matches("The Arabic language, mostly", aliases)      # prefix
    assert answer_matches("It is Arabic.", aliases)                    # whole-word containment
    assert not answer_matches("March", ["ar"])                         # not inside a word
    assert not answer_matches("English", aliases)
    assert answer_matches("the U.K.", ["UK"]) and answer_matches("Léon Blum", ["Leon Blum"])
    assert not answer_matches("", aliases) and not answer_matches("x", ["the", "..."])
    assert answer_matches("Madonna and her band", ["Madonna"], mode="prefix")
    assert not answer_matches("It is Madonna", ["Madonna"], mode="prefix")
    assert not answer_matches("Madonna Louise", ["Madonna"], mode="exact")
    assert normalize_answer("  The  U.S.A.! ") == "usa"


# ---------------------------------------------------------------- plain JSONL


def test_jsonl_both_kinds_and_bad_line(tmp_path, caplog):
    lines = [
        json.dumps({"prompt": "2+2=", "target_new": "5", "subject": "2+2", "target_true": "4",
                    "paraphrases": ["two plus two equals"],
                    "neighbours": [{"prompt": "2+3=", "target": "5"}, {"prompt": "3+3=", "target": "6"}],
                    "category": "arithmetic"}),
        "",
        json.dumps({"prompt": "The capital of France is", "target": "Paris", "category": "general"}),
        "{not json",
        json.dumps({"prompt": "Water boils at", "target": "100"}),
        json.dumps({"prompt": "The capital of Italy is", "target": "Paris", "near": ["Rome is in"],
                    "target_true": "Rome", "case_id": "italy"}),
        json.dumps({"prompt": "x", "target_new": ""}),
    ]
    p = tmp_path / "mine.jsonl"
    p.write_text("\n".join(lines) + "\n\n")
    with caplog.at_level(logging.WARNING):
        ds = load_jsonl(p)
    assert [c.case_id for c in ds] == ["0", "italy", "probes"]
    edit = ds[0]
    assert edit.requests == [EditRequest("2+2=", "5", subject="2+2", target_true="4")]
    assert edit.probes.counts() == {"target": 1, "paraphrase": 1, "near": 2}
    assert edit.probes.by_category("near")[1].target == "6"
    assert edit.probes.by_category("near")[1].meta["target_new"] == "5"
    assert edit.meta["category"] == "arithmetic"
    italy_near = ds[1].probes.by_category("near")[0]
    assert (italy_near.prompt, italy_near.target) == ("Rome is in", "Rome")
    probes = ds[2]
    assert probes.requests == [] and [p.category for p in probes.probes] == ["general", "general"]
    assert probes.probes[0].meta["case_id"] == "probes" and probes.probes[1].meta["record"] == "line 5"
    rep = ds.report
    assert rep.n_records == 6 and rep.n_loaded == 4
    assert [lab for lab, _ in rep.skipped] == ["line 4", "line 7"]
    assert "invalid JSON" in rep.skipped[0][1] and "target_new" in rep.skipped[1][1]
    assert "line 4 (invalid JSON" in rep.summary()
    assert caplog.records
    with pytest.raises(RecordError, match=r"line 4: invalid JSON"):
        load_jsonl(p, strict=True)
    assert [c.case_id for c in load_jsonl(p, offset=1, limit=2)] == ["probes"]


# ---------------------------------------------------------------- hub ids


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for loader in (load_counterfact, load_zsre, load_mquake, load_jsonl):
        with pytest.raises(RuntimeError, match=r"hub dataset id.*HF_HUB_OFFLINE"):
            loader("azhx/counterfact")


def test_hub_id_without_datasets(monkeypatch):
    import builtins

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"editscope\[hub\]"):
        load_zsre("some-org/zsre")


def test_load_report_summary_truncates():
    rep = LoadReport("f.json", 20, 5, [(f"record {i}", "missing field 'x'") for i in range(15)])
    s = rep.summary()
    assert s.startswith("loaded 5 of 20 records from f.json; skipped 15: record 0 (missing field 'x')")
    assert s.endswith("... and 5 more")


def test_loaders_registered_as_suites():
    from editscope.probes.registry import get_suite, list_suites

    names = {s["name"] for s in list_suites()}
    assert {"counterfact", "zsre", "mquake", "jsonl"} <= names
    ps = get_suite("zsre", limit=2)
    assert isinstance(ps, ProbeSet) and ps.counts() == {"target": 2, "paraphrase": 2, "near": 2}
    assert [p.meta["case_id"] for p in ps] == ["0", "0", "0", "1", "1", "1"]
