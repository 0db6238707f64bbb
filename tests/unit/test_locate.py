"""Key statistics, the locate-then-edit closed forms, and ROME/MEMIT/AlphaEdit on tiny models."""

import pytest
import torch
from safetensors.torch import save_file

import editscope as es
from editscope.covariance import (
    KeyStatsError,
    _path,
    key_statistics,
    key_statistics_many,
    load_key_statistics,
    solve_psd,
)
from editscope.hooks import capture_input
from editscope.methods import HparamError, active_edits
from editscope.hooks import add_to_output
from editscope.methods.locate import (
    KL_TEMPLATE,
    LocateHparams,
    ResidualBatch,
    ResidualProblem,
    alphaedit_update,
    emmet_update,
    context_templates,
    key_positions,
    keys,
    memit_update,
    nullspace_projector,
    rome_update,
)
from editscope.models import tiny_model
from editscope.scoring import (
    body_forward,
    encode_pairs,
    encode_prompts,
    logits_from_hidden,
    token_index_at,
)
from editscope.methods.training import continuation_nll, training_batch
from locate_settings import EASY, REQ, STATS



pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


def _random_psd(d, rank, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, rank, generator=g, dtype=torch.float64)
    return (a @ a.T / rank).float()


def test_key_statistics_equal_the_second_moment_of_hooked_keys_and_are_cached():
    m = tiny_model("llama")
    st = key_statistics(m, 1, corpus="me_ppl_50", n_tokens=300, seq_len=64)
    assert st.second_moment.shape == (m.config.intermediate_size,) * 2 and st.n_tokens == 300
    # direct: the same chunks, hooked by hand
    from editscope.covariance import _chunks, _corpus_texts

    chunks = _chunks(m, _corpus_texts("me_ppl_50"), 300, 64)
    ks = []
    for c in chunks:
        with torch.no_grad(), capture_input(m.module("mlp_out", 1)) as seen:
            m.hf(input_ids=torch.tensor([c]))
        ks.append(seen[0][0])
    k = torch.cat(ks)
    assert torch.allclose(st.second_moment, k.T @ k / len(k), atol=1e-5, rtol=1e-4)
    assert _path(st.key).is_file()
    m.state.key_stats.clear()
    again = key_statistics(m, 1, corpus="me_ppl_50", n_tokens=300, seq_len=64)
    assert again.from_cache and torch.equal(again.second_moment, st.second_moment)
    # other token count, other dtype: other statistics
    assert key_statistics(m, 1, corpus="me_ppl_50", n_tokens=200, seq_len=64).key != st.key


def test_statistics_of_several_layers_in_one_pass_equal_one_layer_at_a_time():
    m = tiny_model("gpt2", num_hidden_layers=4)
    kw = {"corpus": "me_ppl_50", "n_tokens": 300, "seq_len": 64, "use_cache": False}
    one = {layer: key_statistics(m, layer, **kw).second_moment for layer in (0, 2, 3)}
    m.state.key_stats.clear()
    many = key_statistics_many(m, [3, 0, 2], **kw)
    assert sorted(many) == [0, 2, 3]
    for layer, c in one.items():
        assert torch.allclose(many[layer].second_moment, c, atol=1e-6, rtol=1e-5)
    with pytest.raises(KeyStatsError, match="outside the model"):
        key_statistics_many(m, [1, 4], **kw)


def test_key_statistics_files_of_another_shape_or_model_are_refused(tmp_path):
    m = tiny_model("llama")
    bad = tmp_path / "bad.safetensors"
    save_file({"second_moment": torch.eye(5)}, str(bad))
    with pytest.raises(KeyStatsError, match="shape"):
        load_key_statistics(bad, m, 0)
    d = m.config.intermediate_size
    other = tmp_path / "other.safetensors"
    save_file({"second_moment": torch.eye(d)}, str(other), metadata={"base_fingerprint": "0" * 32, "layer": "0"})
    with pytest.raises(KeyStatsError, match="another model"):
        load_key_statistics(other, m, 0)
    # a damaged cache entry is recomputed, not trusted
    st = key_statistics(m, 0, corpus="me_ppl_50", n_tokens=100)
    _path(st.key).write_bytes(b"garbage")
    m.state.key_stats.clear()
    assert not key_statistics(m, 0, corpus="me_ppl_50", n_tokens=100).from_cache
    with pytest.raises(KeyStatsError, match="outside"):
        key_statistics(m, 9)
    with pytest.raises(KeyStatsError, match="only"):
        key_statistics(m, 0, corpus="me_ppl_50", n_tokens=10**7)


def test_solve_psd_regularises_a_singular_matrix_instead_of_crashing():
    c = _random_psd(20, 5)  # rank 5 of 20
    b = torch.randn(20, 2)
    x, ridge = solve_psd(c, b)
    assert ridge > 0 and torch.isfinite(x).all()
    x2, ridge2 = solve_psd(_random_psd(20, 60), b)
    assert ridge2 == 0.0


def test_rome_update_is_rank_one_and_maps_k_to_w_k_plus_r():
    g = torch.Generator().manual_seed(1)
    c, w = _random_psd(16, 40), torch.randn(8, 16, generator=g)
    k, r = torch.randn(16, generator=g), torch.randn(8, generator=g)
    dw, _ = rome_update(w, c, k, r)
    assert torch.linalg.matrix_rank(dw) == 1
    assert torch.allclose((w + dw) @ k, w @ k + r, atol=1e-4)


def test_memit_with_one_edit_on_one_layer_is_romes_closed_form_up_to_regularisation():
    g = torch.Generator().manual_seed(2)
    c = _random_psd(16, 40)
    k, r = torch.randn(16, generator=g), torch.randn(8, generator=g)
    rome, _ = rome_update(torch.zeros(8, 16), c, k, r)
    for lam in (1e-2, 1.0, 100.0):
        memit, _ = memit_update(c, k[None], r[None], lam)
        q = float(k.double() @ torch.linalg.solve(c.double(), k.double()))
        # Sherman-Morrison: MEMIT = ROME * q / (lambda + q)
        assert torch.allclose(memit, rome * q / (lam + q), atol=1e-4, rtol=1e-3)
    tiny, _ = memit_update(c, k[None], r[None], 1e-3)
    assert torch.allclose(tiny, rome, atol=1e-3 * float(rome.abs().max()))


def test_emmet_writes_every_edit_of_a_batch_exactly_and_one_edit_is_rome():
    """EMMET's equality constraints: dW k_i = r_i for each key of the batch (lambda_e -> 0); with one
    edit it is ROME's closed form; lambda_e shrinks the update as K^T C^-1 K / (K^T C^-1 K + lambda_e)."""
    g = torch.Generator().manual_seed(4)
    c = _random_psd(16, 40)
    k, r = torch.randn(5, 16, generator=g), torch.randn(5, 8, generator=g)
    dw = emmet_update(c, k, r, 1e-9)
    assert torch.allclose(dw @ k.T, r.T, atol=1e-4)
    rome, _ = rome_update(torch.zeros(8, 16), c, k[0], r[0])
    assert torch.allclose(emmet_update(c, k[:1], r[:1], 1e-9), rome, atol=1e-4)
    q = float(k[0].double() @ torch.linalg.solve(c.double(), k[0].double()))
    assert torch.allclose(emmet_update(c, k[:1], r[:1], 0.5), rome * q / (q + 0.5), atol=1e-4, rtol=1e-3)
    # the covariance's scale cancels; an update-norm term does not
    assert torch.allclose(emmet_update(c, k, r, 1e-9, update_weight=7.0), dw, atol=1e-4)


def test_alphaedit_delta_annihilates_the_preserved_keys():
    g = torch.Generator().manual_seed(3)
    # preserved keys live in a 10-dimensional subspace of 32
    basis = torch.linalg.qr(torch.randn(32, 10, generator=g))[0]
    k0 = (basis @ torch.randn(10, 500, generator=g)).T  # [500, 32]
    c = k0.T @ k0 / 500 + 1e-6 * torch.eye(32)
    p, dim = nullspace_projector(c, 1e-2)
    assert dim == 22
    k, r = torch.randn(2, 32, generator=g), torch.randn(2, 8, generator=g)
    dw = alphaedit_update(p, torch.zeros(32, 32), k, r, l2=1.0)
    assert (dw @ k0.T).norm() < 1e-3 * dw.norm() * k0.norm()
    assert dw.norm() > 0


def test_rome_edits_one_matrix_by_rank_one_and_undo_restores():
    m = tiny_model("llama", num_hidden_layers=4)
    fp = m.fingerprint()
    w0 = m.module("mlp_out", 1).weight.detach().clone()
    h = es.apply_edit(m, REQ, "rome", layer=1, **EASY)
    assert h.names == [m.arch.name("mlp_out", 1) + ".weight"]
    dw = m.module("mlp_out", 1).weight.detach() - w0
    s = torch.linalg.svdvals(dw)
    assert s[1] < 1e-4 * s[0]
    assert h.info["target_loss_after"][0] < h.info["target_loss_before"][0]
    h.undo()
    assert m.fingerprint() == fp


@pytest.mark.parametrize("method", ["memit", "alphaedit", "emmet"])
def test_spread_methods_touch_their_layer_range_and_lower_the_target_loss(method):
    m = tiny_model("llama", num_hidden_layers=4)
    fp = m.fingerprint()
    reqs = [REQ, es.EditRequest("The sky is", "green", subject="sky")]
    h = es.apply_edit(m, reqs, method, layers=[1, 2], **EASY)
    assert h.names == [m.arch.name("mlp_out", i) + ".weight" for i in (1, 2)]
    assert sum(h.info["target_loss_after"]) < sum(h.info["target_loss_before"])
    h.undo()
    assert m.fingerprint() == fp


def test_alphaedit_accumulates_earlier_edits_keys_and_forgets_them_on_undo():
    m = tiny_model("llama", num_hidden_layers=4)
    a = es.apply_edit(m, REQ, "alphaedit", layers=[1], **EASY)
    assert len(m.state.alphaedit_keys[1]) == 1
    b = es.apply_edit(m, es.EditRequest("The sky is", "green", subject="sky"), "alphaedit", layers=[1], **EASY)
    assert len(m.state.alphaedit_keys[1]) == 2
    b.undo()
    assert len(m.state.alphaedit_keys[1]) == 1
    a.undo()
    assert m.state.alphaedit_keys[1] == []


def test_keys_are_averaged_over_contexts_at_the_subject_token():
    m = tiny_model("llama", num_hidden_layers=4)
    k1 = keys(m, 1, [REQ], ["{}"], "subject_last")
    k2 = keys(m, 1, [REQ], ["{}", "{}"], "subject_last")
    assert torch.allclose(k1, k2, atol=1e-6)
    last = keys(m, 1, [REQ], ["{}"], "last")
    assert not torch.allclose(k1, last)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gptj", "gpt_neox", "gemma3_text"])
@pytest.mark.parametrize("req", [REQ, es.EditRequest("The capital is", "Rome", subject="The")])
def test_residual_objective_with_a_prefix_cache_equals_full_forwards(model_type, req):
    """The optimisation runs only the tokens from the key on, over cached prefixes; its loss and
    gradient must equal plain full forwards of every context and of the KL prompt (the second
    request puts the key at token 0 on GPT-2: an empty prefix)."""
    m = tiny_model(model_type, num_hidden_layers=4)
    layer, templates = 1, context_templates(m, 4, 5)
    prob = ResidualProblem(m, layer, req, templates, LocateHparams(n_contexts=4, context_len=5))
    delta = (torch.randn(m.config.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.5).requires_grad_()
    nll, (kl,) = ResidualBatch([prob]).forward(delta[None])
    (nll.sum() + 0.1 * kl.sum()).backward()
    grad, delta.grad = delta.grad.clone(), None

    texts = [t.replace("{}", req.prompt) for t in templates]
    batch = training_batch(m, encode_pairs(m, texts, [req.continuation] * len(texts)))
    kp = key_positions(m, texts, [req.prompt] * len(texts), [req] * len(texts), "subject_last")
    with add_to_output(m.module("mlp_out", layer), torch.arange(len(texts)), torch.tensor(kp), delta):
        nll_ref = continuation_nll(m, batch)
    kl_text = KL_TEMPLATE.format(req.subject)
    kl_pos = token_index_at(m, [kl_text], [len(req.subject) - 1])
    with add_to_output(m.module("mlp_out", layer), torch.tensor([0]), torch.tensor(kl_pos), delta):
        h = body_forward(m, torch.tensor(encode_prompts(m, [kl_text])), None, None, use_cache=False).last_hidden_state
    kl_ref = torch.log_softmax(logits_from_hidden(m, h[:, -1]), -1)
    (nll_ref.mean() + 0.1 * kl_ref.sum()).backward()
    assert torch.allclose(nll, nll_ref.mean(), atol=1e-5)
    assert torch.allclose(kl, kl_ref, atol=1e-5)
    assert grad.norm() > 0
    assert torch.allclose(grad, delta.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(prob.key, keys(m, layer, [req], templates, "subject_last")[0], atol=1e-5)
    if model_type == "gpt2" and req.subject == "The":
        assert min(kp) == 0  # the empty-prefix case is really exercised


@pytest.mark.parametrize("req, kw, error, match", [
    (es.EditRequest("The capital of France is", "Rome"), {}, HparamError, "no subject"),
    (REQ, {"layer": 9}, HparamError, "outside the model"),
    (REQ, {"v_steps": 0}, HparamError, "v_steps"),
    (REQ, {"stats_dtype": "float16"}, HparamError, "stats_dtype"),
    (REQ, {"stats_tokens": 10**8}, KeyStatsError, "only"),
])
def test_bad_input_fails_before_any_weight_changes(req, kw, error, match):
    m = tiny_model("llama", num_hidden_layers=4)
    fp = m.fingerprint()
    with pytest.raises(error, match=match):
        es.apply_edit(m, req, "rome", **{**STATS, **kw})
    assert m.fingerprint() == fp


def test_rome_takes_one_request_and_an_unreachable_target_is_edit_failed_with_the_loss():
    m = tiny_model("llama", num_hidden_layers=4)
    fp = m.fingerprint()
    with pytest.raises(ValueError, match="one request at a time"):
        es.apply_edit(m, [REQ, REQ], "rome", **STATS)
    with pytest.raises(es.EditFailed, match=r"target NLL reached \d+\.\d+"):
        es.apply_edit(m, REQ, "rome", **{**STATS, "v_steps": 1, "v_fail_loss": 0.01})
    assert m.fingerprint() == fp and not active_edits(m)


def test_statistics_must_come_from_the_base_model():
    m = tiny_model("llama", num_hidden_layers=4)
    h = es.apply_edit(m, es.EditRequest("2+2=", "5"), "ft-m", layer=0, lr=0.1)
    with pytest.raises(KeyStatsError, match="base model"):
        key_statistics(m, 2, corpus="me_ppl_50", n_tokens=100)
    h.undo()
    assert key_statistics(m, 2, corpus="me_ppl_50", n_tokens=100).n_tokens == 100


def test_rome_edit_saves_and_loads(tmp_path):
    m = tiny_model("llama", num_hidden_layers=4)
    h = es.apply_edit(m, REQ, "rome", layer=1, **EASY)
    edited = m.fingerprint()
    h.save(tmp_path / "r")
    h.undo()
    es.load_edit(m, tmp_path / "r")
    assert m.fingerprint() == edited


def test_prefetch_computes_the_layers_of_several_methods_in_one_pass(monkeypatch, tmp_path):
    """ROME at one layer and MEMIT at several, same corpus settings: one corpus pass for all layers;
    other settings get their own pass; layers outside the model are left to the edit to refuse."""
    from editscope import covariance
    from editscope.methods.base import get_method
    from editscope.models.tiny import tiny_model

    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path))
    model = tiny_model("llama", num_hidden_layers=4)
    calls = []
    real = covariance.key_statistics_many
    monkeypatch.setattr(covariance, "key_statistics_many",
                        lambda m, layers, **kw: calls.append((tuple(layers), kw["n_tokens"])) or real(m, layers, **kw))
    common = {"stats_corpus": ["me_ppl_50"], "stats_tokens": 300}
    rome, memit = get_method("rome"), get_method("memit")
    reqs = [rome.statistics_request(model, rome.resolve_hparams(model.arch, 4, {"layer": 2, **common})),
            memit.statistics_request(model, memit.resolve_hparams(model.arch, 4, {"layers": [0, 1, 9], **common})),
            memit.statistics_request(model, memit.resolve_hparams(model.arch, 4, {"layers": [1], "stats_corpus": ["me_ppl_50"],
                                                                               "stats_tokens": 200})),
            get_method("ft").statistics_request(model, get_method("ft").resolve_hparams(model.arch, 4, {}))]
    assert reqs[3] is None
    assert covariance.prefetch_key_statistics(model, reqs) == 2
    assert sorted(calls) == [((0, 1, 2), 300), ((1,), 200)]
    # the edits then read them from memory: no further corpus pass
    passes = []
    real_chunks = covariance._chunks
    monkeypatch.setattr(covariance, "_chunks", lambda *a: passes.append(1) or real_chunks(*a))
    got = real(model, [2], corpus=["me_ppl_50"], n_tokens=300)
    assert got[2].layer == 2 and passes == []


def test_alphaedit_refuses_an_empty_null_space_instead_of_editing_nothing():
    m = tiny_model("gemma2")  # its random keys spread over every direction: no eigenvalue below 1e-2 of the largest
    fp = m.fingerprint()
    with pytest.raises(es.EditFailed, match=r"null space is empty.*raise nullspace_threshold"):
        es.apply_edit(m, [REQ], "alphaedit", layers=[0, 1], **EASY)
    assert m.fingerprint() == fp
    h = es.apply_edit(m, [REQ], "alphaedit", layers=[0, 1], nullspace_threshold=0.1, **EASY)
    assert h.info["target_loss_after"][0] < h.info["target_loss_before"][0]
