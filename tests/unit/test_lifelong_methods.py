"""The methods built for many edits, on tiny models of every supported architecture. UltraEdit
(lifelong normalisation): it reaches its targets, touches only its sites, undoes weights and lifelong
statistics exactly, saves and loads, keeps earlier edits over a 50-edit stream, and computes the
reference's closed form. LocFT-BF (breadth-first fine-tuning): the same contract, its mini-batch
schedule, and the 50-edit stream."""

import pytest
import torch

import editscope as es
from editscope.methods import EditFailed, load_edit, target_losses
from editscope.moments import RunningMoments
from editscope.models import tiny_model

pytestmark = pytest.mark.usefixtures("tmp_cache")

REQS = [es.EditRequest(f"{a}+{b}=", str((a * 7 + b) % 10)) for a in range(3) for b in range(4)]


def _stats(m):
    return {s: (x.n, x.mean.clone(), x.m2.clone()) for s, x in m.state.lifelong_stats.items()}


def _same(a, b):
    return a.keys() == b.keys() and all(a[k][0] == b[k][0] and torch.equal(a[k][1], b[k][1])
                                        and torch.equal(a[k][2], b[k][2]) for k in a)


def test_running_moments_equal_the_moments_of_all_rows():
    x = torch.randn(37, 5, generator=torch.Generator().manual_seed(0))
    r = RunningMoments.empty(5)
    for part in (x[:1], x[1:10], x[10:11], x[11:]):  # a single row is fine (the reference's NaN case)
        r.update(part)
    assert r.n == 37
    assert torch.allclose(r.mean, x.mean(0), atol=1e-6) and torch.allclose(r.std, x.std(0), atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gptj", "gpt_neox"])
def test_reaches_targets_touches_its_sites_and_undoes_weights_and_statistics(arch):
    m = tiny_model(arch)
    w0 = {n: p.detach().clone() for n, p in m.hf.named_parameters()}
    h = es.apply_edit(m, REQS, "ultraedit", lr=0.1)
    b, a = h.info["target_loss_before"], h.info["target_loss_after"]
    assert sum(a) / len(a) < sum(b) / len(b) - 1.0
    changed = {n for n, p in m.hf.named_parameters() if not torch.equal(p, w0[n])}
    assert changed and changed <= set(h.names)
    assert all(".mlp." in n for n in h.names)
    assert {s: x.n for s, x in m.state.lifelong_stats.items()} and all(x.n > 0 for x in m.state.lifelong_stats.values())
    h.undo()
    assert all(torch.equal(p, w0[n]) for n, p in m.hf.named_parameters()) and m.state.lifelong_stats == {}


def test_the_update_is_the_reference_closed_form():
    """dW = (K^T K + I)^-1 K^T V with V = -lr ||k^||^2 g^, k^ and g^ normalised by the statistics that
    already include this edit's rows (recomputed here from the method's own features)."""
    from editscope.methods.ultraedit import UltraEdit

    m = tiny_model("gpt2")
    meth = UltraEdit()
    hp = meth.resolve_hparams(m.arch, m.n_layers, {"lr": 0.05})
    (name, module), = meth._modules(m, hp)
    k, g = meth._features(m, REQS, hp, [(name, module)])[name]
    r = RunningMoments.empty(k.shape[1] + g.shape[1])
    r.update(torch.cat((k, g), -1))
    z = r.normalise(torch.cat((k, g), -1))
    kh, gh = z[:, :k.shape[1]], z[:, k.shape[1]:]
    v = -0.05 * (kh ** 2).sum(-1, keepdim=True) * gh
    want = torch.linalg.solve(k.T @ k + torch.eye(k.shape[1]), k.T @ v)
    w0 = m.arch.weight_out_in(module).detach().clone()
    es.apply_edit(m, REQS, "ultraedit", lr=0.05)
    got = (m.arch.weight_out_in(module).detach() - w0).T
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def test_statistics_are_lifelong_and_follow_undo_save_and_load(tmp_path):
    m = tiny_model("llama")
    h1 = es.apply_edit(m, REQS[:6], "ultraedit", lr=0.1)
    after1 = _stats(m)
    h2 = es.apply_edit(m, REQS[6:], "ultraedit", lr=0.1)
    n1, n2 = ({s: x[0] for s, x in st.items()} for st in (after1, _stats(m)))
    assert all(n2[s] > n1[s] for s in n1)  # the second batch adds to the first's statistics
    h2.save(tmp_path / "e2")
    h2.undo()
    assert _same(_stats(m), after1)
    loaded = load_edit(m, tmp_path / "e2")  # brings the statistics after it back
    assert {s: x[0] for s, x in _stats(m).items()} == n2
    loaded.undo()
    h1.undo()
    assert m.state.lifelong_stats == {}


def test_a_rolled_back_edit_leaves_the_statistics_alone(monkeypatch):
    m = tiny_model("llama")
    es.apply_edit(m, REQS[:6], "ultraedit", lr=0.1)
    before = _stats(m)
    monkeypatch.setattr(RunningMoments, "normalise", lambda self, x: torch.full_like(x, float("nan")))
    with pytest.raises(EditFailed, match="non-finite"):
        es.apply_edit(m, REQS[6:], "ultraedit", lr=0.1)
    assert _same(_stats(m), before)


def _stream_keeps_its_first_batch(method: str, **hp):
    """A 50-edit stream in batches of 10; returns the model. The first batch is still learned after
    four more (its mean target loss at least 0.5 nats/token below the base model's)."""
    m = tiny_model("llama", num_hidden_layers=4)
    stream = [es.EditRequest(f"{a}*{b}=", f"q{(3 * a + b) % 10}x") for a in range(5) for b in range(10)]
    first = stream[:10]
    base = sum(target_losses(m, first)) / 10
    for i in range(0, 50, 10):
        es.apply_edit(m, stream[i:i + 10], method, **hp)
    assert sum(target_losses(m, first)) / 10 < base - 0.5
    return m


def test_earlier_edits_are_kept_over_a_50_edit_stream():
    m = _stream_keeps_its_first_batch("ultraedit", lr=0.1)
    assert all(x.n >= 50 for x in m.state.lifelong_stats.values())


def test_bad_sites_are_refused_naming_the_field():
    m = tiny_model("llama")
    with pytest.raises(es.methods.HparamError, match="sites"):
        es.apply_edit(m, REQS, "ultraedit", sites={"attn": [0]})
    with pytest.raises(es.methods.HparamError, match="sites"):
        es.apply_edit(m, REQS, "ultraedit", sites={"mlp_out": [7]})


# ---------------------------------------------------------------------------------------------
# LocFT-BF

@pytest.mark.parametrize("arch", ["llama", "gpt2", "gptj", "gpt_neox"])
def test_locft_bf_reaches_targets_touches_one_weight_undoes_and_loads(arch, tmp_path):
    m = tiny_model(arch)
    w0 = {n: p.detach().clone() for n, p in m.hf.named_parameters()}
    h = es.apply_edit(m, REQS, "locft-bf", lr=1e-2, batch_size=4, epochs=10)
    b, a = h.info["target_loss_before"], h.info["target_loss_after"]
    assert sum(a) / len(a) < sum(b) / len(b) - 1.0
    assert h.names == [m.arch.name("mlp_out", h.hparams["layer"]) + ".weight"]
    changed = {n for n, p in m.hf.named_parameters() if not torch.equal(p, w0[n])}
    assert changed == set(h.names)
    edited = {n: p.detach().clone() for n, p in m.hf.named_parameters()}
    h.save(tmp_path / "e")
    h.undo()
    assert all(torch.equal(p, w0[n]) for n, p in m.hf.named_parameters())
    load_edit(m, tmp_path / "e")
    assert all(torch.equal(p, edited[n]) for n, p in m.hf.named_parameters())


def test_locft_bf_goes_breadth_first_and_stops_at_its_loss():
    """Each epoch is one pass of shuffled mini-batches over all edits (12 edits, batches of 5: three
    steps an epoch while every batch is above the stop loss); training ends at an epoch whose mean
    loss is below it."""
    m = tiny_model("llama")
    h = es.apply_edit(m, REQS, "locft-bf", lr=1e-3, batch_size=5, epochs=2)
    assert h.info["epochs"] == 2 and h.info["steps"] == 6 and len(h.info["epoch_loss"]) == 2
    h.undo()
    h = es.apply_edit(m, REQS, "locft-bf", lr=1e-2, batch_size=12, epochs=200, stop_loss=2.0)
    assert h.info["epoch_loss"][-1] < 2.0 <= h.info["epoch_loss"][-2] and h.info["epochs"] < 200


def test_locft_bf_keeps_earlier_edits_over_a_50_edit_stream():
    _stream_keeps_its_first_batch("locft-bf", lr=1e-2, batch_size=5, epochs=10)
