"""Edits that are not weight deltas (GRACE, WISE, IKE) behind the same handle, on tiny models."""

import json

import pytest
import torch

import editscope as es
from editscope.covariance import KeyStatsError, key_statistics
from editscope.hooks import capture_input
from editscope.interventions import InterventionError, installed, transform_prompt
from editscope.methods import EditHandleError, EditLoadError, HparamError, active_edits, get_method, list_methods
from editscope.methods.grace import GraceCodebook
from editscope.models import tiny_model
from editscope.runner import ConfigError, ResultsStore, build_plan, parse_config, run_study
from editscope.scoring import encode_pairs, encode_prompts, pad_batch, pad_id, body_forward

REQ = es.EditRequest("2+2=", "5")
FAST = {"grace": {"layer": 1}, "wise": {"layer": 1, "n_templates": 2, "steps": 20}, "ike": {"k": 2, "pool": "POOL"}}
PROBES = es.ProbeSet([es.Probe("2+2=", "5", "target"), es.Probe("3+3=", "6", "far"),
                      es.Probe("1+2=", "3", "near"), es.Probe("The sky is", "blue", "far")], name="p")


pytestmark = pytest.mark.usefixtures("tmp_cache")  # tests/unit/conftest.py


def _hp(method: str, pool: str) -> dict:
    return {k: (pool if v == "POOL" else v) for k, v in FAST[method].items()}


def _tree(m) -> tuple:
    return (m.fingerprint(), [n for n, _ in m.hf.named_modules()],
            sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in m.hf.modules()))


def _lp(res) -> list:
    return [(r["logprob"], r["greedy"], r["unchanged"]) for r in res.rows]


def test_capability_flags_are_listed():
    info = {m["name"]: m for m in list_methods()}
    assert (info["grace"]["kind"], info["wise"]["kind"], info["ike"]["kind"], info["rome"]["kind"]) == \
        ("module", "module", "input", "weights")
    assert info["ike"]["sequential"] is False and info["grace"]["sequential"] is True
    assert info["rome"]["batch"] is False and info["memit"]["batch"] is True


@pytest.mark.parametrize("method", sorted(FAST))
def test_install_and_undo_leave_weights_and_module_tree_bit_identical(method, pool):
    m = tiny_model("llama")
    es.evaluate(m, PROBES)
    before, key = _tree(m), m.state_key()
    h = es.apply_edit(m, REQ, method, **_hp(method, pool))
    assert h.kind == get_method(method).kind and h.names == [] and len(h.sites) == 1
    assert m.fingerprint() == before[0], "an intervention changes no weight"
    assert m.state_key() != key, "an active intervention changes the state key"
    res = es.evaluate(m, PROBES)
    assert not res.is_base and res.fingerprint == m.state_key() != res.base_fingerprint
    assert res.rows[0]["logprob"] > es.evaluate(m, PROBES, use_cache=True).rows[0]["base_logprob"]
    with pytest.raises(EditHandleError, match="not a weight delta"):
        h.delta()
    h.undo()
    assert _tree(m) == before and m.state_key() == key and not installed(m)


def test_ike_changes_no_weight_and_transforms_every_prompt_at_the_tokenization_point(pool):
    m = tiny_model("llama")
    fp = m.fingerprint()
    n_plain = len(encode_prompts(m, ["3+3="])[0])
    h = es.apply_edit(m, REQ, "ike", k=2, pool=pool)
    assert m.fingerprint() == fp
    text = transform_prompt(m, "3+3=")
    assert text.endswith("New Fact: 2+2=5\nPrompt: 3+3=") and text.count("New Fact:") == 3  # 2 demos + the fact
    assert len(encode_prompts(m, ["3+3="])[0]) > n_plain
    assert text.count("New Fact: 2+2=") == 1, "a pool record of the edited prompt is not a demonstration"
    with pytest.raises(HparamError, match="do not stack"):
        es.apply_edit(m, es.EditRequest("3+3=", "7"), "ike", k=2, pool=pool)
    h.undo()
    assert transform_prompt(m, "3+3=") == "3+3="


def test_an_input_intervention_applies_once_when_the_continuation_straddles_a_token(pool):
    """A continuation that merges with the prompt's last token ("The cap" + "ital") takes the
    tokenizer fallback; the prompt there was already transformed and must not be transformed again
    (it was: IKE's demonstrations twice in such probes)."""
    m = tiny_model("llama")
    es.apply_edit(m, REQ, "ike", k=2, pool=pool)
    straddling, plain = encode_pairs(m, ["The cap", "2+2="], ["ital", "5"])
    assert not straddling.exact and plain.exact  # the fallback is really taken
    assert list(straddling.prompt_ids) == encode_prompts(m, ["The cap"])[0]
    assert m.tokenizer.decode(straddling.prompt_ids).count("New Fact: 2+2=5") == 1


@pytest.mark.parametrize("method", ["grace", "wise"])
def test_incremental_evaluation_from_the_intervention_block_equals_a_full_pass(method, pool):
    m = tiny_model("llama")
    es.evaluate(m, PROBES, keep_hidden=1)
    es.apply_edit(m, REQ, method, **_hp(method, pool))
    inc = es.evaluate(m, PROBES)
    full = es.evaluate(m, PROBES, incremental=False)
    assert inc.resumed_from == 1 and full.resumed_from is None
    assert _lp(inc) == _lp(full)


def test_input_interventions_never_resume_from_kept_states(pool):
    m = tiny_model("llama")
    es.evaluate(m, PROBES, keep_hidden=0)
    es.apply_edit(m, REQ, "ike", k=1, pool=pool)
    assert es.evaluate(m, PROBES).resumed_from is None


def _keys(m, prompt: str, layer: int) -> torch.Tensor:
    ids = encode_prompts(m, [prompt])
    x, _, pos, _ = pad_batch(ids, pad_id(m), "right", m.device)
    with torch.no_grad(), capture_input(m.module("mlp_out", layer)) as seen:
        body_forward(m, x, None, pos, use_cache=False)
    return seen[0][0]


def test_grace_fires_inside_its_radius_and_gives_the_base_output_exactly_outside():
    m = tiny_model("llama")
    base = es.evaluate(m, PROBES, score_targets="all")
    es.apply_edit(m, REQ, "grace", layer=1, eps=0.5)
    book = next(iter(installed(m).values()))
    assert isinstance(book, GraceCodebook) and len(book) == 1
    key = book.tensors()["keys"][0]
    assert torch.equal(key, _keys(m, "2+2=", 1)[-1])
    after = es.evaluate(m, PROBES, score_targets="all")
    for i, p in enumerate(PROBES):
        far = bool((torch.cdist(_keys(m, p.prompt, 1), key[None]) > 0.5).all())
        if p.prompt == "2+2=":
            assert not far and after.rows[i]["logprob"] > base.rows[i]["logprob"] + 1
        else:
            assert far, "the probe's keys should all lie outside the radius"
            assert after.rows[i]["logprob"] == base.rows[i]["logprob"], "outside epsilon GRACE must not act"
            assert after.rows[i]["unchanged"]


def test_grace_codebook_rules_add_expand_and_split():
    m = tiny_model("llama")
    h1 = es.apply_edit(m, REQ, "grace", layer=1, eps=1.0)
    book = next(iter(installed(m).values()))
    assert h1.info["actions"] == ["added"]
    # the same prompt with another target: split (d = 0, so both radii shrink to ~0; the new entry wins)
    h2 = es.apply_edit(m, es.EditRequest("2+2=", "6"), "grace", layer=1, eps=1.0)
    book = next(iter(installed(m).values()))
    assert h2.info["actions"] == ["split"] and len(book) == 2
    assert book.tensors()["eps"][0] < 0 <= book.tensors()["eps"][1]
    assert book.config["labels"] == ["5", "6"]
    h2.undo()
    # a nearby key with the same target: expand the radius instead of adding an entry
    book = next(iter(installed(m).values()))
    d = float(torch.cdist(_keys(m, "2+2 =", 1)[-1:], book.tensors()["keys"]).min())
    h3 = es.apply_edit(m, es.EditRequest("2+2 =", "5"), "grace", layer=1, eps=d)
    book = next(iter(installed(m).values()))
    assert h3.info["actions"] == ["expanded"] and len(book) == 1
    assert abs(float(book.tensors()["eps"][0]) - d) < 1e-4
    with pytest.raises(EditHandleError, match="later edit"):
        h1.undo()
    h3.undo()
    h1.undo()
    assert not installed(m)


def test_grace_keeps_a_hundred_sequential_edits_exactly():
    from editscope.methods import target_losses

    m = tiny_model("llama")
    reqs = [es.EditRequest(f"{a}+{b}=", str((a + b + 1) % 10)) for a in range(10) for b in range(10)]
    right_after = []
    for r in reqs:
        h = es.apply_edit(m, r, "grace", layer=1, steps=10, eps=1e-3)
        right_after.append(h.info["target_loss_after"][0])
    book = next(iter(installed(m).values()))
    assert len(book) == 100 and len(active_edits(m)) == 100
    assert target_losses(m, reqs) == pytest.approx(right_after, abs=1e-5), "GRACE edits do not interfere"


def test_wise_keeps_editing_one_side_memory_over_a_hundred_sequential_edits():
    m = tiny_model("llama")
    reqs = [es.EditRequest(f"{a}+{b}=", str((a + b + 1) % 10)) for a in range(10) for b in range(10)]
    thresholds = []
    for r in reqs:
        es.apply_edit(m, r, "wise", layer=1, n_templates=1, steps=3, guard_tolerance=100)
        mem = next(iter(installed(m).values()))
        thresholds.append(float(mem.tensors()["threshold"]))
    assert len(installed(m)) == 1 and mem.config["edits"] == 100 and len(active_edits(m)) == 100
    assert all(b <= a for a, b in zip(thresholds, thresholds[1:])), "the threshold is a running minimum"
    assert torch.isfinite(mem.tensors()["delta"]).all()
    for h in reversed(active_edits(m)):
        h.undo()
    assert not installed(m)


def test_wise_routes_only_inputs_that_activate_the_side_memory():
    m = tiny_model("llama")
    es.apply_edit(m, REQ, "wise", layer=1, n_templates=2, steps=30)
    mem = next(iter(installed(m).values()))
    thr = float(mem.tensors()["threshold"])
    delta = mem.tensors()["delta"]
    assert 0 < thr < float("inf") and float(delta.abs().max()) <= 1.0 + 1e-6
    trained = (delta != 0)
    assert not bool(trained[~mem.tensors()["mask"]].any()), "entries outside the shard's mask never train"
    edit_score = (_keys(m, "2+2=", 1)[-1] @ delta.T).norm()
    assert float(edit_score) > thr


@pytest.mark.parametrize("method", sorted(FAST))
def test_save_and_load_round_trip(method, tmp_path, pool):
    m = tiny_model("llama")
    es.evaluate(m, PROBES)
    h = es.apply_edit(m, REQ, method, **_hp(method, pool))
    edited = _lp(es.evaluate(m, PROBES))
    key = m.state_key()
    h.save(tmp_path / "e")
    man = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert man["kind"] == get_method(method).kind and list(man["interventions"]) == h.sites
    h.undo()
    h2 = es.load_edit(m, tmp_path / "e")
    assert m.state_key() == key and _lp(es.evaluate(m, PROBES)) == edited
    h2.undo()
    # onto another base model or another architecture: refused, nothing installed
    other = tiny_model("llama", seed=1)
    with pytest.raises(EditLoadError, match="base fingerprint"):
        es.load_edit(other, tmp_path / "e")
    gpt2 = tiny_model("gpt2")
    with pytest.raises(EditLoadError, match="made on a llama model"):
        es.load_edit(gpt2, tmp_path / "e")
    assert not installed(other) and not installed(gpt2)


def test_a_later_codebook_edit_does_not_load_without_the_earlier_one(tmp_path):
    m = tiny_model("llama")
    h1 = es.apply_edit(m, REQ, "grace", layer=1)
    h2 = es.apply_edit(m, es.EditRequest("3+3=", "7"), "grace", layer=1)
    h2.save(tmp_path / "second")
    h2.undo()
    h1.undo()
    with pytest.raises(EditLoadError, match="not in the state it was made on"):
        es.load_edit(m, tmp_path / "second")
    assert not installed(m)


def test_a_loaded_alphaedit_edit_re_registers_its_keys(tmp_path, monkeypatch):
    from locate_settings import EASY

    m = tiny_model("llama")
    hp = {**EASY, "layers": [1]}
    h = es.apply_edit(m, es.EditRequest("2+2=", "5", subject="2+2"), "alphaedit", **hp)
    keys = [k.clone() for _, k in m.state.alphaedit_keys[1]]
    h.save(tmp_path / "a")
    h.undo()
    assert m.state.alphaedit_keys[1] == []
    h2 = es.load_edit(m, tmp_path / "a")
    again = [k for hid, k in m.state.alphaedit_keys[1] if hid == id(h2)]
    assert len(again) == len(keys) and all(torch.equal(a, b) for a, b in zip(again, keys))


@pytest.mark.parametrize("method, hp, match", [
    ("grace", {"eps": 0}, r"eps"),
    ("grace", {"eps": -1.0}, r"eps"),
    ("grace", {"layer": 7}, r"layer=7 is outside the model"),
    ("wise", {"layer": 9}, r"layer=9 is outside the model"),
    ("wise", {"mask_ratio": 0}, r"mask_ratio"),
    ("ike", {"pool": "/no/such/pool.json"}, r"pool=.*cannot be read"),
    ("ike", {"pool": "EMPTY"}, r"pool="),
    ("ike", {"k": -1}, r"\bk\b"),
])
def test_bad_hyperparameters_are_refused_and_nothing_is_installed(method, hp, match, tmp_path):
    m = tiny_model("llama")
    if hp.get("pool") == "EMPTY":
        (tmp_path / "empty.json").write_text("[]")
        hp = {"pool": str(tmp_path / "empty.json")}
    before = _tree(m)
    with pytest.raises((HparamError, es.EditFailed, ValueError), match=match):
        es.apply_edit(m, REQ, method, **hp)
    assert _tree(m) == before and not installed(m) and not m.state.edit_stack


def test_installing_at_a_taken_site_or_a_wrong_module_is_refused():
    m = tiny_model("llama")
    es.apply_edit(m, REQ, "grace", layer=1)
    book = next(iter(installed(m).values()))
    from editscope.interventions import install

    with pytest.raises(InterventionError, match="already has an intervention"):
        install(m, book.copy())
    gpt2 = tiny_model("gpt2")
    with pytest.raises(InterventionError, match="made for module"):
        install(gpt2, book.copy())


def test_placebo_cannot_match_an_intervention_and_ike_has_no_sequential_protocol():
    base = {"name": "t", "model": "tiny:llama", "edits": [{"prompt": "2+2=", "target_new": "5"}],
            "probes": [{"suite": "arithmetic", "args": {"n": 3, "paraphrases": False}}]}
    with pytest.raises(ConfigError, match=r"match: 'grace' .*not a weight delta"):
        parse_config({**base, "methods": ["grace", {"method": "placebo", "match": "grace"}]}, "s.yaml")
    with pytest.raises(ConfigError, match=r"'ike' does not support the sequential protocol"):
        parse_config({**base, "methods": ["ike"], "protocol": {"kind": "sequential"}}, "s.yaml")


def test_key_statistics_refuse_a_model_with_an_intervention_below_the_layer():
    m = tiny_model("llama")
    es.apply_edit(m, REQ, "grace", layer=0)
    with pytest.raises(KeyStatsError, match="grace intervention"):
        key_statistics(m, 1, n_tokens=64, corpus=["me_ppl_50"], seq_len=16)


def test_runner_single_and_sequential_with_interventions(tmp_path, pool):
    edits = [{"prompt": f"{a}+{b}=", "target_new": str(a + b + 1)} for a, b in [(2, 2), (3, 1), (1, 2)]]
    study = {"name": "iv", "model": "tiny:llama", "seed": 0, "edits": edits,
             "methods": [{"method": "grace", "hparams": {"layer": 1}},
                         {"method": "wise", "hparams": {"layer": 1, "n_templates": 2, "steps": 10}}],
             "probes": [{"suite": "arithmetic", "args": {"n": 3, "paraphrases": False}}]}
    single = run_study(parse_config({**study, "methods": [*study["methods"], {"method": "ike", "hparams":
                                                                              {"k": 1, "pool": pool}}]}, "s.yaml"),
                       tmp_path / "single", progress=False)
    seq = run_study(parse_config({**study, "protocol": {"kind": "sequential", "guard": "off"}}, "s.yaml"),
                    tmp_path / "seq", progress=False)
    batch = run_study(parse_config({**study, "protocol": {"kind": "batch"}}, "s.yaml"), tmp_path / "batch",
                      progress=False)
    for run, n in ((single, 3 * 3 + 1), (seq, 2 * 3 + 1), (batch, 2 + 1)):
        s = ResultsStore(run / "results.sqlite")
        units = s.units()
        # (a random tiny model may read a context against the fact: IKE's guard may roll an edit back)
        assert len(units) == n and all(u.status == "done" for u in units if u.method != "ike")
        base_fp = next(u.fingerprint for u in units if u.method == "base")
        assert all(u.fingerprint != base_fp for u in units if u.method != "base" and u.status == "done"), \
            "each edited state is keyed as edited"
        grace = [u.fingerprint for u in units if u.method == "grace"]
        assert len(set(grace)) == len(grace), "each GRACE state has its own key"
        s.close()


def test_a_shared_prefix_runs_once_and_scores_like_full_passes(monkeypatch):
    import editscope.scoring as sc

    m = tiny_model("llama")
    context = "New Fact: 2+2=5\nPrompt: 1+1=2\n\nNew Fact: 2+2=5\nPrompt: "
    prompts = [context + p for p in ["3+3=", "1+2=", "The sky is", "2+2="]]
    pairs = sc.encode_pairs(m, prompts, ["6", "3", " blue", "5"])
    with torch.inference_mode():
        shared = sc.score_encoded(m, pairs, batch_size=2)
        gen_shared = sc.greedy_continuations(m, prompts, 4, batch_size=3, stop_at_eos=False)
    monkeypatch.setattr(sc.forward, "SHARED_PREFIX_MIN", 10_000)  # read by SharedPrefix.of
    with torch.inference_mode():
        full = sc.score_encoded(m, pairs, batch_size=2)
        gen_full = sc.greedy_continuations(m, prompts, 4, batch_size=3, stop_at_eos=False)
    assert sc.SharedPrefix.of(m, [list(p.prompt_ids) for p in pairs], 100) is None  # switched off here
    for a, b in zip(shared, full):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4) and a.argmax_ids == b.argmax_ids
    assert [g.token_ids for g in gen_shared] == [g.token_ids for g in gen_full]
    monkeypatch.undo()
    n = len(pairs[0].prompt_ids)
    pre = sc.SharedPrefix.of(m, [list(p.prompt_ids) for p in pairs], n - 1)
    assert pre is not None and sc.SHARED_PREFIX_MIN <= pre.length < n


def test_the_runner_evaluates_late_edits_from_kept_states_with_the_full_pass_results(tmp_path, monkeypatch):
    import editscope.runner.prepare as prepare
    import editscope.runner.units as units

    study = {"name": "late", "model": "tiny:llama", "seed": 0, "edits": [{"prompt": "2+2=", "target_new": "5"}],
             "methods": [{"method": "grace", "hparams": {"layer": 1}},
                         {"method": "ft-m", "hparams": {"layer": 1, "lr": 0.1}}],
             "probes": [{"suite": "arithmetic", "args": {"n": 3, "paraphrases": False}}]}
    cfg = parse_config(study, "s.yaml")
    m = tiny_model("llama")
    assert units.shared_first_block(m, build_plan(cfg).methods) == 1
    assert units.shared_first_block(m, parse_config({**study, "methods": ["ft"]}, "s.yaml").methods) is None
    assert units.shared_first_block(m, parse_config({**study, "methods": ["grace", "ike"]}, "s.yaml").methods) == 1
    seen = []
    real = units.evaluate

    def spy(model, probes, **kw):
        res = real(model, probes, **kw)
        seen.append(res.resumed_from)
        return res

    monkeypatch.setattr(units, "evaluate", spy)
    fast = run_study(cfg, tmp_path / "fast", progress=False)
    assert seen.count(1) == 2, "both edits were evaluated from block 1"
    monkeypatch.setattr(prepare, "shared_first_block", lambda model, methods: None)
    slow = run_study(cfg, tmp_path / "slow", progress=False)
    assert seen[-2:] == [None, None]

    def rows(run):
        s = ResultsStore(run / "results.sqlite")
        out = sorted(json.dumps(r, sort_keys=True) for r in s.rows())
        s.close()
        return out

    assert rows(fast) == rows(slow)
