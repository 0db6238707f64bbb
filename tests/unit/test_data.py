"""The evaluation data registry: resolution order, download from a mirror (a local HTTP server standing
in for the pinned GitHub sources via EDITSCOPE_DATA_URL), hash checks, converters, offline messages,
the `editscope data` commands and the run manifest."""

import hashlib
import http.server
import json
import os
import pickle
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from editscope.cli import app
from editscope.data import fetch as data_fetch
from editscope.data.convert import pickled_records
from editscope.data.fetch import DataError, install_from, locate, used_files
from editscope.data.registry import DATASETS, DataFile, Dataset, file_for
from editscope.errors import EXIT_DATA
from editscope.paths import shared_dir

SHARED = shared_dir() / "data"
WIKI = "wikitext2/wiki.test.raw"


def _mirror_path(root: Path, f: DataFile) -> Path:
    return root / f.repo / f.commit / f.source_path


class _Server:
    """A static file server over ``root`` that counts the requests it answers."""

    def __init__(self, root: Path):
        self.root, self.requests = root, []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(outer.root), **kw)

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                if self.path.endswith(".cut"):  # promise more bytes than are sent, then hang up
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    self.wfile.write(b"x" * 1000)
                    self.wfile.flush()
                    self.connection.close()
                    return
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No data folder, an empty cache, no remembered verifications."""
    monkeypatch.setenv("EDITSCOPE_SHARED", "")
    monkeypatch.delenv("EDITSCOPE_DATA", raising=False)
    monkeypatch.delenv("EDITSCOPE_OFFLINE", raising=False)
    monkeypatch.setenv("EDITSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data_fetch, "_VERIFIED", {})
    monkeypatch.setattr(data_fetch, "_USED", {})
    return tmp_path / "cache" / "data"


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """The registry's sources for WikiText-2 and ME-PPL (their shared copies are the published files)."""
    root = tmp_path / "mirror"
    for name in ("wikitext2", "me_ppl"):
        for f in DATASETS[name].files:
            dst = _mirror_path(root, f)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHARED / f.path, dst)
    server = _Server(root)
    monkeypatch.setenv("EDITSCOPE_DATA_URL", server.url)
    yield server
    server.close()


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


def test_registry_entries_are_complete_and_their_layout_is_unique():
    paths = [f.path for ds in DATASETS.values() for f in ds.files]
    assert len(paths) == len(set(paths))
    for ds in DATASETS.values():
        assert ds.licence and ds.citation and ds.files
        for f in ds.files:
            assert len(f.commit) == 40 and len(f.sha256) == 64 and f.size > 0
            assert f.url.startswith("https://raw.githubusercontent.com/") and f.commit in f.url
            assert (f.convert is None) == (f.converted_sha256 is None)
            assert file_for(f.path) == (ds, f)


def test_shared_copies_that_are_whole_match_the_registry_hashes():
    # the development folder holds the published files for these (others are documented subsets)
    for name in ("wikitext2", "me_ppl", "counterfact"):
        for f in DATASETS[name].files:
            p = SHARED / f.path
            if p.exists():
                assert hashlib.sha256(p.read_bytes()).hexdigest() == f.final_sha256, f.path


def test_first_use_downloads_verifies_and_caches_then_needs_no_network(clean, mirror):
    p = locate(WIKI, progress=False)
    assert p == clean / WIKI and p.read_bytes() == (SHARED / WIKI).read_bytes()
    assert len(mirror.requests) == 1 and mirror.requests[0].endswith("wiki.test.raw")
    assert _leftovers(clean) == [p]  # no temporary file left beside it
    data_fetch.locate("me_ppl/ME-PPL_50.json", progress=False)  # a dataset's files come together
    assert {p.name for p in (clean / "me_ppl").iterdir()} == {"ME-PPL.json", "ME-PPL_1k.json", "ME-PPL_50.json"}
    del mirror.requests[1:]
    assert used_files()[WIKI]["origin"] == "download"
    mirror.close()  # second use: the cache, no network
    data_fetch._VERIFIED.clear()
    assert locate(WIKI, progress=False) == p and len(mirror.requests) == 1


def test_a_data_folder_comes_before_the_cache_and_the_network(clean, mirror, tmp_path, monkeypatch):
    own = tmp_path / "mine"
    (own / "wikitext2").mkdir(parents=True)
    (own / WIKI).write_text("my own text\n")
    monkeypatch.setenv("EDITSCOPE_DATA", str(own))
    assert locate(WIKI) == own / WIKI and not mirror.requests
    assert used_files()[WIKI] == {"path": str(own / WIKI), "origin": "$EDITSCOPE_DATA",
                                  "sha256": hashlib.sha256(b"my own text\n").hexdigest()}


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_truncated_or_corrupt_downloads_are_refused_and_leave_nothing(clean, mirror, damage):
    f = file_for(WIKI)[1]
    src = _mirror_path(mirror.root, f)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"X" + data[1:])
    with pytest.raises(DataError, match=r"wikitext2: the download from .* does not have the registry's SHA-256") as e:
        locate(WIKI, progress=False)
    assert e.value.exit_code == EXIT_DATA
    assert _leftovers(clean) == []


def test_an_interrupted_download_leaves_nothing_and_the_next_call_starts_again(clean, mirror, monkeypatch):
    ds = DATASETS["wikitext2"]
    f = ds.files[0]
    cut = DataFile(f.path, f.repo, f.commit, f.source_path + ".cut", f.sha256, f.size)
    with pytest.raises(DataError, match="wikitext2"):
        data_fetch.fetch_file(ds, cut, progress=False)
    assert _leftovers(clean) == []
    assert locate(WIKI, progress=False).read_bytes() == (SHARED / WIKI).read_bytes()  # and the next one works


def test_server_error_and_offline_give_one_line_with_the_fix(clean, mirror, monkeypatch):
    _mirror_path(mirror.root, file_for(WIKI)[1]).unlink()
    with pytest.raises(DataError, match=r"wikitext2: the server answered 404 for http://127\.0\.0\.1.*--from DIR"):
        locate(WIKI, progress=False)
    monkeypatch.setenv("EDITSCOPE_OFFLINE", "1")
    with pytest.raises(DataError) as e:
        locate(WIKI)
    msg = str(e.value)
    assert "wikitext2 (wikitext2/wiki.test.raw, 1.3 MB)" in msg and "offline" in msg
    assert "editscope data fetch wikitext2" in msg and "--from DIR" in msg and "\n" not in msg
    assert len(mirror.requests) == 1  # offline: not even tried


def test_hf_hub_offline_stops_downloads_unless_a_mirror_is_named(clean, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("EDITSCOPE_DATA_URL", raising=False)
    assert data_fetch.offline()
    monkeypatch.setenv("EDITSCOPE_DATA_URL", "http://127.0.0.1:9")
    assert not data_fetch.offline()


def test_a_damaged_cache_file_is_refused_with_expected_and_found(clean, mirror):
    p = locate(WIKI, progress=False)
    p.write_bytes(p.read_bytes()[:-10])
    data_fetch._VERIFIED.clear()
    with pytest.raises(DataError, match=r"SHA-256 [0-9a-f]{16}\.\.\., expected 4f3e427e4aff23ac.*--force"):
        locate(WIKI)


def test_a_read_only_cache_is_named(clean, mirror, monkeypatch):
    real = os.access
    # as root every folder is writable: the check is what a user without write access meets
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p).startswith(str(clean.parent)) else real(p, mode))
    with pytest.raises(DataError, match=r"^wikitext2: .*(read-only|not writable).*EDITSCOPE_CACHE") as e:
        locate(WIKI, progress=False)
    assert e.value.exit_code == EXIT_DATA and not mirror.requests


def _fake_pickle_dataset(tmp_path: Path, records) -> tuple[Dataset, bytes]:
    raw = pickle.dumps(records)
    out = pickled_records(raw) if all(isinstance(r, dict) for r in records) else b""
    f = DataFile("fake/probes.jsonl", "someone/repo", "0" * 40, "data/probes.pkl", hashlib.sha256(raw).hexdigest(),
                 len(raw), "pickled-records", hashlib.sha256(out).hexdigest(), len(out))
    return Dataset("fake", "a test", (f,), "none", "none"), raw


def test_install_from_a_folder_converts_and_verifies(clean, tmp_path):
    ds, raw = _fake_pickle_dataset(tmp_path, [{"sentence": "a", "label": 1}, {"sentence": "b é", "label": 0}])
    folder = tmp_path / "offline"
    folder.mkdir()
    (folder / "probes.pkl").write_bytes(raw)
    (got,) = install_from(ds, folder)
    assert [json.loads(x) for x in got.read_text(encoding="utf-8").splitlines()] == \
        [{"sentence": "a", "label": 1}, {"sentence": "b é", "label": 0}]
    (folder / "probes.pkl").write_bytes(raw[:-3])
    got.unlink()
    with pytest.raises(DataError, match="the registry expects"):
        install_from(ds, folder)
    assert _leftovers(clean) == []


def test_a_pickle_that_would_build_an_object_is_refused_not_run():
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to construct objects"):
        pickled_records(pickle.dumps([Boom()]))
    with pytest.raises(ValueError, match="list of dicts"):
        pickled_records(pickle.dumps({"a": 1}))


runner = CliRunner()


def test_data_commands(clean, mirror, tmp_path):
    r = runner.invoke(app, ["data", "list"])
    assert r.exit_code == 0 and "wikitext2" in r.output and "missing" in r.output
    r = runner.invoke(app, ["data", "fetch", "--for", "examples/quickstart.yaml"])
    assert r.exit_code == 0, r.output
    assert (clean / WIKI).is_file() and (clean / "me_ppl/ME-PPL_50.json").is_file()
    r = runner.invoke(app, ["data", "verify", "wikitext2", "me_ppl"])
    assert r.exit_code == 0 and r.output.count(" ok ") >= 4
    r = runner.invoke(app, ["data", "path", "wikitext2"])
    assert r.output.strip().endswith(WIKI)
    r = runner.invoke(app, ["data", "fetch", "wikitext"])
    assert r.exit_code == 2 and "wikitext2" in r.output  # did you mean
    r = runner.invoke(app, ["data", "path", "lambada"])
    assert r.exit_code == EXIT_DATA and "editscope data fetch lambada" in r.output


def test_the_run_manifest_names_every_data_file_with_its_hash(tmp_path):
    from editscope.runner import ResultsStore, parse_config, run_study

    edits = tmp_path / "edits.jsonl"
    edits.write_text(json.dumps({"prompt": "The capital of France is", "target_new": "Rome"}) + "\n")
    cfg = parse_config({"name": "manifest", "model": "tiny:llama", "seed": 0,
                        "methods": [{"method": "ft-m", "hparams": {"steps": 2}}],
                        "edits": [{"dataset": "jsonl", "source": str(edits)}], "probes": ["facts"],
                        "perplexity": {"corpus": "me_ppl_50"}})
    out = run_study(cfg, tmp_path / "run", progress=False)
    s = ResultsStore(out / "results.sqlite")
    files = s.get_meta("data_files")
    s.close()
    mine = files[str(edits.resolve())]
    assert mine["origin"] == "user file" and mine["sha256"] == hashlib.sha256(edits.read_bytes()).hexdigest()
    assert files["me_ppl/ME-PPL_50.json"]["sha256"] == file_for("me_ppl/ME-PPL_50.json")[1].sha256


def test_a_study_names_the_datasets_it_reads():
    from editscope.data.needs import datasets_for
    from editscope.runner import load_config, parse_config

    assert datasets_for(load_config("quickstart")) == ["wikitext2", "me_ppl"]  # ROME's key statistics, perplexity
    cfg = parse_config({"name": "x", "model": "tiny:llama", "methods": ["ft-m", {"method": "placebo", "match": "ft-m"}],
                        "edits": [{"dataset": "zsre", "limit": 2}], "probes": ["facts"],
                        "downstream": [{"task": "hellaswag", "limit": 5}, {"task": "mmlu", "limit": 5}]})
    assert datasets_for(cfg) == ["zsre", "hellaswag", "glue_eval"]  # FT reads no key statistics
    own = parse_config({"name": "x", "model": "tiny:llama", "methods": ["ft-m"],
                        "edits": [{"dataset": "jsonl", "source": "mine.jsonl"}], "probes": ["facts"]})
    assert datasets_for(own) == []  # the user's own file is theirs


def test_a_mirror_holds_only_files_with_the_published_hash(tmp_path, monkeypatch):
    from editscope.data.fetch import write_mirror

    monkeypatch.delenv("EDITSCOPE_DATA", raising=False)
    report = dict(write_mirror(tmp_path / "m", ["wikitext2", "glue_eval"]))
    assert report[WIKI] == "copied"
    f = file_for(WIKI)[1]
    assert (tmp_path / "m" / f.repo / f.commit / f.source_path).read_bytes() == (SHARED / WIKI).read_bytes()
    assert report["glue_eval/cola.jsonl"].startswith("converted here")  # its pickle is not here


def test_example_studies_ship_with_the_package_and_load_by_name():
    from editscope.runner.config import ConfigError, load_config, packaged_study

    assert packaged_study("quickstart").name == "quickstart.yaml"
    assert load_config("two_plus_two_quick.yaml").name == "two-plus-two-quick"
    assert packaged_study("../quickstart") is None
    with pytest.raises(ConfigError, match="nor an example study shipped with editscope: .*quickstart"):
        load_config("quikstart")
