"""Causal tracing on tiny models: exact restoration, seeds, batching, windows, averages, bad input, CLI."""

import numpy as np
import pytest
import torch

from editscope.analysis.trace_average import TOKEN_CATEGORIES, average_indirect_effect, token_category
from editscope.analysis.tracing import (
    TraceError,
    TraceResult,
    _clean_states,
    _window,
    patched_probabilities,
    subject_range,
    target_token,
    trace,
)
from editscope.models.tiny import tiny_model
from editscope.scoring import encode_pairs, encode_prompts

pytestmark = pytest.mark.usefixtures("tmp_cache")

PROMPT, SUBJECT = "The capital of 2+2 is", "2+2"


@pytest.fixture(scope="module", params=["llama", "gpt_neox"])
def model(request):
    return tiny_model(request.param)


def _noise(m, n_subj: int, samples: int = 3, seed: int = 0) -> torch.Tensor:
    d = m.hf.config.hidden_size
    return torch.randn(samples, n_subj, d, generator=torch.Generator().manual_seed(seed)) * 3.0


def test_restoring_every_state_of_a_block_recovers_the_clean_output_exactly(model):
    ids = encode_prompts(model, [PROMPT])[0]
    subj = subject_range(model, PROMPT, SUBJECT)
    clean, probs = _clean_states(model, ids)
    target = int(probs.argmax())
    z = _noise(model, subj[1] - subj[0])
    restores = [(), *[[("hidden", layer, t) for t in range(len(ids))] for layer in range(model.n_layers)]]
    p = patched_probabilities(model, ids, target, z, subj, restores, clean)
    assert not np.allclose(p[0], probs[target].item(), atol=1e-4)  # the noise does change the answer's probability
    assert np.allclose(p[1:], probs[target].item(), atol=1e-6)     # every block's full state puts it back exactly
    # so does the last block's state at the last token alone, and with no noise nothing changes
    last = patched_probabilities(model, ids, target, z, subj, [[("hidden", model.n_layers - 1, len(ids) - 1)]], clean)
    assert np.allclose(last, probs[target].item(), atol=1e-6)
    zero = patched_probabilities(model, ids, target, torch.zeros_like(z[:1]), subj, [()], clean)
    assert np.allclose(zero, probs[target].item(), atol=1e-6)
    # an MLP or attention output restored in every block at every token (noise only in the embeddings)
    for kind in ("mlp", "attn"):
        every = [(kind, layer, t) for layer in range(model.n_layers) for t in range(len(ids))]
        got = patched_probabilities(model, ids, target, z, subj, [every], clean)
        assert got.shape == (1, 3)


def test_trace_is_seeded_and_batching_does_not_change_it(model):
    a = trace(model, PROMPT, None, SUBJECT, samples=3, window=2, cache=False)
    b = trace(model, PROMPT, None, SUBJECT, samples=3, window=2, cache=False, batch_size=1)
    c = trace(model, PROMPT, None, SUBJECT, samples=3, window=2, cache=False, seed=1)
    n_tok = len(encode_prompts(model, [PROMPT])[0])
    for k in ("hidden", "mlp", "attn"):
        assert a.grid(k).shape == (n_tok, model.n_layers)
        assert np.allclose(a.grid(k), b.grid(k), atol=1e-6)
        assert np.all(a.grid(k) >= np.array(a.low[k]) - 1e-12) and np.all(a.grid(k) <= np.array(a.high[k]) + 1e-12)
    assert a.p_corrupt_samples == pytest.approx(b.p_corrupt_samples, abs=1e-6)
    assert a.p_corrupt_samples != pytest.approx(c.p_corrupt_samples, abs=1e-9)
    # the last block's residual state at the last token is the clean output
    assert a.grid("hidden")[-1, -1] == pytest.approx(a.p_clean, abs=1e-6)
    assert a.indirect_effect("hidden")[-1, -1] == pytest.approx(a.p_clean - a.p_corrupt, abs=1e-6)
    assert a.subject_range[1] - a.subject_range[0] >= 2 and a.tokens[a.last_subject].strip() == "2"


def test_results_are_cached_by_their_settings(monkeypatch):
    m = tiny_model("llama")
    first = trace(m, PROMPT, None, SUBJECT, samples=2, window=1)
    import editscope.analysis.tracing as tracing

    monkeypatch.setattr(tracing, "patched_probabilities", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = trace(m, PROMPT, None, SUBJECT, samples=2, window=1)
    assert again == first and TraceResult.from_json(first.to_json()) == first
    with pytest.raises(AssertionError, match="recomputed"):
        trace(m, PROMPT, None, SUBJECT, samples=2, window=1, seed=5)


def test_the_window_is_the_papers():
    assert list(_window(0, 10, 30)) == list(range(0, 5))
    assert list(_window(15, 10, 30)) == list(range(10, 20))
    assert list(_window(29, 10, 30)) == list(range(24, 30))
    assert list(_window(3, 1, 30)) == [3] and list(_window(3, 3, 30)) == [2, 3, 4]


def test_bad_input_is_refused_with_the_fix():
    m = tiny_model("llama")
    for kwargs, match in [({"subject": "3+3"}, r"subject '3\+3' not found in prompt 'The capital of 2\+2 is'"),
                          ({"window": 99}, r"window=99: must be between 1 and the model's 2 blocks"),
                          ({"samples": 1}, "at least 2 noise samples"), ({"noise": 0.0}, "must be > 0"),
                          ({"kinds": ("mlp", "ffn")}, "choose from hidden, mlp, attn")]:
        args = {"prompt": PROMPT, "subject": SUBJECT, "window": 1, **kwargs}
        with pytest.raises(TraceError, match=match):
            trace(m, args.pop("prompt"), None, args.pop("subject"), cache=False, **args)
    # a target the model does not predict: traced, with its low clean probability said, never divided by
    r = trace(m, PROMPT, " zebra", SUBJECT, samples=2, window=1, cache=False)
    assert r.p_clean < 0.05 and "only P =" in r.warnings[0]
    assert np.isfinite(r.indirect_effect("hidden")).all()


def _fake(tokens: int, subj: tuple[int, int], grid: np.ndarray, p_corrupt: float) -> TraceResult:
    g = grid.tolist()
    return TraceResult("p", "s", "t", 1, [f"t{i}" for i in range(tokens)], subj, 0.9, p_corrupt, [p_corrupt] * 2,
                       {"hidden": g}, {"hidden": g}, {"hidden": g}, 2, 3.0, 1.0, 1, 0)


def test_average_indirect_effect_groups_tokens_as_the_paper():
    r1 = _fake(5, (1, 3), np.arange(10).reshape(5, 2) / 10, 0.1)   # tokens: before, first, last subj, next, last
    r2 = _fake(4, (0, 3), np.ones((4, 2)) * 0.5, 0.2)               # first, middle, last subject, last
    assert [token_category(r1, t) for t in range(5)] == [None, "first subject token", "last subject token",
                                                         "first subsequent token", "last token"]
    assert [token_category(r2, t) for t in range(4)] == ["first subject token", "middle subject tokens",
                                                         "last subject token", "last token"]
    e = average_indirect_effect([r1, r2], "hidden")
    row = TOKEN_CATEGORIES.index("last subject token")
    assert e.mean[row] == pytest.approx([(0.4 - 0.1 + 0.5 - 0.2) / 2, (0.5 - 0.1 + 0.5 - 0.2) / 2])
    assert e.n == [2, 1, 2, 1, 0, 2]
    assert np.isnan(e.mean[TOKEN_CATEGORIES.index("further tokens")]).all()
    assert (e.low[row] <= e.mean[row]).all() and (e.high[row] >= e.mean[row]).all()
    with pytest.raises(TraceError, match="no traces"):
        average_indirect_effect([], "hidden")


def test_cli_trace_writes_the_heatmaps(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import editscope
    from editscope.cli import app

    monkeypatch.setattr(editscope, "load_model", lambda name, dtype=None: tiny_model("llama"))
    r = CliRunner().invoke(app, ["trace", "--prompt", PROMPT, "--subject", SUBJECT, "--samples", "2", "--window", "1",
                                 "--out", str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    for name in ("trace.json", "trace.png", "trace.pdf"):
        assert (tmp_path / "t" / name).stat().st_size > 0
    assert "largest indirect effect" in r.output and "block" in r.output
    res = TraceResult.from_json((tmp_path / "t" / "trace.json").read_text())
    assert res.prompt == PROMPT and set(res.scores) == {"hidden", "mlp", "attn"}
    r = CliRunner().invoke(app, ["trace", "--prompt", PROMPT, "--subject", "nope", "--window", "1", "--out", str(tmp_path / "u")])
    assert r.exit_code == 2 and "not found in prompt" in r.output
    for flag, value, fix in (("--limit", "0", "at least 1"), ("--samples", "1", "at least 2")):
        r = CliRunner().invoke(app, ["trace", "--arithmetic", "+", flag, value, "--out", str(tmp_path / "v")])
        assert r.exit_code == 2 and f"{flag} {value}: must be {fix}" in r.output and not (tmp_path / "v").exists()


@pytest.mark.parametrize("arch, window", [("llama", None), ("gptj", None), ("gpt2", None), ("gpt_neox", None),
                                          ("gemma3_text", 4), ("gemma3_text", 64)])
def test_starting_rows_at_their_first_restored_block_and_token_changes_nothing(arch, window):
    from editscope.analysis.tracing import _cache_keeps_every_token

    m = tiny_model(arch, **({"sliding_window": window} if window else {}))
    ids = encode_prompts(m, [PROMPT])[0]
    # a sliding window shorter than the prompt drops early keys: tokens are then not skipped
    assert _cache_keeps_every_token(m, len(ids)) == (window is None or window > len(ids))
    subj = subject_range(m, PROMPT, SUBJECT)
    assert subj[1] - subj[0] >= 2
    clean, probs = _clean_states(m, ids)
    z = _noise(m, subj[1] - subj[0])
    # from the subject's first token, from inside it (the noise cut to the tokens run), after it, at
    # the last token, before it, and one restore over two tokens
    restores = [(), [("hidden", 0, subj[0])], [("hidden", 0, subj[0] + 1)], [("mlp", 0, 3), ("mlp", 1, 3)],
                [("attn", 1, len(ids) - 1)], [("hidden", 0, 0)], [("hidden", 1, subj[1]), ("hidden", 1, subj[0] + 1)]]
    target = int(probs.argmax())
    fast = patched_probabilities(m, ids, target, z, subj, restores, clean, batch_size=4)
    full = patched_probabilities(m, ids, target, z, subj, restores, clean, batch_size=4, skip_early=False)
    assert np.allclose(fast, full, atol=1e-6) and not np.allclose(fast[0], fast[1])



def test_cells_before_the_subject_are_the_corrupted_run_without_running_them(model):
    r = trace(model, PROMPT, None, SUBJECT, samples=3, window=2, cache=False)
    s = r.subject_range[0]
    assert s > 0
    ids = encode_prompts(model, [PROMPT])[0]
    clean, _ = _clean_states(model, ids)
    z = torch.randn(3, r.subject_range[1] - s, model.hf.config.hidden_size,
                    generator=torch.Generator().manual_seed(r.seed)) * (r.noise * r.noise_std)
    top = model.n_layers - 1
    for kind in ("hidden", "mlp"):
        layers = [top] if kind == "hidden" else list(_window(top, 2, model.n_layers))
        ran = patched_probabilities(model, ids, r.target_id, z, r.subject_range,
                                    [[(kind, j, t) for j in layers] for t in range(s)], clean)
        assert np.allclose(ran.mean(axis=1), r.grid(kind)[:s, top], atol=1e-6)
        assert np.allclose(r.grid(kind)[:s], r.p_corrupt)
    assert not np.allclose(r.grid("hidden")[s:], r.p_corrupt)  # the subject's own states do restore

def test_trace_studies_store_each_case_once_and_resume_after_a_kill(tmp_path):
    import json

    from editscope.analysis.trace_study import arithmetic_cases, dataset_cases, load_traces, read_traces, trace_cases

    m = tiny_model("llama")
    cases = arithmetic_cases("+", range(3))
    assert [c.prompt for c in cases[:4]] == ["0+0=", "0+1=", "0+2=", "1+0="] and cases[0].subject == "0+0"
    out = tmp_path / "arith"
    got = trace_cases(m, cases, out, limit=3, samples=2, window=1, known_only=False)
    assert len(got) == 3 and [r.prompt for r in got] == ["0+0=", "0+1=", "0+2="]
    # a kill mid-write leaves a torn line: it is dropped and that case traced again, none twice
    path = out / "traces.jsonl"
    path.write_text(path.read_text() + '{"case": "1+0", "status": "tra')
    got = trace_cases(m, cases, out, limit=5, samples=2, window=1, known_only=False)
    _, lines = read_traces(out)
    assert [ln["case"] for ln in lines] == ["0+0", "0+1", "0+2", "1+0", "1+1"] and len(got) == 5
    again = trace_cases(m, cases, out, limit=5, samples=2, window=1, known_only=False)
    assert [r.to_json() for r in again] == [r.to_json() for r in got]  # nothing recomputed or appended
    meta, _ = load_traces(out)
    assert meta["settings"]["samples"] == 2 and meta["noise_std"] > 0
    with pytest.raises(TraceError, match="another model or settings"):
        trace_cases(m, cases, out, samples=3, window=1, known_only=False)
    # a dataset: only facts the model knows are traced unless asked; the rest are recorded as skipped
    records = [{"case_id": i, "prompt": f"{s} is located in", "subject": s, "target_new": "Rome", "ground_truth": "Paris",
                "rephrase_prompt": f"{s} can be found in", "locality_prompt": "2+2=", "locality_ground_truth": "4"}
               for i, s in enumerate(["The tower", "The bridge"])]
    src = tmp_path / "cf.json"
    src.write_text(json.dumps(records))
    facts = dataset_cases("counterfact", str(src))
    assert [(c.subject, c.target) for c in facts] == [("The tower", "Paris"), ("The bridge", "Paris")]
    assert trace_cases(m, facts, tmp_path / "known", samples=2, window=1) == []
    _, lines = read_traces(tmp_path / "known")
    assert [ln["status"] for ln in lines] == ["skipped", "skipped"] and "not known" in lines[0]["reason"]
    assert len(trace_cases(m, facts, tmp_path / "all", samples=2, window=1, known_only=False)) == 2
    # a fact the model knows: its top-1 after "The capital speaks" is " two", and the answer is
    # written "two" as datasets write it (the separator is resolved as for every probe)
    known = {**records[0], "case_id": 9, "prompt": "The capital speaks", "subject": "The capital", "ground_truth": "two"}
    src.write_text(json.dumps([*records, known]))
    got = trace_cases(m, dataset_cases("counterfact", str(src)), tmp_path / "knows", samples=2, window=1)
    assert [(r.prompt, r.target) for r in got] == [("The capital speaks", " two")]
    assert got[0].target_id == target_token(m, "The capital speaks", " two")
    assert target_token(m, "2+2=", "5") == encode_pairs(m, ["2+2="], ["5"])[0].cont_ids[0]  # no space after "="
    # a record's explicit separator is the one scored (here none, where one space would be resolved)
    jl = tmp_path / "sep.jsonl"
    jl.write_text("\n".join(json.dumps({"prompt": "The capital speaks", "subject": "The capital", "target_new": "x",
                                        "target_true": "two", **extra}) for extra in ({"sep": ""}, {})))
    glued, spaced = dataset_cases("jsonl", str(jl))
    assert (glued.sep, spaced.sep) == ("", None)
    assert target_token(m, glued.prompt, "two", glued.sep) == encode_pairs(m, [glued.prompt], ["two"])[0].cont_ids[0]
    assert target_token(m, glued.prompt, "two", "") != target_token(m, glued.prompt, "two")
    got = trace_cases(m, [glued, spaced], tmp_path / "sep", samples=2, window=1, known_only=False)
    assert [r.target_id for r in got] == [target_token(m, glued.prompt, "two", ""), target_token(m, glued.prompt, "two")]
    with pytest.raises(TraceError, match="use \\+ - \\*"):
        arithmetic_cases("/")


def test_trace_write_ups_take_every_number_from_the_stored_traces(tmp_path):
    from editscope.analysis.trace_report import write_trace_document
    from editscope.analysis.trace_study import arithmetic_cases, trace_cases

    m = tiny_model("llama")
    results = trace_cases(m, arithmetic_cases("+", range(2)), tmp_path / "arith", samples=2, window=1, known_only=False)
    e = average_indirect_effect(results, "mlp")
    row = TOKEN_CATEGORIES.index("last subject token")
    peak = int(np.argmax(e.mean[row]))
    tpl = tmp_path / "t.md.in"
    tpl.write_text("n {{traces:arith:n}} of {{traces:arith:considered}}, samples {{traces:arith:meta:samples}}; "
                   "P {{traces:arith:p_clean}} -> {{traces:arith:p_corrupt}}; "
                   "mlp peak {{aie:arith:mlp:last subject token:peak}}; at 0 {{aie:arith:hidden:last token:0}}\n\n"
                   "{{aie_table:arith}}\n\n{{figure:arith:average_effect}}\n{{figure:arith:trace:1+1}}\n")
    out = write_trace_document(tpl, tmp_path / "doc" / "t.md", {"arith": tmp_path / "arith"})
    text = out.read_text()
    assert text.startswith("n 4 of 4, samples 2; ")
    pc, pz = np.array([r.p_clean for r in results]), np.array([r.p_corrupt for r in results])
    half = 3.182446 * pc.std(ddof=1) / 2  # t(0.975, 3) * s / sqrt(4)
    assert f"P {pc.mean():.3f} [{pc.mean() - half:.3f}, {pc.mean() + half:.3f}] -> {pz.mean():.3f} [" in text
    assert f"mlp peak block {peak}: {e.mean[row, peak]:+.4f} [{e.low[row, peak]:+.4f}, {e.high[row, peak]:+.4f}]" in text
    h = average_indirect_effect(results, "hidden")
    last = TOKEN_CATEGORIES.index("last token")
    assert f"at 0 {h.mean[last, 0]:+.4f} [" in text
    assert "| mlp | last subject token | 4 |" in text and "{{" not in text
    assert (tmp_path / "doc" / "figures" / "arith_average_effect.png").is_file()
    assert (tmp_path / "doc" / "figures" / "arith_trace_1-1.png").is_file()
    for bad, match in [("{{aie:arith:mlp:middle of nowhere:peak}}", "unknown token category"),
                       ("{{aie:nope:mlp:last token:peak}}", "no trace study 'nope'"),
                       ("{{aie:arith:mlp:last token:99}}", "block '99' is not one of 0..1"),
                       ("{{figure:arith:trace:9+9}}", "no traced case '9\\+9'"), ("{{traces:arith:meta:colour}}", "no metadata")]:
        tpl.write_text(bad)
        with pytest.raises(TraceError, match=match):
            write_trace_document(tpl, tmp_path / "doc" / "bad.md", {"arith": tmp_path / "arith"})


def test_trace_studies_travel_as_archives_and_write_ups_come_from_the_cli(tmp_path, monkeypatch):
    import tarfile

    from typer.testing import CliRunner

    from editscope.analysis.trace_report import is_trace_template, referenced_sets
    from editscope.analysis.trace_study import arithmetic_cases, export_traces, read_traces, trace_cases, unpack_traces
    from editscope.cli import app

    m = tiny_model("llama")
    trace_cases(m, arithmetic_cases("+", range(2)), tmp_path / "arith", samples=2, window=1, known_only=False)
    with (tmp_path / "arith" / "traces.jsonl").open("a") as f:
        f.write('{"case": "torn')  # a killed run's last line is left out of the archive
    archive = export_traces(tmp_path / "arith", tmp_path / "a.traces.tar.xz")
    back = unpack_traces(archive, tmp_path / "back")
    assert read_traces(back) == read_traces(tmp_path / "arith") and len(read_traces(back)[1]) == 4
    with pytest.raises(TraceError, match="must end in .traces.tar.xz"):
        export_traces(tmp_path / "arith", tmp_path / "a.tar.xz")
    with pytest.raises(TraceError, match="not a new or empty folder"):
        unpack_traces(archive, back)
    with tarfile.open(tmp_path / "other.traces.tar.xz", "w:xz") as tar:
        tar.add(tmp_path / "arith" / "meta.json", arcname="../evil.json")
    with pytest.raises(TraceError, match="not a trace study"):
        unpack_traces(tmp_path / "other.traces.tar.xz", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists() and not (tmp_path / "evil.json").exists()
    (tmp_path / "junk.traces.tar.xz").write_bytes(b"not xz")
    with pytest.raises(TraceError, match="not a readable trace archive"):
        unpack_traces(tmp_path / "junk.traces.tar.xz", tmp_path / "nothing")

    tpl = tmp_path / "t.md.in"
    tpl.write_text("{{traces:arith:n}} traces; {{aie:arith:mlp:last subject token:peak}}\n\n{{figure:arith:average_effect}}\n")
    assert referenced_sets(tpl.read_text()) == ["arith"] and is_trace_template(tpl.read_text())
    assert not is_trace_template("{{table:main}} {{figure:collapse}}")
    runner = CliRunner()
    got = runner.invoke(app, ["trace", "--doc", str(tpl), "--with", f"arith={back}", "--out", str(tmp_path / "doc" / "t.md")])
    assert got.exit_code == 0, got.output
    text = (tmp_path / "doc" / "t.md").read_text()
    assert text.startswith("4 traces; block ") and (tmp_path / "doc" / "figures" / "arith_average_effect.png").is_file()
    # the CLI's export/unpack take trace studies too
    assert runner.invoke(app, ["export", str(back), str(tmp_path / "b.traces.tar.xz")]).exit_code == 0
    assert runner.invoke(app, ["unpack", str(tmp_path / "b.traces.tar.xz"), str(tmp_path / "b")]).exit_code == 0
    assert read_traces(tmp_path / "b") == read_traces(back)
    monkeypatch.chdir(tmp_path)  # the default folder of a set is runs/SET
    got = runner.invoke(app, ["trace", "--doc", str(tpl), "--out", str(tmp_path / "doc" / "u.md")])
    assert got.exit_code == 2 and "runs/arith" in got.output
