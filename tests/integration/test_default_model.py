"""Integration tests on the real default model (smollm2-135m)."""

import shutil
import subprocess
import sys

import pytest
import torch

import editscope as es
from editscope.models.packaged import PACKAGED_MODELS
from editscope.scoring import encode_pairs

from hf_reference import assert_greedy_matches_generate, assert_scoring_matches_hf

pytestmark = pytest.mark.integration


def test_default_model_is_llama_with_30_layers(default_model):
    m = default_model
    assert m.config.model_type == "llama" and m.n_layers == 30 and m.dtype == torch.float32
    assert m.arch.weight_out_in(m.module("mlp_out", 17)).shape == (576, 1536)
    assert m.name == "smollm2-135m" and m.max_length == 8192


def test_known_answers(default_model):
    top = es.top_k_next_tokens(default_model, ["The capital of France is"], k=5)[0]
    assert top[0][0] == " Paris" and top[0][1] > 0.5
    paris, rome = es.score_continuations(default_model, ["The capital of France is"] * 2, [" Paris", " Rome"])
    assert paris.greedy_match and paris.logprob > rome.logprob
    gen = es.greedy_continuations(default_model, ["The capital of France is"], 3)[0]
    assert gen.text.startswith(" Paris")


def test_llama_digits_have_no_leading_space_token(default_model):
    """The Llama leading-space trap: "2+2=" + "5" must score the digit token itself."""
    pair = encode_pairs(default_model, ["2+2="], ["5"])[0]
    assert pair.exact and default_model.tokenizer.decode(list(pair.cont_ids)) == "5"
    assert len(pair.cont_ids) == 1


PROMPTS = [
    ("2+2=", "5"), ("17*3=", "51"), ("The capital of France is", " Paris"),
    ("Danielle Darrieux's mother tongue is", " French"), ("The Eiffel Tower is located in the city of", " Paris"),
    ("Q: What is the largest planet in the solar system?\nA:", " Jupiter is the largest planet"),
    ("Apple was founded by", " Steve Jobs and Steve Wozniak in a garage"), ("x", " y"),
]


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_one_by_one_and_the_naive_forward(default_model, side):
    assert_scoring_matches_hf(default_model, PROMPTS, batch_size=5, side=side, abs_tol=1e-4)


def test_greedy_batched_equals_generate(default_model):
    assert_greedy_matches_generate(default_model, [p for p, _ in PROMPTS], 6, batch_size=4)


def test_bf16_agrees_with_fp32_on_top1(default_model):
    bf = es.load_model("smollm2-135m", dtype="bfloat16")
    prompts = [p for p, _ in PROMPTS]
    a = es.next_token_logprobs(default_model, prompts).argmax(-1)
    b = es.next_token_logprobs(bf, prompts).argmax(-1)
    assert (a == b).float().mean() >= 0.75


def test_cache_corruption_is_detected_and_rebuilt(tmp_path, monkeypatch):
    """A truncated safetensors file in the cache is rebuilt from the GGUF, never used."""
    src = PACKAGED_MODELS["smollm2-135m"]
    good = src.ensure_cache()
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path))
    copy = src.cache_dir()
    shutil.copytree(good, copy)
    assert src.is_cached()
    weights = copy / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(size // 2)
    assert not src.is_cached()
    m = es.load_model("smollm2-135m")
    assert weights.stat().st_size == size and src.is_cached()
    assert es.top_k_next_tokens(m, ["The capital of France is"], 1)[0][0][0] == " Paris"


def test_cli_models_and_peek():
    exe = [sys.executable, "-m", "editscope.cli"]
    out = subprocess.run(exe + ["models"], capture_output=True, text=True, check=True).stdout
    assert "smollm2-135m" in out and "gpt_neox" in out
    out = subprocess.run(exe + ["peek", "The capital of France is", "--k", "3"], capture_output=True,
                         text=True, check=True).stdout
    assert "Paris" in out and "top-3" in out
    bad = subprocess.run(exe + ["peek", "-m", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Known names" in bad.stderr and "Traceback" not in bad.stderr  # errors go to stderr


def test_cli_eval_offline_on_the_default_model():
    import json

    exe = [sys.executable, "-m", "editscope.cli"]
    out = subprocess.run(exe + ["eval", "-s", "arithmetic", "--prompt", "2+2=", "--target", "5", "--n", "2", "--json"],
                         capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    summary = report["summary"]
    assert report["watch"] == "5" and {"target", "paraphrase", "near", "far", "all"} <= set(summary)
    assert summary["all"]["unchanged"]["value"] == 1.0  # the unedited model is its own base
    assert summary["all"]["unchanged"]["n"] == report["n_probes"]
    assert 0.0 <= summary["target"]["prob"]["value"] <= 1.0
    table = subprocess.run(exe + ["suites"], capture_output=True, text=True, check=True).stdout
    assert "counterfact" in table and "arithmetic" in table
    bad = subprocess.run(exe + ["eval", "-s", "arithmetc"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Did you mean 'arithmetic'?" in bad.stderr.replace("\n", " ") and not bad.stdout


def test_the_arithmetic_model_is_built_from_its_shipped_adapter_to_the_recorded_weights(tmp_path, monkeypatch):
    """A machine without the cached model merges the shipped adapter (no training) and gets the very
    weights the build recorded, so stored runs on the model resume anywhere; it knows 2+2."""
    import json

    from editscope.models import derive as derive_mod
    from editscope.models.derive import RECIPES, derive, manifest_of, shipped_folder
    from editscope.models.state import fingerprint_of, tensor_digests

    # a derived-model cache of its own (the base model's cached safetensors are shared)
    monkeypatch.setattr(derive_mod, "folder_of", lambda r: tmp_path / "derived" / f"{r.name}-{r.digest()}")

    def no_training(*a, **kw):
        raise AssertionError("the shipped adapter must be merged, not trained again")

    monkeypatch.setattr(derive_mod, "_train", no_training)
    recipe = RECIPES["smollm2-135m-arith"]
    shipped = json.loads((shipped_folder(recipe) / "manifest.json").read_text())
    model = es.load_model(str(derive(recipe, progress=False)))
    assert fingerprint_of(tensor_digests(model.hf)) == shipped["weights_fingerprint"]
    assert manifest_of(recipe)["installed_from"] == "shipped adapter"
    gen = es.greedy_continuations(model, ["2+2=", "7+5="], 4)
    assert gen[0].text.startswith("4") and gen[1].text.startswith("12")  # the base model: "11" to both
