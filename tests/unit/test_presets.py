"""Reference presets (easyedit, rome-paper), ROME without the key covariance, and grouped contexts."""

import pytest
import torch

import editscope as es
from editscope.methods import HparamError
from editscope.methods.base import get_method
from editscope.methods.locate import ROME, rome_update, templates_for
from editscope.methods.presets import PRESETS, preset_hparams, with_preset
from editscope.models import tiny_model
from editscope.registry import UnknownNameError
from editscope.runner.config import ConfigError, parse_config
from locate_settings import EASY, REQ

pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


def test_rome_update_without_covariance_is_along_the_key():
    g = torch.Generator().manual_seed(0)
    w, k, r = torch.randn(6, 8, generator=g), torch.randn(8, generator=g), torch.randn(6, generator=g)
    dw, ridge = rome_update(w, None, k, r)
    assert ridge == 0.0
    assert torch.allclose((w + dw) @ k, w @ k + r, atol=1e-5)
    assert torch.allclose(dw, torch.outer(r, k) / k.dot(k), atol=1e-6)  # u = k: r k^T / |k|^2
    ortho = torch.randn(8, generator=g)
    ortho -= ortho.dot(k) / k.dot(k) * k
    assert torch.allclose(dw @ ortho, torch.zeros(6), atol=1e-5)  # nothing else moves


def test_rome_update_can_insert_at_another_key_than_its_direction():
    g = torch.Generator().manual_seed(1)
    w, k, ki, r = (torch.randn(6, 8, generator=g), torch.randn(8, generator=g), torch.randn(8, generator=g),
                   torch.randn(6, generator=g))
    c = torch.eye(8) + 0.1 * torch.ones(8, 8)
    dw, _ = rome_update(w, c, k, r, ki)
    assert torch.allclose((w + dw) @ ki, w @ ki + r, atol=1e-4)  # exact at the insertion key
    u = torch.linalg.solve(c, k)
    assert torch.allclose(dw, torch.outer(r, u) / u.dot(ki), atol=1e-5)  # direction C^-1 k


def test_rome_inserting_at_the_prompt_key_moves_the_bare_prompts_value_exactly():
    """insert_at=prompt_key: the MLP output at the bare prompt's key moves by exactly the optimised
    residual (its norm is in the edit's info); at the mean key (the default) it moves by another amount."""
    from editscope.hooks import capture_output

    m = tiny_model("llama")
    mlp = m.module("mlp_out", ROME.resolve_hparams(m.arch, m.n_layers, EASY).layer)
    ids = torch.tensor([es.scoring.encode_prompts(m, [REQ.prompt])[0]])

    def value():
        with torch.no_grad(), capture_output(mlp) as out:
            m.hf(input_ids=ids)
        return out[0][0, -1].clone()  # fact_token "last" in EASY: the key is the prompt's last token

    v0 = value()
    moved = {}
    for where in ("prompt_key", "mean_key"):
        h = es.apply_edit(m, REQ, "rome", **EASY, mom2_adjustment=False, insert_at=where)
        moved[where] = (float((value() - v0).norm()), h.info["delta_norm"])
        h.undo()
    assert moved["prompt_key"][0] == pytest.approx(moved["prompt_key"][1], rel=1e-3)
    assert moved["mean_key"][0] != pytest.approx(moved["mean_key"][1], rel=1e-3)


def test_rome_without_mom2_adjustment_reads_no_statistics_and_edits_along_the_key():
    m = tiny_model("llama")
    hp = ROME.resolve_hparams(m.arch, m.n_layers, {**EASY, "mom2_adjustment": False})
    assert ROME().statistics_request(m, hp) is None
    w0 = m.module("mlp_out", hp.layer).weight.detach().clone()
    h = es.apply_edit(m, REQ, "rome", **EASY, mom2_adjustment=False)
    dw = m.module("mlp_out", hp.layer).weight.detach() - w0
    assert torch.linalg.matrix_rank(dw, atol=1e-6 * dw.abs().max()) == 1
    assert h.info.get("ridge") == 0.0
    h.undo()


def test_context_groups_give_the_bare_prompt_and_each_groups_prefixes():
    m = tiny_model("llama")
    hp = ROME.resolve_hparams(m.arch, m.n_layers, {"contexts": [(2, 3), (4, 2)]})
    t = templates_for(m, hp)
    assert t[0] == "{}" and 1 < len(t) <= 6 and all(x.endswith(". {}") for x in t[1:]) and len(set(t)) == len(t)
    plain = ROME.resolve_hparams(m.arch, m.n_layers, {"n_contexts": 3, "context_len": 2})
    assert len(templates_for(m, plain)) <= 4
    with pytest.raises(HparamError, match=r"contexts\[0\]"):
        templates_for(m, ROME.resolve_hparams(m.arch, m.n_layers, {"contexts": [(0, 3)]}))


def test_presets_apply_under_given_hyperparameters():
    assert preset_hparams("rome", "easyedit") == {"mom2_adjustment": False, "insert_at": "prompt_key",
                                                  "contexts": [(3, 10), (8, 10)], "v_fail_loss": 1e6}
    assert preset_hparams("FT_L", "EasyEdit") == {"linf": None}  # names normalised
    assert with_preset("rome", "easyedit", {"mom2_adjustment": True})["mom2_adjustment"] is True  # given wins
    assert with_preset("rome", None, {"v_steps": 3}) == {"v_steps": 3}
    assert preset_hparams("rome", "rome-paper")["v_weight_decay"] == 0.5
    with pytest.raises(UnknownNameError, match="Did you mean 'easyedit'"):
        preset_hparams("rome", "easyedt")
    with pytest.raises(HparamError, match="no settings for method 'grace'"):
        preset_hparams("grace", "easyedit")
    # every preset's settings validate for its method
    m = tiny_model("llama")
    for p in PRESETS.values():
        for method, values in p.methods.items():
            get_method(method).resolve_hparams(m.arch, m.n_layers, dict(values))


def test_study_methods_take_a_preset():
    cfg = parse_config({"name": "p", "methods": [{"method": "rome", "preset": "easyedit", "hparams": {"v_steps": 5}},
                                                 {"method": "ft-l", "label": "ftl-ee", "preset": "easyedit"}],
                        "edits": [{"prompt": "2+2=", "target_new": "5", "subject": "2"}]})
    rome, ftl = cfg.methods
    assert rome.preset == "easyedit" and rome.hparams["mom2_adjustment"] is False and rome.hparams["v_steps"] == 5
    assert ftl.hparams == {"linf": None}
    again = parse_config(cfg.model_dump(mode="json"))  # a stored config reads back the same
    assert again.config_hash() == cfg.config_hash()
    with pytest.raises(ConfigError, match="no settings for method 'grace'"):
        parse_config({"name": "p", "methods": [{"method": "grace", "preset": "easyedit"}],
                      "edits": [{"prompt": "2+2=", "target_new": "5"}]})


def test_apply_edit_takes_a_preset():
    m = tiny_model("llama")
    h = es.apply_edit(m, REQ, "ft-l", preset="easyedit", steps=2, layer=1)
    assert h.hparams["linf"] is None and h.hparams["steps"] == 2
    h.undo()


def test_the_fast_preset_raises_the_residual_step_size_of_the_locate_methods():
    for method in ("rome", "memit", "alphaedit"):
        assert preset_hparams(method, "fast") == {"v_lr": 1.0}
    m = tiny_model("llama")
    settings = {k: v for k, v in EASY.items() if k != "v_lr"}
    fast = es.apply_edit(m, REQ, "rome", preset="fast", **settings)
    assert fast.hparams["v_lr"] == 1.0 and fast.info["v_steps"] >= 1
    fast.undo()
    default = es.apply_edit(m, REQ, "rome", **settings)
    assert default.hparams["v_lr"] == 0.5
    default.undo()
