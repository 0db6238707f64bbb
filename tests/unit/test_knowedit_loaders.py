"""KnowEdit loaders on small fixtures written in the published formats (tests/fixtures/knowedit)."""

from pathlib import Path

import pytest

from editscope.probes.datasets.knowedit import detect_subset, load_knowedit
from editscope.probes.datasets import RecordError, load_edit_dataset
from editscope.runner.config import ConfigError, parse_config

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "knowedit"


def _by_cat(case):
    out = {}
    for p in case.probes:
        out.setdefault(p.category, []).append(p)
    return out


def test_zsre_typed_portability_and_locality_and_a_skipped_untyped_record():
    ds = load_knowedit(FIX / "zsre.json")
    assert ds.name == "knowedit-zsre" and len(ds) == 2
    (label, reason), = ds.report.skipped
    assert label == "record 2" and "'portability' is a list without types" in reason and "'Reasoning'" in reason
    c = ds[0]
    (req,) = c.requests
    assert (req.prompt, req.target_new, req.subject, req.target_true) == (
        "What university did Watts Humphrey attend?", "University of Michigan", "Watts Humphrey",
        "Illinois Institute of Technology")
    cats = _by_cat(c)
    assert [p.prompt for p in cats["paraphrase"]] == ["What university did Watts Humphrey take part in?"]
    assert sorted((p.meta["portability_type"], p.target) for p in cats["portability"]) == [
        ("logical_generalization", "Michigan"), ("reasoning", "Michigan")]
    (near,) = cats["near"]
    assert near.target == "United States of America" and near.meta["locality_type"] == "relation_specificity"
    assert _by_cat(ds[1])["portability"][0].meta["portability_type"] == "subject_aliasing"
    with pytest.raises(RecordError, match="record 2.*without types"):
        load_knowedit(FIX / "zsre.json", strict=True)


def test_wiki_recent_alias_lists_give_the_target_and_its_aliases():
    (c,) = load_knowedit(FIX / "wiki_recent.json")
    cats = _by_cat(c)
    logic = next(p for p in cats["portability"] if p.meta["portability_type"] == "logical_generalization")
    assert logic.target == "no" and logic.meta["aliases"] == ["incorrect", "false"]
    alias = next(p for p in cats["portability"] if p.meta["portability_type"] == "subject_aliasing")
    assert alias.target == "Berlin" and alias.meta["aliases"] == ["Berlin, Germany"]  # duplicates dropped
    assert c.requests[0].target_true is None  # wiki_recent has no ground truth
    assert cats["near"][0].target == "Albert Arons"


def test_wiki_counterfact_forgetfulness_and_a_record_without_its_ground_truth():
    ds = load_knowedit(FIX / "wiki_counterfact.json")
    assert detect_subset({"subject": "s", "prompt": "p", "target_new": "t", "ground_truth": "g"}) == "wiki_counterfact"
    assert len(ds) == 1 and ds.report.skipped == [
        ("record 1", "not a KnowEdit wiki_counterfact record: missing 'ground_truth' (a wiki_counterfact record has "
                     "subject, prompt, target_new, ground_truth; have prompt, subject, target_new)")]
    types = sorted(p.meta["locality_type"] for p in _by_cat(ds[0])["near"])
    assert types == ["forgetfulness", "relation_specificity"]
    assert ds[0].requests[0].target_true == "Malaysia"
    # the same record read as wiki_recent (no ground truth needed) has only its target probe
    recent = load_knowedit(FIX / "wiki_counterfact.json", subset="wiki_recent")
    assert len(recent) == 2 and [p.category for p in recent[1].probes] == ["target"]


def test_wikibio_convsent_and_sanitation():
    (bio,) = load_knowedit(FIX / "wikibio.json")
    assert bio.requests[0].subject == "John Russell Reynolds" and bio.requests[0].target_new.startswith("Reynolds was born")
    conv = load_knowedit(FIX / "convsent.json")
    assert len(conv) == 1 and "'pos' must be a non-empty list" in conv.report.skipped[0][1]
    assert conv[0].requests[0].prompt == "What do you think of Marvel?"
    neg = load_knowedit(FIX / "convsent.json", sentiment="negative")
    assert len(neg) == 2 and neg[1].requests[0].target_new == "Taxes are a burden."
    san = load_knowedit(FIX / "sanitation.json")
    assert san.name == "knowedit-sanitation" and len(san) == 2
    assert san[0].requests[0].target_new == "I don't know." and san[0].requests[0].target_true == "Ilya Sutskever"
    # retain items dealt round-robin: edit 0 gets K_R[0] and K_R[2], edit 1 gets K_R[1]
    assert [p.target for p in _by_cat(san[0])["near"]] == ["Paris", "Jupiter"]
    (mona,) = _by_cat(san[1])["near"]
    assert mona.target == "Leonardo da Vinci" and mona.meta["aliases"] == ["Leonardo"]


def test_wrong_sub_format_names_the_expected_fields(tmp_path):
    with pytest.raises(RecordError, match=r"not a KnowEdit wikibio record: missing 'concept', 'text', 'labels'"):
        load_knowedit(FIX / "zsre.json", subset="wikibio", strict=True)
    with pytest.raises(RecordError, match="not a KnowEdit sanitation file"):
        load_knowedit(FIX / "zsre.json", subset="sanitation")
    with pytest.raises(RecordError, match="subset='zsr'"):
        load_knowedit(FIX / "zsre.json", subset="zsr")
    odd = tmp_path / "odd.json"
    odd.write_text('[{"question": "q", "answer": "a"}]')
    with pytest.raises(RecordError, match="not a KnowEdit record: expected the fields of one sub-format"):
        load_knowedit(odd)
    bad_type = tmp_path / "bad.json"
    bad_type.write_text('[{"subject": "s", "prompt": "s is", "target_new": "t", '
                        '"portability": {"Reasoningg": [{"prompt": "p", "ground_truth": "g"}]}}]')
    with pytest.raises(RecordError, match=r"portability.Reasoningg.*unknown portability type"):
        load_knowedit(bad_type, strict=True)
    with pytest.raises(RecordError, match="not in ../shared/data"):
        load_knowedit(None)
    with pytest.raises(RecordError, match="HF_HUB_OFFLINE"):  # tests run offline
        load_knowedit("zjunlp/KnowEdit:benchmark/ZsRE/ZsRE-test-all.json")
    with pytest.raises(RecordError, match="owner/name:path"):
        load_knowedit("not/a/hub/file:x.json")


def test_knowedit_is_a_study_dataset():
    ds = load_edit_dataset("knowedit", str(FIX / "wiki_counterfact.json"))
    assert len(ds) == 1 and len(ds.report.skipped) == 1
    cfg = parse_config({"name": "ke", "methods": ["rome"],
                        "edits": [{"dataset": "KnowEdit", "source": str(FIX / "wiki_counterfact.json")}]})
    assert cfg.edits[0].dataset == "knowedit"
    with pytest.raises(ConfigError, match="Did you mean 'knowedit'"):
        parse_config({"name": "ke", "methods": ["rome"], "edits": [{"dataset": "knowedt", "source": "x"}]})
