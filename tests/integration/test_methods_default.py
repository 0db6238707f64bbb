"""Every fine-tuning-family method teaches the default model "2+2=" -> "5" with its defaults,
and undo / save / load restore or reproduce the weights exactly."""

import pytest

import editscope as es

pytestmark = pytest.mark.integration

REQ = es.EditRequest("2+2=", "5", target_true="4")


@pytest.fixture(scope="module")
def base_fp(default_model):
    assert not es.methods.active_edits(default_model)
    return default_model.fingerprint()


@pytest.mark.parametrize("method", ["ft", "ft-constrained", "ft-l", "ft-m", "lora"])
def test_method_reaches_efficacy_with_defaults_and_undo_restores_every_tensor(default_model, base_fp, method):
    m = default_model
    before = es.greedy_continuations(m, ["2+2="], 2)[0].text
    h = es.apply_edit(m, REQ, method)
    try:
        gen = es.greedy_continuations(m, ["2+2="], 2)[0]
        assert gen.text.startswith("5"), (method, before, gen.text, h.info.get("loss_last"))
    finally:
        h.undo()
    assert m.fingerprint() == base_fp


def test_save_and_load_round_trip_on_the_default_model(default_model, base_fp, tmp_path):
    m = default_model
    h = es.apply_edit(m, REQ, "ft-m")
    edited = m.fingerprint()
    h.save(tmp_path / "e")
    h.undo()
    assert m.fingerprint() == base_fp
    again = es.load_edit(m, tmp_path / "e")
    assert m.fingerprint() == edited
    assert es.greedy_continuations(m, ["2+2="], 1)[0].text == "5"
    again.undo()
    assert m.fingerprint() == base_fp


LOCATE = es.EditRequest("2+2=", "5", subject="2+2", target_true="4")


@pytest.mark.parametrize("method", ["rome", "memit", "alphaedit"])
def test_locate_then_edit_methods_teach_2_plus_2_is_5_with_defaults(default_model, base_fp, method, tmp_path):
    m = default_model
    h = es.apply_edit(m, LOCATE, method)
    try:
        assert es.greedy_continuations(m, ["2+2="], 1)[0].text == "5", h.info
        assert es.greedy_continuations(m, ["The capital of France is"], 1)[0].text == " Paris"
        edited = m.fingerprint()
        h.save(tmp_path / method)
    finally:
        h.undo()
    assert m.fingerprint() == base_fp
    again = es.load_edit(m, tmp_path / method)
    assert m.fingerprint() == edited
    again.undo()
    assert m.fingerprint() == base_fp


@pytest.mark.parametrize("method", ["grace", "wise", "ike"])
def test_interventions_teach_2_plus_2_is_5_with_defaults_and_change_no_weight(default_model, base_fp, method, tmp_path):
    m = default_model
    base_key = m.state_key()
    h = es.apply_edit(m, REQ, method)
    try:
        assert es.greedy_continuations(m, ["2+2="], 1)[0].text == "5", h.info
        assert m.fingerprint() == base_fp and m.state_key() != base_key
        if method != "ike":  # GRACE and WISE act only near the edit; IKE's context reaches every prompt
            assert es.greedy_continuations(m, ["The capital of France is"], 1)[0].text == " Paris"
        edited = m.state_key()
        h.save(tmp_path / method)
    finally:
        h.undo()
    assert m.state_key() == base_key
    again = es.load_edit(m, tmp_path / method)
    assert m.state_key() == edited and es.greedy_continuations(m, ["2+2="], 1)[0].text == "5"
    again.undo()
    assert m.state_key() == base_key and m.fingerprint() == base_fp
