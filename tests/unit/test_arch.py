"""Every ArchSpec is verified against a tiny random-initialised model of its family."""

import types

import pytest
import torch
from torch import nn

from editscope.models import ARCH_SPECS, TINY_MODEL_TYPES, ArchSpec, UnsupportedArchitectureError, arch_for, tiny_model
from editscope.scoring import body_forward, logits_from_hidden, pad_batch


@pytest.fixture(scope="module", params=TINY_MODEL_TYPES)
def model(request):
    return tiny_model(request.param)


def test_every_arch_spec_has_a_tiny_model():
    assert set(TINY_MODEL_TYPES) == set(ARCH_SPECS)


def test_templates_resolve_to_modules_of_the_right_shape(model):
    arch, cfg = model.arch, model.config
    d, vocab, n = cfg.hidden_size, cfg.vocab_size, model.n_layers
    inter = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    assert model.config.model_type in arch.model_types
    assert model.module("embed").weight.shape == (vocab, d)
    layers = model.module("layers")
    assert isinstance(layers, nn.ModuleList) and len(layers) == n
    assert arch.weight_out_in(model.module("lm_head")).shape == (vocab, d)
    norm_w = getattr(model.module("final_norm"), "weight", None)  # OLMo's norm has no parameters
    assert norm_w is None or norm_w.shape == (d,)
    for i in range(n):
        assert model.module("layer", i) is layers[i]
        for role in ("attn", "mlp"):
            sub = model.module(role, i)
            assert any(sub is m for m in layers[i].modules()), f"{role} not inside layer {i}"
        assert arch.weight_out_in(model.module("attn_out", i)).shape[0] == d
        for j in range(len(arch.mlp_in)):
            assert arch.weight_out_in(model.module(f"mlp_in[{j}]", i)).shape == (inter, d)
        assert arch.weight_out_in(model.module("mlp_out", i)).shape == (d, inter)


def test_mlp_out_reads_the_intermediate_activation(model):
    """The down projection's input (the key space of ROME/MEMIT) has the intermediate width."""
    seen = {}
    h = model.module("mlp_out", 1).register_forward_hook(lambda m, a, o: seen.update(k=a[0].shape, v=o.shape))
    try:
        with torch.no_grad():
            model.hf(torch.tensor([[1, 2, 3, 4]]))
    finally:
        h.remove()
    d = model.config.hidden_size
    assert seen["v"][-1] == d and seen["k"][-1] == model.arch.weight_out_in(model.module("mlp_out", 1)).shape[1]


def test_body_then_head_equals_the_full_model(model):
    """``lm_head(body(x))`` must reproduce the HF logits: the spec names the right body and head."""
    ids, mask, pos, _ = pad_batch([[5, 9, 17, 3, 44]], 0, "right", torch.device("cpu"))
    with torch.no_grad():
        ref = model.hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
        hid = body_forward(model, ids, mask, pos, use_cache=False).last_hidden_state
        out = logits_from_hidden(model, hid)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_final_norm_is_applied_inside_the_body(model):
    """Patching the final norm changes the body output, so it is the norm before the head."""
    ids = torch.tensor([[5, 9, 17]])
    norm = model.module("final_norm")
    with torch.no_grad():
        before = body_forward(model, ids, None, None).last_hidden_state.clone()
        h = norm.register_forward_hook(lambda m, a, o: o * 2)
        try:
            after = body_forward(model, ids, None, None).last_hidden_state
        finally:
            h.remove()
    torch.testing.assert_close(after, before * 2)


def test_layer_index_outside_model_is_an_error(model):
    with pytest.raises(IndexError, match="outside the model"):
        model.module("mlp_out", model.n_layers)
    with pytest.raises(IndexError, match="layer=-1"):
        model.module("mlp_out", -1)
    with pytest.raises(ValueError, match="pass layer="):
        model.module("mlp_out")
    with pytest.raises(KeyError, match="unknown ArchSpec role"):
        model.module("mlp_middle", 0)


def test_unsupported_architecture_names_model_type_and_fix():
    with pytest.raises(UnsupportedArchitectureError, match=r"model_type='t5'.*ArchSpec.*register_arch"):
        arch_for(types.SimpleNamespace(model_type="t5"))


def test_spec_that_does_not_fit_the_class_fails_clearly():
    model = tiny_model("llama")
    broken = ArchSpec(**{**model.arch.__dict__, "mlp_out": "model.layers.{}.mlp.down"})
    with pytest.raises(UnsupportedArchitectureError, match="down"):
        broken.module(model.hf, "mlp_out", 0)
