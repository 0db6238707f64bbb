"""lm-evaluation-harness behind downstream: editscope's own PIQA, LAMBADA and SST-2 give the same
per-item log-probabilities and accuracies as the harness's task configs run through the adapter."""

import math

import pytest

from editscope.errors import InputError
from editscope.metrics.downstream import run_task
from editscope.metrics.harness import EditscopeLM, HARNESS_TASKS, evaluate_harness, harness_task
from editscope.models import tiny_model

N = 24


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", max_position_embeddings=4096)  # LAMBADA passages are long in the tiny vocabulary


@pytest.fixture(scope="module")
def harness(model):
    return evaluate_harness(model, list(HARNESS_TASKS), limit=N, log_samples=True)


def _per_item(samples):
    """doc order -> the harness's log-probabilities (one per choice, or the target's)."""
    rows = sorted(samples, key=lambda s: s["doc_id"])
    return [[r[0][0] for r in s["resps"]] for s in rows]


@pytest.mark.parametrize("task", sorted(HARNESS_TASKS))
def test_editscope_tasks_equal_the_harness_run_through_the_adapter(model, harness, task):
    ours = run_task(model, task, limit=N)
    theirs = harness["results"][f"editscope_{task}"]
    got = _per_item(harness["samples"][f"editscope_{task}"])
    assert len(got) == ours.n == N
    if task == "lambada":
        want = [[lp] for lp in ours.details.logprobs]
        assert math.isclose(theirs["perplexity,none"], ours.metrics["ppl"], rel_tol=1e-5)
    else:
        want = ours.details.logprobs
        if "acc_norm,none" in theirs:
            assert theirs["acc_norm,none"] == ours.metrics["acc_norm"]
    # same prompts, choices and targets: equal up to the float noise of different batch shapes
    assert all(math.isclose(a, b, rel_tol=0, abs_tol=1e-3) for g, w in zip(got, want) for a, b in zip(g, w))
    assert all(len(g) == len(w) for g, w in zip(got, want))
    assert theirs["acc,none"] == ours.metrics["acc"]


def test_a_different_prompt_is_seen(model):
    """The comparison can fail: the harness's PIQA without its "Answer:" cue scores other numbers."""
    import lm_eval

    cfg = harness_task("piqa")
    cfg["doc_to_text"] = "Question: {{goal}}"
    res = lm_eval.simple_evaluate(model=EditscopeLM(model), tasks=[cfg], limit=4, num_fewshot=0, log_samples=True,
                                  bootstrap_iters=0)
    ours = run_task(model, "piqa", limit=4).details.logprobs
    got = _per_item(res["samples"]["editscope_piqa"])
    assert all(abs(a - b) > 1e-3 for g, w in zip(got, ours) for a, b in zip(g, w))


def test_generation_and_rolling_requests_go_through_editscope(model):
    from lm_eval.api.instance import Instance

    lm = EditscopeLM(model, max_gen_toks=6)
    gen = Instance("generate_until", {}, ("The capital of France is", {"until": ["\n"], "max_gen_toks": 6}), 0)
    [text] = lm.generate_until([gen])
    assert "\n" not in text
    roll = Instance("loglikelihood_rolling", {}, ("2+2=4 and 3+3=6",), 0)
    [ll] = lm.loglikelihood_rolling([roll])
    assert ll < 0 and math.isfinite(ll)


def test_unknown_harness_task_names_the_known_ones():
    with pytest.raises(InputError, match="give one of piqa, lambada, sst2"):
        harness_task("arc")
