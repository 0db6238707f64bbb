"""Derived models on tiny models: a recipe builds, caches, reloads bit-identically, refuses
overlapping splits, resumes after an interruption (in process and after kill -9) to the same weights,
and records the held-out evaluation it reports."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from editscope.models import load_model
from editscope.models import derive as derive_mod
from editscope.models.derive import (ArithmeticData, DerivedModelError, LoraSpec, Preserve, Recipe, RecipeError,
                                     derive, folder_of, held_out_accuracy, is_built, manifest_of, register_recipe,
                                     ship, shipped_folder)
from editscope.models.state import tensor_digests

TINY = Recipe(name="tiny-arith-test", base="tiny:llama", data=ArithmeticData(ranges={"+": (0, 4), "*": (0, 3)}),
              lr=1e-2, steps=8, batch_size=4, checkpoint_every=2)


def _weights(folder):
    """The model's tensors and, for a LoRA recipe, its stored adapter's (not views of the files)."""
    from safetensors.torch import load_file

    out = {k: v.clone() for k, v in load_file(str(folder / "model.safetensors")).items()}
    if (folder / "adapter.safetensors").is_file():
        out.update({f"adapter:{k}": v.clone() for k, v in load_file(str(folder / "adapter.safetensors")).items()})
    return out


def test_split_is_disjoint_seeded_and_refuses_training_on_held_out_pairs():
    train, held = TINY.data.split()
    assert not set(train) & set(held) and len(train) + len(held) == 25 + 16
    assert {op for _, op, _ in held} == {"+", "*"}  # every operation is evaluated
    assert TINY.data.split() == (train, held)
    a, op, b = held[0]
    bad = ArithmeticData(ranges={"+": (0, 4), "*": (0, 3)}, train_extra=(f"{a}{op}{b}",))
    with pytest.raises(RecipeError, match=r"train_extra: 1 pair\(s\) are in the held-out split"):
        bad.split()
    with pytest.raises(ValueError, match="operation '/'"):
        ArithmeticData(ranges={"/": (0, 3)})
    assert TINY.digest() == TINY.model_copy(update={"name": "other", "eval_limit": 3}).digest()
    assert TINY.digest() != TINY.model_copy(update={"seed": 1}).digest()


def test_a_recipe_builds_caches_and_reloads_bit_identically(tmp_cache):
    register_recipe(TINY, overwrite=True)
    folder = derive(TINY, progress=False)
    assert is_built(TINY) and folder == folder_of(TINY)
    m = manifest_of(TINY)
    assert m["recipe_digest"] == TINY.digest() and len(m["losses"]) == TINY.steps
    assert m["train_pairs"] + m["held_out_pairs"] == 41 and set(m["held_out_accuracy"]) == {"+", "*"}
    from editscope.probes.arithmetic import FEW_SHOT, TEMPLATE_NAMES

    wordings = m["held_out_wordings"]  # every suite wording of the held-out pairs, none trained here
    assert set(wordings) == set(TEMPLATE_NAMES) - {FEW_SHOT} and not any(w["trained"] for w in wordings.values())
    assert not folder.with_name(folder.name + ".partial").exists()  # checkpoints go once the build is whole
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert derive(TINY, progress=False) == folder and (folder / "model.safetensors").stat().st_mtime_ns == mtime
    loaded = load_model("tiny-arith-test")  # by name, like a built-in
    assert loaded.name == "tiny-arith-test"
    assert tensor_digests(loaded.hf) == tensor_digests(load_model(str(folder)).hf)
    # the held-out evaluation recorded is the one the loaded model gives
    _, held = TINY.data.split()
    assert held_out_accuracy(loaded, held, TINY.eval_limit, TINY.seed) == m["held_out_accuracy"]


def test_a_damaged_cache_entry_is_rebuilt_and_said_so(tmp_cache, capsys):
    folder = derive(TINY, progress=False)
    good = _weights(folder)
    with open(folder / "model.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    assert not is_built(TINY)
    derive(TINY, progress=False)
    assert "does not match its manifest; rebuilding" in capsys.readouterr().err
    assert all((_weights(folder)[k] == v).all() for k, v in good.items())


def _keeping(tmp_path):
    """TINY with suite wordings and the KL-to-base term on a small text file."""
    corpus = tmp_path / "general.txt"
    corpus.write_text("The cat sat on the mat and looked at the garden for a long while. " * 40)
    return TINY.model_copy(update={
        "name": "tiny-arith-keep", "data": TINY.data.model_copy(update={"templates": ("question", "words")}),
        "preserve": Preserve(corpus=str(corpus), sequences=2, tokens=16)})


def test_wordings_are_trained_and_evaluated_and_bad_ones_refused():
    data = ArithmeticData(ranges={"+": (0, 4)}, templates=("question", "words"))
    train, _ = data.split()
    ex = data.examples(train)
    assert len(ex) == 2 * len(train) and ex[:len(train)] == [(f"{a}{o}{b}=", f"{a + b}\n") for a, o, b in train]
    worded = ex[len(train):]
    assert {p.startswith("What is") for p, _ in worded} == {True, False}  # both wordings drawn
    assert all(c == f" {a + b}\n" for (_, c), (a, _, b) in zip(worded, train))
    assert ArithmeticData(ranges={"+": (0, 4)}, end="").examples(train)[0][1] == str(sum(train[0][::2]))
    assert data.examples(train) == ex  # seeded
    with pytest.raises(ValueError, match="templates: template 'poem' is not one of grid, question"):
        ArithmeticData(templates=("poem",))


def test_the_keep_term_is_zero_at_the_base_and_pulls_towards_it(tmp_cache, tmp_path):
    keep = _keeping(tmp_path)
    base = derive_mod._load_base(keep)
    k = derive_mod._Keeper(keep, base)
    assert k.loss(0).item() == pytest.approx(0.0, abs=1e-6)  # the model is its base
    plain = keep.model_copy(update={"name": "tiny-arith-plain", "preserve": None})
    with_kl, without = derive_mod._load_base(keep), derive_mod._load_base(plain)
    derive_mod._train(keep, with_kl, plain.data.split()[0], tmp_path / "a.partial", False)
    derive_mod._train(plain, without, plain.data.split()[0], tmp_path / "b.partial", False)
    assert derive_mod._Keeper(keep, with_kl).loss(3).item() < derive_mod._Keeper(keep, without).loss(3).item()
    with pytest.raises(RecipeError, match="preserve.corpus"):
        derive_mod._Keeper(keep.model_copy(update={"preserve": Preserve(corpus=keep.preserve.corpus, tokens=4096)}),
                           base)


LORA = TINY.model_copy(update={"name": "tiny-arith-lora", "method": "lora", "lora": LoraSpec(rank=4, alpha=8.0),
                               "precision": "bf16"})


@pytest.mark.parametrize("variant", ["plain", "wordings-and-keep", "lora"])
def test_an_interrupted_build_resumes_to_the_same_weights(tmp_cache, tmp_path, monkeypatch, variant):
    TINY = {"plain": globals()["TINY"], "wordings-and-keep": _keeping(tmp_path), "lora": LORA}[variant]
    whole = _weights(derive(TINY, progress=False))
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "other-cache"))
    real, saved = derive_mod.save_checkpoint, []

    def stop_after_two(*a, **kw):
        real(*a, **kw)
        saved.append(1)
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(derive_mod, "save_checkpoint", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        derive(TINY, progress=False)
    folder = folder_of(TINY)
    assert not folder.exists()  # never a half-written model in the cache
    partial = json.loads((folder.with_name(folder.name + ".partial") / "state.json").read_text())
    assert partial["step"] == 4 and partial["runs"] == 1 and partial["seconds"] > 0
    monkeypatch.setattr(derive_mod, "save_checkpoint", real)
    resumed = _weights(derive(TINY, progress=False))
    assert set(resumed) == set(whole) and all((resumed[k] == whole[k]).all() for k in whole)
    assert [s for s, _ in manifest_of(TINY)["losses"]] == list(range(TINY.steps))
    # the build time counts both runs (the interrupted one's seconds travel in its checkpoint)
    assert manifest_of(TINY)["build_runs"] == 2 and manifest_of(TINY)["build_seconds"] >= round(partial["seconds"], 1)


_CHILD = """
import sys
from editscope.models.derive import ArithmeticData, Recipe, derive
r = Recipe(name="tiny-arith-kill", base="tiny:llama", data=ArithmeticData(ranges={"+": (0, 6)}), lr=1e-2,
           steps=400, batch_size=4, checkpoint_every=5)
derive(r, progress=False)
"""


def test_kill_9_during_a_build_leaves_no_model_and_the_rerun_resumes(tmp_path):
    env = {**os.environ, "EDITSCOPE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], env=env)
    derived = tmp_path / "cache" / "derived"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any((p / "state.json").is_file() for p in derived.glob("*.partial")) if derived.exists() else False:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    if proc.returncode == 0:
        pytest.skip("the build finished before it could be killed")
    # only checkpoints (a kill during a save leaves its temporary folder), never a model folder
    assert not [p for p in derived.iterdir() if ".partial" not in p.name]
    done = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (built,) = [p for p in derived.iterdir() if ".partial" not in p.name]
    assert json.loads((built / "manifest.json").read_text())["losses"][-1][0] == 399


def test_both_built_in_models_have_an_arithmetic_recipe():
    from editscope.models.derive import RECIPES

    a, b = RECIPES["smollm2-135m-arith"], RECIPES["gemma3-270m-arith"]
    assert (a.base, b.base) == ("smollm2-135m", "gemma3-270m") and a.digest() != b.digest()
    assert a.model_copy(update={"base": b.base, "name": b.name, "description": b.description}).digest() == b.digest()
    with pytest.raises(KeyError, match="smollm2-135m-arith"):
        RECIPES["smollm2-135m-arth"]  # did-you-mean


def test_a_study_on_a_derived_model_records_it_and_the_write_up_reads_it(tmp_cache, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from editscope.cli import app
    from editscope.report.documents.document import DocumentError, write_document
    from editscope.report.data.results import load_results

    register_recipe(TINY, overwrite=True)
    derive(TINY, progress=False)
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump({"name": "on-derived", "model": "tiny-arith-test", "seed": 0, "methods": ["ft-m"],
                                     "edits": [{"prompt": "2+2=", "target_new": "7"}],
                                     "probes": [{"suite": "arithmetic", "args": {"n": 2, "paraphrases": False}}]}))
    r = CliRunner().invoke(app, ["run", str(study), "--out", str(tmp_path / "run"), "--no-report"])
    assert r.exit_code == 0, r.output
    recorded = load_results(tmp_path / "run").meta["derived_model"]
    manifest = manifest_of(TINY)
    assert recorded["held_out_accuracy"] == manifest["held_out_accuracy"]
    assert recorded["recipe_digest"] == TINY.digest() and recorded["build_seconds"] == manifest["build_seconds"]
    tpl = tmp_path / "d.md.in"
    tpl.write_text("{{derived:held_out:+}} | {{derived:name}} | {{derived:recipe:lr}}\n")
    acc = manifest["held_out_accuracy"]["+"]
    text = write_document(tmp_path / "run", tpl, tmp_path / "d.md").read_text()
    assert text == f"{acc['accuracy']:.3f} ({acc['correct']}/{acc['n']}) | tiny-arith-test | {TINY.lr}\n"
    tpl.write_text("{{derived:recipe:data:ranges:+}}\n")  # a nested setting
    assert write_document(tmp_path / "run", tpl, tmp_path / "d.md").read_text() == "[0, 4]\n"
    tpl.write_text("{{derived:recipe:data:nope}}\n")
    with pytest.raises(DocumentError, match="the recipe has no 'data:nope'; have \\['end', 'focus'"):
        write_document(tmp_path / "run", tpl, tmp_path / "d.md")
    tpl.write_text("{{derived:held_out:/}}\n")
    with pytest.raises(DocumentError, match="no held_out entry '/'"):
        write_document(tmp_path / "run", tpl, tmp_path / "d.md")


def test_focus_pairs_are_shown_more_often_and_only_training_pairs():
    data = ArithmeticData(ranges={"+": (0, 9)}, focus=(0, 2), focus_repeat=3, templates=("question",))
    train, held = data.split()
    texts = data.examples(train)
    focus = [c for c in train if c[0] <= 2 and c[2] <= 2]
    assert len(texts) == 2 * (len(train) + 2 * len(focus))  # each shown 3 times, in grid form and a wording
    grid = [p for p, _ in texts[:len(texts) // 2]]
    for c in focus:
        assert grid.count(f"{c[0]}+{c[2]}=") == 3
    assert all(f"{a}+{b}=" not in grid for a, _, b in held)  # held-out pairs are never shown


def test_a_lora_recipe_trains_adapters_only_and_merges_them_into_the_projections(tmp_cache, monkeypatch):
    base = tensor_digests(derive_mod._load_base(LORA).hf)
    real, trained = derive_mod.save_checkpoint, []

    def record(path, tensors, *a, **kw):
        trained.append(sorted(tensors))
        real(path, tensors, *a, **kw)

    monkeypatch.setattr(derive_mod, "save_checkpoint", record)
    folder = derive(LORA, progress=False)
    assert trained and all(n and all("lora_" in k for k in n) for n in trained)  # the optimiser saw adapters only
    merged = tensor_digests(load_model(str(folder)).hf)
    assert set(merged) == set(base)  # the adapters are merged and unloaded: the base's own tensors
    changed = {k for k in base if merged[k] != base[k]}
    assert changed and all(k.endswith("proj.weight") for k in changed)  # embeddings and norms untouched
    from safetensors.torch import load_file

    adapter = load_file(str(folder / "adapter.safetensors"))
    assert adapter and all("lora_" in k and v.dtype == torch.bfloat16 for k, v in adapter.items())
    # the model is the base with the stored adapter merged: merging it again gives the same bits
    assert tensor_digests(derive_mod.merged_model(LORA, adapter).hf) == merged


def test_a_shipped_adapter_builds_the_model_without_training(tmp_cache, tmp_path, monkeypatch, capsys):
    folder = derive(LORA, progress=False)
    built = manifest_of(LORA)
    out = ship(LORA, tmp_path / "shipped")
    assert sorted(p.name for p in out.iterdir()) == ["adapter.safetensors", "manifest.json"]
    monkeypatch.setattr(derive_mod, "SHIPPED", [tmp_path / "shipped"])
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "new-machine"))
    assert shipped_folder(LORA) == out and not is_built(LORA)

    def no_training(*a, **kw):
        raise AssertionError("a shipped adapter must not be trained again")

    monkeypatch.setattr(derive_mod, "_train", no_training)
    again = derive(LORA)
    assert "merging the shipped adapter" in capsys.readouterr().err and is_built(LORA)
    m = manifest_of(LORA)
    assert m["weights_fingerprint"] == built["weights_fingerprint"] and m["installed_from"] == "shipped adapter"
    assert m["held_out_accuracy"] == built["held_out_accuracy"] and m["losses"] == built["losses"]
    built_weights, again_weights = _weights(folder), _weights(again)
    assert built_weights.keys() == again_weights.keys()
    assert all(torch.equal(built_weights[k], again_weights[k]) for k in built_weights)
    # a damaged adapter (or another base file) gives other weights: refused, naming the fix
    from safetensors.torch import load_file, save_file

    bad = load_file(str(out / "adapter.safetensors"))
    key = sorted(bad)[0]
    bad[key] = bad[key] + 1
    save_file(bad, str(out / "adapter.safetensors"))
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "third-machine"))
    with pytest.raises(DerivedModelError, match="not the build's .*--force"):
        derive(LORA, progress=False)
    assert not folder_of(LORA).exists()  # nothing cached from it
    # another recipe (another digest) does not pick the adapter up; a full recipe never ships
    assert shipped_folder(LORA.model_copy(update={"seed": 5})) is None
    with pytest.raises(RecipeError, match="only a LoRA recipe's adapter can ship"):
        ship(TINY, tmp_path / "x")
    with pytest.raises(DerivedModelError, match="is not built here"):
        ship(LORA.model_copy(update={"seed": 5}), tmp_path / "x")


def test_lora_settings_need_method_lora_and_new_fields_keep_old_digests():
    with pytest.raises(ValueError, match="lora: settings for LoRA adapters were given but method is 'full'"):
        Recipe.model_validate({**TINY.model_dump(), "lora": {"rank": 4}})
    assert Recipe.model_validate({**TINY.model_dump(), "method": "lora"}).lora == LoraSpec()
    # a recipe written before LoRA and bf16 existed keeps its digest (and so its cache and stored runs):
    # build 3 of the arithmetic model hashed to a61d4f647ac89e43 before these fields existed
    from editscope.models.derive import RECIPES

    assert RECIPES["smollm2-135m-arith-full"].digest() == "a61d4f647ac89e43"
    assert Recipe.model_validate({**TINY.model_dump(), "precision": "fp32"}).digest() == TINY.digest()
    assert TINY.model_copy(update={"precision": "bf16"}).digest() != TINY.digest()
    assert LORA.digest() != LORA.model_copy(update={"lora": LoraSpec(rank=8, alpha=8.0)}).digest()



def test_the_built_in_arithmetic_recipe_ships_its_adapter():
    from editscope.models.derive import RECIPES

    recipe = RECIPES["smollm2-135m-arith"]
    shipped = shipped_folder(recipe)
    assert shipped is not None, ("the smollm2-135m-arith recipe changed without shipping its adapter: "
                                 "editscope derive smollm2-135m-arith, then editscope.models.derive.ship(...)")
    manifest = json.loads((shipped / "manifest.json").read_text())
    assert manifest["recipe_digest"] == recipe.digest() and manifest["weights_fingerprint"]


def test_a_checkpoint_of_another_run_is_refused_by_name(tmp_path):
    from editscope.checkpoints import load_checkpoint, save_checkpoint

    a = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(a.parameters())
    save_checkpoint(tmp_path / "c", {"weight": a.weight, "bias": a.bias}, opt, ["weight", "bias"], 1, [])
    with pytest.raises(ValueError, match=r"lacks tensors this run trains \(lora_A\): it is another run's; delete"):
        load_checkpoint(tmp_path / "c", {"lora_A": torch.zeros(2), "weight": a.weight}, opt, ["lora_A", "weight"])
