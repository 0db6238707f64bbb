"""Edit-method interface, guard, handles (undo/save/load) and the fine-tuning family on tiny models."""

import json

import pytest
import torch

import editscope as es
from editscope.methods import (
    EditHandleError,
    EditLoadError,
    EditMethod,
    HparamError,
    Hparams,
    UnknownMethodError,
    active_edits,
    get_method,
    register_method,
    resolved_defaults,
)
from editscope.methods.base import METHODS
from editscope.methods.handle import add_delta, exact_delta
from editscope.models import tiny_model

REQ = es.EditRequest("2+2=", "5")
FAST = {"ft": {"lr": 1e-2}, "ft-constrained": {"lr": 1e-2, "anchors": [("3+3=", "6"), ("The sky is", "blue")]},
        "ft-l": {"lr": 1e-1, "linf": 0.5}, "ft-m": {"lr": 1e-1}, "lora": {"lr": 5e-2}}


pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


@pytest.fixture
def scratch_method():
    """Register throw-away methods for one test."""
    added = []

    def add(cls):
        register_method(cls)
        added.append(cls.name)
        return cls

    yield add
    for name in added:
        METHODS.unregister(name)


def test_registry_lists_the_fine_tuning_family():
    names = {m["name"]: m for m in es.list_methods()}
    assert {"ft", "ft-constrained", "ft-l", "ft-m", "lora"} <= set(names)
    assert names["ft"]["family"] == "fine-tuning" and names["ft"]["hparams"]["lr"] == 1e-5
    assert get_method("FT_M").name == "ft-m"


def test_ft_l_respects_its_linf_box_and_layer_choice():
    m = tiny_model("llama", num_hidden_layers=3)
    assert resolved_defaults("ft-l", m.arch, m.n_layers)["layer"] == 1
    w0 = m.module("mlp_out", 2).weight.detach().clone()
    h = es.apply_edit(m, REQ, "ft-l", layer=2, lr=1.0, linf=1e-2, steps=5)
    assert h.names == [m.arch.name("mlp_out", 2) + ".weight"]
    assert (m.module("mlp_out", 2).weight - w0).abs().max() <= 1e-2 + 1e-7


def test_batch_of_requests_is_edited_together():
    m = tiny_model("llama")
    reqs = [REQ, es.EditRequest("The sky is", "green")]
    h = es.apply_edit(m, reqs, "ft", lr=1e-2, steps=60)
    assert len(h.info["target_loss_after"]) == 2
    assert all(a < b for a, b in zip(h.info["target_loss_after"], h.info["target_loss_before"]))


def test_gpt2_conv1d_weights_work_with_lora_and_ft_m():
    m = tiny_model("gpt2")
    fp = m.fingerprint()
    for method in ("lora", "ft-m"):
        h = es.apply_edit(m, REQ, method, **FAST[method])
        assert h.info["target_loss_after"][0] < h.info["target_loss_before"][0]
        h.undo()
        assert m.fingerprint() == fp


def test_lora_leaves_no_adapter_modules_behind():
    m = tiny_model("llama")
    kinds = [type(x).__name__ for x in m.hf.modules()]
    names = [n for n, _ in m.hf.named_parameters()]
    h = es.apply_edit(m, REQ, "lora", roles=["mlp_in", "attn_out"], layers=[0], **FAST["lora"])
    assert [type(x).__name__ for x in m.hf.modules()] == kinds
    assert [n for n, _ in m.hf.named_parameters()] == names
    assert len(h.names) == len(m.arch.mlp_in) + 1 and not hasattr(m.hf, "peft_config")


def test_ft_constrained_anchors_from_a_suite_use_the_base_models_own_outputs():
    m = tiny_model("llama")
    meth = get_method("ft-constrained")
    hp = type(meth).resolve_hparams(m.arch, m.n_layers, {"anchor_suite": "facts", "n_anchors": 5})
    pairs = meth.anchors(m, [REQ], hp)
    assert len(pairs) == 5
    for p in pairs:
        gen = es.scoring.greedy_continuations(m, [m.tokenizer.decode(p.prompt_ids, skip_special_tokens=True)],
                                              len(p.cont_ids), stop_at_eos=False)[0]
        assert gen.token_ids == p.cont_ids
    arith = type(meth).resolve_hparams(m.arch, m.n_layers, {"anchor_suite": "arithmetic",
                                                             "anchor_suite_args": {"n": 5}, "n_anchors": 400})
    prompts = [p for p, _ in meth._anchor_candidates([REQ], arith)]
    suite = es.suites.arithmetic(REQ, n=5)
    keep = [p for p in suite if p.category not in ("target", "paraphrase")]
    assert "2+2=" not in prompts and len(prompts) == len(keep) < 400  # all of them, none edited


@pytest.mark.parametrize("call, error, match", [
    (lambda m: es.apply_edit(m, REQ, "rom"), UnknownMethodError, "unknown edit method 'rom'"),
    (lambda m: es.apply_edit(m, REQ, "ft-mm"), UnknownMethodError, "Did you mean 'ft-m'"),
    (lambda m: es.apply_edit(m, REQ, "ft", lrr=0.1), HparamError, "Did you mean 'lr'"),
    (lambda m: es.apply_edit(m, REQ, "ft", steps="many"), HparamError, "steps"),
    (lambda m: es.apply_edit(m, REQ, "ft", steps=0), HparamError, "steps"),
    (lambda m: es.apply_edit(m, REQ, "ft", lr=-1), HparamError, "lr"),
    (lambda m: es.apply_edit(m, REQ, "ft-m", layer=99), HparamError, "outside the model"),
    (lambda m: es.apply_edit(m, REQ, "ft", layers=[0, 7]), HparamError, "outside the model"),
    (lambda m: es.apply_edit(m, REQ, "lora", roles=["q_proj"]), HparamError, "roles"),
    (lambda m: es.apply_edit(m, REQ, "ft-constrained", anchor_suite=None), HparamError, "anchors"),
    (lambda m: es.apply_edit(m, REQ, "ft-constrained", anchor_suite="factz"), HparamError, "facts"),
    (lambda m: es.apply_edit(m, [], "ft"), ValueError, "empty"),
    (lambda m: es.apply_edit(m, ["2+2=5"], "ft"), TypeError, "requests\\[0\\]"),
    (lambda m: es.apply_edit(m, REQ, "ft", guard_tolerance=-1), ValueError, "guard_tolerance"),
])
def test_bad_input_is_refused_before_any_weight_changes(call, error, match):
    m = tiny_model("llama")
    fp = m.fingerprint()
    with pytest.raises(error, match=match):
        call(m)
    assert m.fingerprint() == fp and active_edits(m) == []


def test_empty_target_and_subject_not_in_prompt_fail_at_the_request():
    with pytest.raises(ValueError, match="target_new"):
        es.EditRequest("2+2=", " ")
    with pytest.raises(ValueError, match="subject"):
        es.EditRequest("2+2=", "5", subject="3+3")


class _NoHp(Hparams):
    pass


def _head_name(model):
    w = model.module("lm_head").weight
    return next(n for n, p in model.hf.named_parameters() if p is w)


def _scratch(name, run, head=False, **attrs):
    def touched(self, model, hp):
        return [_head_name(model)] if head else [model.arch.name("mlp_out", 0) + ".weight"]

    return type(name, (EditMethod,), {"name": name, "family": "test", "summary": "test", "Hparams": _NoHp,
                                      "touched": touched, "run": run, **attrs})


def test_guard_rolls_back_nan_weights_worse_loss_and_method_errors(scratch_method):
    def nan(self, model, reqs, hp):
        model.module("mlp_out", 0).weight.data[0, 0] = float("nan")

    def worse(self, model, reqs, hp):  # lower the target token's logit by 100 after the prompt
        pair = es.scoring.encode_pairs(model, [reqs[0].prompt], [reqs[0].continuation])[0]
        with torch.no_grad():
            h = model.hf(torch.tensor([pair.prompt_ids]), output_hidden_states=True).hidden_states[-1][0, -1]
            model.module("lm_head").weight[pair.cont_ids[0]] -= 100 * h / h.dot(h)

    def boom(self, model, reqs, hp):
        model.module("mlp_out", 0).weight.data.add_(1.0)
        raise RuntimeError("solver diverged")

    for name, fn, match in (("t-nan", nan, "non-finite"), ("t-worse", worse, "target loss worse"),
                            ("t-boom", boom, "solver diverged")):
        scratch_method(_scratch(name, fn, head=name == "t-worse"))
        m = tiny_model("llama")
        fp = m.fingerprint()
        with pytest.raises(es.EditFailed, match=match):
            es.apply_edit(m, REQ, name, guard_tolerance=0.0 if name == "t-worse" else 0.5)
        assert m.fingerprint() == fp and active_edits(m) == []


def test_subject_and_one_at_a_time_requirements(scratch_method):
    scratch_method(_scratch("t-locate", lambda *a: None, needs_subject=True, one_at_a_time=True))
    m = tiny_model("llama")
    with pytest.raises(ValueError, match="needs EditRequest.subject"):
        es.apply_edit(m, REQ, "t-locate")
    two = [es.EditRequest("2+2=", "5", subject="2+2"), es.EditRequest("3+3=", "7", subject="3+3")]
    with pytest.raises(ValueError, match="one request at a time"):
        es.apply_edit(m, two, "t-locate")


def test_undo_twice_and_out_of_order_undo_are_refused():
    m = tiny_model("llama")
    fp0 = m.fingerprint()
    a = es.apply_edit(m, REQ, "ft-m", layer=0, **FAST["ft-m"])
    b = es.apply_edit(m, es.EditRequest("3+3=", "7"), "ft-m", layer=0, **FAST["ft-m"])
    c = es.apply_edit(m, es.EditRequest("4+4=", "9"), "ft-m", layer=1, **FAST["ft-m"])
    with pytest.raises(EditHandleError, match="later edit"):
        a.undo()
    c_fp = m.fingerprint()
    b.undo()  # c touches another layer: b may go first
    with pytest.raises(EditHandleError, match="already undone"):
        b.undo()
    c.undo()
    assert m.fingerprint() != c_fp
    a.undo()
    assert m.fingerprint() == fp0


def test_exact_delta_reapplies_bit_exactly():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        before = (torch.randn(500, generator=g) * torch.logspace(-8, 4, 500)).to(dtype)
        after = (before.float() + torch.randn(500, generator=g) * 1e-3).to(dtype)
        assert torch.equal(add_delta(before, exact_delta(before, after)), after)


def test_save_load_round_trip_and_refusals(tmp_path):
    m = tiny_model("llama")
    fp0 = m.fingerprint()
    h = es.apply_edit(m, es.EditRequest("The capital of France is", "Rome"), "ft-m", **FAST["ft-m"])
    edited = m.fingerprint()
    out = h.save(tmp_path / "edit")
    man = json.loads((out / "manifest.json").read_text())
    assert man["method"] == "ft-m" and man["base_fingerprint"] == m.base_fingerprint
    assert man["requests"][0]["target_new"] == "Rome" and man["hparams"]["lr"] == FAST["ft-m"]["lr"]
    h.undo()
    assert m.fingerprint() == fp0
    again = es.load_edit(m, out)
    assert m.fingerprint() == edited and again.requests == h.requests
    # a second load on top: the touched tensor is no longer in its pre-edit state
    with pytest.raises(EditLoadError, match="not in the state"):
        es.load_edit(m, out)
    again.undo()
    assert m.fingerprint() == fp0
    other = tiny_model("llama", seed=1)
    with pytest.raises(EditLoadError, match="base fingerprint"):
        es.load_edit(other, out)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    h2 = es.apply_edit(m, REQ, "ft-m", **FAST["ft-m"])
    with pytest.raises(FileExistsError, match="other files"):
        h2.save(tmp_path / "junk")
    with pytest.raises(EditLoadError, match="not a saved edit"):
        es.load_edit(m, tmp_path / "junk")
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(EditLoadError, match="not valid JSON"):
        es.load_edit(m, out)


def test_delta_is_after_minus_before():
    m = tiny_model("llama")
    w0 = m.module("mlp_out", 0).weight.detach().clone()
    h = es.apply_edit(m, REQ, "ft-m", layer=0, **FAST["ft-m"])
    (name, d), = h.delta().items()
    assert torch.equal(d, m.module("mlp_out", 0).weight.detach() - w0)


def test_no_op_edits_are_refused_naming_the_models_answer():
    """A target the model already gives, or whose tokens start its answer (the first-token trap:
    "12" counted as reaching "1"), is refused before any weight changes; controls are not checked."""
    from editscope.methods import NoOpEdit
    from editscope.methods.handle import tensor_digest
    from editscope.scoring import greedy_continuations

    model = tiny_model("llama", seed=3)
    prompt = "7+8="
    two = greedy_continuations(model, [prompt], 2, stop_at_eos=False)[0]
    first = model.tokenizer.decode(two.token_ids[:1])
    assert first.strip(), "the tiny model's first greedy token should be visible text"
    before = {n: tensor_digest(p) for n, p in model.hf.named_parameters()}
    with pytest.raises(NoOpEdit, match="no-op") as e:
        es.apply_edit(model, es.EditRequest(prompt, first.strip(), sep=first[: len(first) - len(first.lstrip())]), "ft")
    assert repr(two.text) in str(e.value) and e.value.exit_code == 2
    assert {n: tensor_digest(p) for n, p in model.hf.named_parameters()} == before and not active_edits(model)
    # a target the model does not give is edited as usual; the identity control is never refused
    h = es.apply_edit(model, es.EditRequest(prompt, "zzq"), "ft", **FAST["ft"])
    h.undo()
    es.apply_edit(model, es.EditRequest(prompt, first.strip()), "identity").undo()


def test_integer_answer_rule_reads_whole_numbers():
    from editscope.metrics.answers import integer_reaches, parse_integer, text_reaches
    from editscope.probes.arithmetic import number_words

    assert parse_integer("12, so") == (12, True) and parse_integer("10") == (10, False)
    assert parse_integer(" five.") == (5, True) and parse_integer("-3\n") == (-3, True)
    assert parse_integer("=\n") == (None, True)
    assert all(parse_integer(number_words(n) + ".") == (n, True) for n in range(-120, 1000))
    assert not integer_reaches("12", ["1"]) and integer_reaches("1\n", ["1"]) and not integer_reaches("1", ["1"])
    assert integer_reaches(" five.", ["5"]) and not integer_reaches("fifty", ["5"])
    assert text_reaches(" Paris, France", ["Paris"]) and not text_reaches(" Parisian", ["Paris"])
    assert text_reaches(" The U.K.", ["UK"])


@pytest.mark.parametrize("method", ["ft", "ft-l", "ft-m", "lora", "rome", "memit", "alphaedit", "emmet", "locft-bf"])
def test_strength_matching_reaches_its_level_for_every_weight_delta_method(method):
    """A weight edit scaled along its own delta reaches P(target | prompt) within the tolerance, below
    its own strength (the delta shrunk) and above it (grown); a level out of reach is marked and the
    method's own delta kept. Tiny random models saturate early, so the levels are set from the
    method's own P(target) here (the default model's studies use 0.5 and 0.9)."""
    from locate_settings import EASY, REQ

    from editscope.methods.strength import p_target

    model = tiny_model("llama")
    hp = EASY if method in ("rome", "memit", "alphaedit", "emmet") else \
        {"lr": 1e-2, "epochs": 40} if method == "locft-bf" else {**FAST.get(method, {}), "steps": 40}
    base = p_target(model, [REQ])
    h = es.apply_edit(model, REQ, method, **hp)
    own = p_target(model, [REQ])
    h.undo()
    assert own > 10 * base
    for level in (own / 2, min(own * 1.05, (own + 1) / 2)):
        tol = level / 50
        h = es.apply_edit(model, REQ, method, strength=level, strength_tolerance=tol, **hp)
        got = p_target(model, [REQ])
        if h.info["strength_reached"]:
            assert abs(got - level) <= tol and h.info["p_target"] == pytest.approx(got)
            assert (h.info["strength_scale"] < 1) == (level < own)
        else:  # kept at the method's own delta, and said so
            assert h.info["strength_scale"] == 1.0 and got == pytest.approx(h.info["p_target"]) and got < level
        assert h.info["update_norm"] > 0 and h.info["strength_p"] == level
        h.undo()
        assert p_target(model, [REQ]) == pytest.approx(base)
        assert level > own or h.info["strength_reached"]  # a weaker level is always reachable


def test_strength_matching_refuses_bad_levels_and_interventions():
    from editscope.methods.strength import StrengthError

    model = tiny_model("llama", seed=1)
    for bad in (0, 1, 1.5, -0.1, True):
        with pytest.raises(StrengthError, match="strength.p"):
            es.apply_edit(model, REQ, "ft", strength=bad)
    with pytest.raises(StrengthError, match="intervention"):
        es.apply_edit(model, REQ, "grace", strength=0.5)
    assert not active_edits(model)


def test_adalora_prunes_to_its_rank_budget_and_merges():
    m = tiny_model("llama")
    w0 = {n: p.detach().clone() for n, p in m.hf.named_parameters()}
    h = es.apply_edit(m, [es.EditRequest("The capital of France is", "Rome")], "adalora", lr=5e-2, delta_t=3)
    adapters = [m.arch.name("mlp_out", i) for i in range(m.n_layers)]
    assert sorted(h.info["ranks"]) == sorted(adapters)
    # PEFT's cubic schedule reaches rank x adapters at the last step, from init_r x adapters
    assert sum(h.info["ranks"].values()) == 8 * len(adapters) < 12 * len(adapters)
    assert h.info["loss_last"] < h.info["loss_first"]
    assert not any("lora" in n for n, _ in m.hf.named_parameters())  # merged and unloaded
    changed = {n for n, p in m.hf.named_parameters() if not torch.equal(p, w0[n])}
    assert changed == {a + ".weight" for a in adapters}


def test_adalora_orthogonality_penalty_is_zero_for_orthonormal_factors():
    from editscope.methods.lora import orthogonality_penalty

    q, _ = torch.linalg.qr(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)))
    ortho = [("x.lora_A.default", torch.nn.Parameter(q.T.contiguous())), ("x.lora_B.default", torch.nn.Parameter(q))]
    assert orthogonality_penalty(ortho)().item() == pytest.approx(0.0, abs=1e-5)
    skew = [("x.lora_A.default", torch.nn.Parameter(2 * q.T.contiguous()))]  # P P^T = 4 I: ||3 I||_F = 3 sqrt(3)
    assert orthogonality_penalty(skew)().item() == pytest.approx(3 * 3 ** 0.5, rel=1e-5)


@pytest.mark.parametrize("bad, match", [({"tinit": 30, "tfinal": 10}, "tinit"), ({"rank": 16}, "init_r")])
def test_adalora_refuses_a_schedule_it_cannot_run(bad, match):
    m = tiny_model("llama")
    key = m.state_key()
    with pytest.raises(HparamError, match=match):
        es.apply_edit(m, [es.EditRequest("The capital of France is", "Rome")], "adalora", **bad)
    assert m.state_key() == key
