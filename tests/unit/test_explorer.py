"""The explorer (`editscope serve`): server tests over HTTP (path traversal, token, host check,
read-only stores, bad queries and forms, runs in progress, a disconnecting client) and a real
headless Chromium driving the page on a tiny model and a small stored run."""

import json
import os
import socket
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from editscope.explorer import NotARunError, Playground, PortError, RunCatalog, check_port, create_app, start_in_thread
from editscope.explorer import catalog as catalog_module
from editscope.runner import ResultsStore, export_archive, parse_config, run_study
from system_tools import chromium, required_in_ci

EDITS = [{"prompt": f"{a}+{b}=", "target_new": str(a + b + 1), "subject": f"{a}+{b}"} for a, b in [(2, 2), (3, 1)]]
STUDY = {"name": "explore", "model": "tiny:llama", "seed": 0,
         "methods": ["ft-m", {"method": "ft-m", "label": "strong", "hparams": {"lr": 0.05, "steps": 30}},
                     {"method": "placebo", "match": "strong"}],
         "edits": EDITS, "probes": [{"suite": "arithmetic", "args": {"n": 3}}]}
SEQUENTIAL = {"name": "explore-seq", "model": "tiny:llama", "seed": 0, "methods": ["ft-m"],
              "edits": EDITS, "probes": [{"suite": "arithmetic", "args": {"n": 3, "paraphrases": False}}],
              "protocol": {"kind": "sequential"}, "perplexity": {"corpus": "me_ppl_50", "limit": 3}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("explore")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITSCOPE_CACHE", str(root / "cache"))
        single = run_study(parse_config(STUDY), root / "single", progress=False)
        seq = run_study(parse_config(SEQUENTIAL), root / "seq", progress=False)
        yield {"single": single, "seq": seq, "root": root}


@pytest.fixture(scope="module")
def playground(runs):
    pg = Playground(["tiny:llama"], runs["root"] / "saves")
    yield pg
    pg.close()


@pytest.fixture(scope="module")
def server(runs, playground):
    catalog = RunCatalog([runs["single"], runs["seq"]])
    catalog.load_all()
    srv = start_in_thread(create_app(catalog, playground))
    yield srv
    srv.stop()


def http(url: str, *, data: bytes | None = None, headers: dict | None = None, method: str | None = None):
    """(status, parsed JSON or text, response headers) of one request."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            body, code, hdrs = r.read(), r.status, r.headers
    except urllib.error.HTTPError as e:
        body, code, hdrs = e.read(), e.code, e.headers
    try:
        return code, json.loads(body), hdrs
    except ValueError:
        return code, body.decode(), hdrs


def post(url: str, payload: dict):
    return http(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST")


def all_rows(base: str, query: str) -> tuple[dict, list[dict]]:
    """The first page's answer and the rows of every page of a probe query (pages of 500)."""
    _, first, _ = http(f"{base}/api/runs/single/probes?{query}&size=500")
    rows = list(first["rows"])
    for page in range(2, first["pages"] + 1):
        rows += http(f"{base}/api/runs/single/probes?{query}&size=500&page={page}")[1]["rows"]
    return first, rows


def wait_job(base: str, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, job, _ = http(f"{base}/api/jobs/{job_id}")
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


# ---- the data behind the pages

def test_probe_table_filters_compare_and_pages_agree_with_the_store(server, runs):
    base = server.url
    _, listing, _ = http(f"{base}/api/runs")
    assert [r["id"] for r in listing] == ["single", "seq"] and listing[0]["status"] == "complete"
    _, info, _ = http(f"{base}/api/runs/single")
    assert info["edit_methods"] == ["ft-m", "strong"] and info["placebo_of"] == {"strong": "placebo-strong"}
    everything, every_row = all_rows(base, "method=strong")
    store = ResultsStore(runs["single"] / "results.sqlite", read_only=True)
    try:
        stored = [r for r in store.rows() if r["method"] == "strong"]
    finally:
        store.close()
    assert everything["total"] == len(stored) == len(every_row) and everything["pages"] == -(-len(stored) // 500)
    assert sorted((r["unit"], r["probe_set"], r["index"], r["greedy"]) for r in every_row) == \
        sorted((r["unit"], r["probe_set"], r["index"], r["greedy"]) for r in stored)
    # filters: changed-only is exactly the rows whose output differs from the base's, across pages
    _, changed, _ = http(f"{base}/api/runs/single/probes?method=strong&changed=changed&size=5")
    seen = []
    for page in range(1, changed["pages"] + 1):
        _, p, _ = http(f"{base}/api/runs/single/probes?method=strong&changed=changed&size=5&page={page}")
        seen += p["rows"]
    assert len(seen) == changed["total"] > 0 and all(r["changed"] for r in seen)
    assert len({(r["unit"], r["probe_set"], r["index"]) for r in seen}) == len(seen)  # no row twice across pages
    # compare with the placebo: each row carries the placebo's output of the same probe of the same edit
    vs, vs_rows = all_rows(base, "method=strong&vs=placebo")
    assert vs["vs"] == "placebo-strong" and all(r["vs"]["unit"].startswith(r["unit"]) for r in vs_rows if r["vs"]["unit"])
    differ, differ_rows = all_rows(base, "method=strong&vs=placebo&differs=true")
    assert all(r["changed"] != r["vs"]["changed"] for r in differ_rows)
    assert differ["total"] == sum(r["vs"]["changed"] is not None and r["changed"] != r["vs"]["changed"] for r in vs_rows)
    # sorting and the grid cell filter
    for order in ("asc", "desc"):  # values sorted either way, rows without a value last
        _, by_lp = all_rows(base, f"method=strong&sort=logprob&order={order}")
        lps = [r["logprob"] for r in by_lp]
        have = [x for x in lps if x is not None]
        assert None in lps and have and lps == have + [None] * (len(lps) - len(have))
        assert have == sorted(have, reverse=order == "desc")
    _, cell, _ = http(f"{base}/api/runs/single/probes?method=strong&op=%2B&a=2&b=2")
    assert cell["total"] >= 1 and all(r["meta"]["a"] == 2 and r["meta"]["b"] == 2 and r["meta"]["op"] == "+"
                                      for r in cell["rows"])
    # one probe in every unit
    row = everything["rows"][0]
    _, detail, _ = http(f"{base}/api/runs/single/probe?digest={urllib.parse.quote(row['digest'])}")
    assert {u["method"] for u in detail["units"]} >= {"base", "strong", "ft-m", "placebo-strong"}
    assert all(r["prompt"] == detail["prompt"] for r in every_row if r["digest"] == row["digest"])
    # the same probe content under both edits (a far sum both edits' suites hold) is one probe here
    same = [r for r in every_row if r["digest"] == row["digest"]]
    assert len([u for u in detail["units"] if u["method"] == "strong"]) == len(same)


def test_grid_summary_and_curves(server):
    base = server.url
    _, g, _ = http(f"{base}/api/runs/single/grid?method=strong")
    assert g["n"] == 4 and g["ops"] == ["+", "-", "*"] and g["target"] == {"op": "+", "a": 2, "b": 2}
    assert g["changed"]["+"] == sum(v > 0 for row in g["cells"]["+"] for v in row)
    _, s, _ = http(f"{base}/api/runs/single/summary")
    assert [t["name"] for t in s["tables"]] == ["main", "excess-placebo"]
    assert [r[0]["text"] for r in s["tables"][0]["rows"]][:3] == ["base", "ft-m", "strong"]
    _, c, _ = http(f"{base}/api/runs/seq/curves")
    assert [s for s, _ in c["methods"]["ft-m"]["retention"]] == [2] and c["methods"]["ft-m"]["ppl"]
    _, none, _ = http(f"{base}/api/runs/single/curves")
    assert none == {"methods": {}}


# ---- bad input

def test_paths_never_reach_the_file_system(server):
    base = server.url
    for path in ("/api/runs/..%2F..%2Fetc%2Fpasswd", "/api/runs/../../etc/passwd", "/static/../../etc/passwd",
                 "/static/%2e%2e/%2e%2e/etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd", "/api/runs/%2e%2e/summary",
                 "/api/runs/single/../../../etc/passwd"):
        code, body, _ = http(base + path)
        assert code == 404, path
        assert "root:" not in json.dumps(body)
    code, body, _ = http(f"{base}/api/runs/nope/summary")
    assert code == 404 and "single" in body["error"]


def test_malformed_queries_name_the_field(server):
    base = server.url
    for query, field in [("method=nope", "method"), ("method=strong&size=9999", "size"), ("method=strong&page=0", "page"),
                         ("method=strong&bogus=1", "bogus"), ("method=strong&page=999", "page"),
                         ("method=strong&category=nope", "category"), ("method=ft-m&vs=placebo", "vs"),
                         ("method=strong&differs=true", "differs"), ("method=strong&margin=huge", "margin"), ("", "method")]:
        code, body, _ = http(f"{base}/api/runs/single/probes?{query}")
        assert code == 422 and field in body["fields"], (query, body)
    code, body, _ = http(f"{base}/api/runs/single/probe?digest=nope")
    assert code == 422 and "digest" in body["fields"]
    code, body, _ = http(f"{base}/api/runs/single/probe")
    assert code == 422 and "digest" in body["fields"]
    code, body, _ = http(f"{base}/api/runs/single/probes?method=strong&vs=base")
    assert code == 422 and "base model's output" in body["fields"]["vs"]
    code, body, _ = http(f"{base}/api/runs/single/grid?method=placebo-strong")
    assert code == 422 and "method" in body["fields"]


def test_playground_form_errors_are_per_field(server):
    base = server.url
    code, body, _ = post(f"{base}/api/jobs", {"model": "tiny:llama", "method": "rome", "prompt": "2+2=", "target": "5",
                                               "subject": "zz"})
    assert code == 422 and "does not occur" in body["fields"]["subject"]
    code, body, _ = post(f"{base}/api/jobs", {"model": "tiny:llama", "method": "romee", "prompt": "2+2=", "target": "5"})
    assert code == 422 and "rome" in body["fields"]["method"]
    code, body, _ = post(f"{base}/api/jobs", {"model": "/etc", "method": "rome", "prompt": "2+2=", "target": "5"})
    assert code == 422 and "tiny:llama" in body["fields"]["model"]
    code, body, _ = post(f"{base}/api/jobs", {"model": "tiny:llama", "method": "identity", "prompt": "2+2=", "target": "5"})
    assert code == 422 and "control" in body["fields"]["method"]
    code, body, _ = post(f"{base}/api/jobs", {"model": "tiny:llama", "method": "rome", "prompt": "", "target": "5"})
    assert code == 422 and "prompt" in body["fields"]
    code, body, _ = http(f"{base}/api/jobs", data=b"model=x", headers={"Content-Type": "application/x-www-form-urlencoded"},
                         method="POST")
    assert code == 415
    code, body, _ = http(f"{base}/api/jobs", data=b"{not json", headers={"Content-Type": "application/json"},
                         method="POST")
    assert code == 400


def test_a_disconnecting_client_leaves_the_job_to_finish_and_places_are_kept(server):
    base = server.url
    form = {"model": "tiny:llama", "method": "ft-m", "prompt": "3+3=", "target": "7"}
    _, first, _ = post(f"{base}/api/jobs", form)
    _, second, _ = post(f"{base}/api/jobs", {**form, "prompt": "1+3=", "target": "9"})
    assert second["place"] in (1, 2) or second["state"] != "queued"
    with urllib.request.urlopen(f"{base}/api/jobs/{first['id']}/events", timeout=60) as stream:
        line = stream.readline().decode()
        assert line.startswith("data: ") and json.loads(line[6:])["id"] == first["id"]
    # the watcher went away mid-job; both jobs still finish, in order
    wait_job(base, first["id"])
    done2 = wait_job(base, second["id"])
    # read the first job again only now: the second job undoes it when it starts, after the first is done
    done1 = wait_job(base, first["id"])
    assert done1["state"] == done2["state"] == "done"
    assert done1["undone"] is True and done2["undone"] is False  # the second job undid the first one's edit first
    answers = {a["category"]: a for a in done2["result"]["answers"]}
    assert answers["target"]["prompt"] == "1+3=" and done2["result"]["blast"]["target"] == {"op": "+", "a": 1, "b": 3}
    code, body, _ = post(f"{base}/api/jobs/{first['id']}/save", {})
    assert code == 422 and "run it again" in body["error"]
    code, saved, _ = post(f"{base}/api/jobs/{second['id']}/save", {})
    assert code == 200 and (Path(saved["saved"]) / "manifest.json").exists()
    code, yaml_text, hdrs = http(f"{base}/api/jobs/{second['id']}/study.yaml")
    assert code == 200 and "attachment" in hdrs["Content-Disposition"]
    import yaml

    study = parse_config(yaml.safe_load(yaml_text))
    assert [m.name for m in study.method_specs()] == ["ft-m", "identity"]
    code, undone, _ = post(f"{base}/api/jobs/{second['id']}/undo", {})
    assert code == 200 and undone["undone"]
    code, again, _ = post(f"{base}/api/jobs/{second['id']}/undo", {})
    assert code == 422


def test_undo_and_save_are_refused_while_another_edit_holds_the_model(server, playground):
    base = server.url
    _, job, _ = post(f"{base}/api/jobs", {"model": "tiny:llama", "method": "ft-m", "prompt": "2+3=", "target": "8"})
    assert wait_job(base, job["id"])["state"] == "done"
    # the lock a running job holds while it may change the weights: undo and save answer at once, refused
    assert playground._model_lock.acquire(timeout=60)
    try:
        for action in ("undo", "save"):
            code, body, _ = post(f"{base}/api/jobs/{job['id']}/{action}", {})
            assert code == 422 and "another edit is running" in body["fields"]["job"], (action, body)
    finally:
        playground._model_lock.release()
    code, saved, _ = post(f"{base}/api/jobs/{job['id']}/save", {})
    assert code == 200 and Path(saved["saved"]).is_dir()
    code, undone, _ = post(f"{base}/api/jobs/{job['id']}/undo", {})
    assert code == 200 and undone["undone"]


def test_an_edit_the_method_refuses_fails_with_its_reason(server):
    # MEND needs a trained editor: the job fails with the message that says how to train one
    _, job, _ = post(f"{server.url}/api/jobs", {"model": "tiny:llama", "method": "mend", "prompt": "2+2=", "target": "5"})
    done = wait_job(server.url, job["id"])
    assert done["state"] == "failed" and "train-editor" in done["error"]


def test_token_required_off_loopback_and_host_checked_on_it(runs):
    catalog = RunCatalog([runs["single"]])
    catalog.load_all()
    srv = start_in_thread(create_app(catalog, None, token="s3cret-token", loopback_only=False))
    try:
        assert http(f"{srv.url}/api/runs")[0] == 401
        assert http(f"{srv.url}/api/runs?token=wrong")[0] == 401
        code, _, hdrs = http(f"{srv.url}/?token=s3cret-token")
        assert code == 200 and "editscope_token=s3cret-token" in hdrs["set-cookie"] and "samesite=strict" in hdrs["set-cookie"].lower()
        assert http(f"{srv.url}/api/runs", headers={"Cookie": "editscope_token=s3cret-token"})[0] == 200
        assert http(f"{srv.url}/api/runs", headers={"Authorization": "Bearer s3cret-token"})[0] == 200
    finally:
        srv.stop()
    local = start_in_thread(create_app(catalog, None))
    try:
        assert http(f"{local.url}/api/runs")[0] == 200
        assert http(f"{local.url}/api/runs", headers={"Host": "evil.example:80"})[0] == 400  # DNS rebinding
    finally:
        local.stop()


def test_stores_are_read_only_and_archives_and_non_runs(runs, tmp_path):
    store = runs["single"] / "results.sqlite"
    before = (store.stat().st_mtime_ns, store.read_bytes())
    catalog = RunCatalog([runs["single"]])
    catalog.load_all()
    srv = start_in_thread(create_app(catalog, None))
    try:
        http(f"{srv.url}/api/runs/single/probes?method=strong")
        http(f"{srv.url}/api/runs/single/summary")
    finally:
        srv.stop()
    assert (store.stat().st_mtime_ns, store.read_bytes()) == before
    ro = ResultsStore(store, read_only=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.db.execute("DELETE FROM units")
    finally:
        ro.close()
    # an archive is served from a temporary unpacked copy, removed on close
    archive = export_archive(runs["single"], tmp_path / "single.sqlite.xz")
    cat2 = RunCatalog([archive])
    cat2.load_all()
    run = cat2.get("single")
    assert run.results().meta["name"] == "explore" and run.folder.exists()
    cat2.close()
    assert not run.folder.exists()
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    fake = tmp_path / "fake"
    fake.mkdir()
    sqlite3.connect(fake / "results.sqlite").execute("CREATE TABLE t(x)").connection.commit()
    for bad, words in [(tmp_path / "empty", "not a run folder"), (tmp_path / "notes.txt", "not a run folder"),
                       (tmp_path / "missing", "no such folder"), (fake, "not an editscope results store")]:
        with pytest.raises(NotARunError, match=words):
            RunCatalog([bad])


def test_a_run_in_progress_is_shown_and_refreshed(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_module, "CHECK_EVERY", 0.0)
    monkeypatch.setenv("EDITSCOPE_CACHE", str(runs["root"] / "cache"))
    cfg = parse_config({**STUDY, "name": "growing"})
    out = tmp_path / "growing"
    run_study(cfg, out, progress=False, max_units=2)  # the base and one edit, then stopped
    catalog = RunCatalog([out])
    catalog.load_all()
    run = catalog.get("growing")
    assert run.status() == "in progress" and len(run.results().units) == 2
    run_study(cfg, out, progress=False, resume=True)
    run.refresh()
    deadline = time.monotonic() + 60
    while (run.reloading or run.status() != "complete") and time.monotonic() < deadline:
        time.sleep(0.1)
        run.refresh()
    assert run.status() == "complete" and len(run.results().units) > 2


def test_a_busy_port_is_said_before_anything_loads():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortError, match="already in use.*--port"):
            check_port("127.0.0.1", port)
    with pytest.raises(PortError, match="0..65535"):
        check_port("127.0.0.1", 70000)
    assert check_port("127.0.0.1", 0) > 0


# ---- the page in a real browser

@pytest.fixture(scope="module")
def page(server):
    exe = chromium()
    if exe is None:
        required_in_ci("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        pg = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.errors = errors
        yield pg
        browser.close()


def wait_query(browser_page, absent: tuple[str, ...] = (), **must: str) -> None:
    """Wait until the probe table shows the answer to a query with ``must`` (and none of ``absent``)."""
    browser_page.wait_for_function("""q => { const p = new URLSearchParams(document.querySelector('#probe-table').dataset.query || '');
        return Object.entries(q.must).every(([k, v]) => p.get(k) === v) && q.absent.every(k => !p.has(k)); }""",
                           arg={"must": must, "absent": list(absent)})


def shown_total(page) -> int:
    return int(page.text_content("#page-info").split("·")[1].split()[0].replace(",", ""))


def test_browser_explores_a_run(server, page):
    page.goto(server.url + "/#run=single")
    page.wait_for_selector("#table-main")
    assert page.text_content("#run-title") == "explore"
    assert "strong" in page.text_content("#table-main")
    # the blast radius: one canvas per op; clicking the edited cell lists its probes
    page.wait_for_selector("canvas.grid[data-op='+']")
    page.select_option("#grid-method", "strong")
    page.wait_for_selector("canvas.grid[data-method='strong'][data-op='+']")
    canvas = page.locator("canvas.grid[data-method='strong'][data-op='+']")
    box = canvas.bounding_box()
    n = 4  # operands 0..3: click a=2 (third row from the bottom), b=2
    page.mouse.click(box["x"] + (2.5 / n) * box["width"], box["y"] + (1 - 2.5 / n) * box["height"])
    page.wait_for_function("document.querySelector('#cell-text').textContent === '2+2= in edit-0000'")
    wait_query(page, method="strong", op="+", a="2", b="2", unit="edit-0000")
    prompts = page.locator("#probe-table tbody tr td:nth-child(3)").all_text_contents()
    assert prompts and any("2+2" in p or "2 + 2" in p or "two" in p.lower() for p in prompts)
    assert set(page.locator("#probe-table tbody tr td:nth-child(1)").all_text_contents()) == {"edit-0000"}
    page.click("#clear-cell")
    # filter, page, compare
    page.select_option("#probe-form select[name=size]", "25")
    wait_query(page, ("op", "a", "b"), size="25", page="1")
    total_all = shown_total(page)
    assert page.locator("#probe-table tbody tr").count() == 25
    page.click("#next")
    wait_query(page, size="25", page="2")
    assert page.text_content("#page-info").startswith("page 2 of")
    page.select_option("#probe-form select[name=changed]", "changed")
    wait_query(page, changed="changed", page="1")
    total_changed = shown_total(page)
    assert 0 < total_changed < total_all
    assert set(page.locator("#probe-table tbody td:nth-child(8)").all_text_contents()) <= {"changed", "says target"}
    page.select_option("#probe-form select[name=vs]", "ft-m")
    wait_query(page, vs="ft-m")
    assert "compared with ft-m" in page.text_content("#page-info")
    assert page.locator("#probe-table th.vs-col").is_visible()
    # one probe in every unit
    page.click("#probe-table tbody tr >> nth=0")
    page.wait_for_selector("#probe-units tbody tr")
    units = page.locator("#probe-units tbody td:nth-child(1)").all_text_contents()
    assert {"base", "ft-m", "strong", "placebo-strong"} <= set(units)
    link = page.url  # the probe's address opens the same rows in a fresh page
    assert "&probe=" in link
    fresh = page.context.browser.new_page()
    fresh.goto(link)
    fresh.wait_for_selector("#probe-units tbody tr")
    assert fresh.locator("#probe-units tbody td:nth-child(1)").all_text_contents() == units
    fresh.close()
    # a bad query shows its reason instead of a broken page
    page.evaluate("document.querySelector('#probe-form [name=a]').value = '-1'")
    page.select_option("#probe-form select[name=changed]", "any")
    page.wait_for_selector("#probe-error:not([hidden])")
    assert "a:" in page.text_content("#probe-error")
    # a sequential run draws its curves
    page.click("button[data-run='seq']")
    page.wait_for_selector("canvas.curve[data-series='retention']")
    assert page.errors == []


def test_browser_playground_runs_an_edit_and_shows_form_errors(server, page):
    page.goto(server.url + "/#playground")
    page.wait_for_selector("#pg-form select[name=method] option[value='ft-m']", state="attached")
    page.select_option("#pg-form select[name=method]", "rome")
    page.fill("#pg-form input[name=subject]", "zz")
    page.click("#pg-run")
    page.wait_for_function("document.querySelector(\"#pg-form .field-error[data-for='subject']\").textContent.length > 0")
    assert "does not occur" in page.text_content("#pg-form .field-error[data-for='subject']")
    page.fill("#pg-form input[name=subject]", "2+2")
    page.select_option("#pg-form select[name=method]", "ft-m")
    # every state and stage the page shows on the way, as the user saw them
    page.evaluate("""() => { window.seen = [];
        new MutationObserver(() => window.seen.push(document.querySelector('#pg-state').textContent + ': ' +
            document.querySelector('#pg-stage').textContent)).observe(document.querySelector('#pg-job'),
            {subtree: true, childList: true, characterData: true, attributes: true}); }""")
    page.click("#pg-run")
    page.wait_for_selector("#pg-job:not([hidden])")
    page.wait_for_function("document.querySelector('#pg-job').dataset.state === 'done'", timeout=180_000)
    seen = page.evaluate("window.seen")
    assert any(s.startswith(("queued", "running")) for s in seen), seen  # progress shown before the result
    assert any("/5)" in s for s in seen), seen  # a stage of the five, e.g. "editing (4/5)"
    answers = page.locator("#pg-answers tbody tr td:nth-child(2)").all_text_contents()
    assert "2+2=" in answers
    assert page.locator("#pg-blast canvas.grid").count() == 3
    assert "other probes changed" in page.text_content("#pg-elsewhere")
    assert page.is_visible("#pg-study")
    page.click("#pg-undo")
    page.wait_for_function("document.querySelector('#pg-saved').textContent.includes('undone')")
    # an edit the method refuses: the reason is on the form
    page.select_option("#pg-form select[name=method]", "mend")
    page.click("#pg-run")
    page.wait_for_function("document.querySelector('#pg-job').dataset.state === 'failed'", timeout=60_000)
    assert "train-editor" in page.text_content("#pg-form .field-error[data-for='form']")
    assert page.errors == []


# ---- the command

def test_serve_command_refuses_bad_input_and_serves_a_run(runs, tmp_path):
    from typer.testing import CliRunner

    from editscope.cli import app

    cli = CliRunner()
    out = cli.invoke(app, ["serve", str(tmp_path)], terminal_width=300)
    assert out.exit_code == 2 and "not a run folder" in out.output
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        out = cli.invoke(app, ["serve", str(runs["single"]), "--port", str(s.getsockname()[1])], terminal_width=300)
        assert out.exit_code == 2 and "already in use" in out.output
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "editscope.cli", "serve", str(runs["single"]), "--port", "0",
                             "--no-playground"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "300"})
    try:
        url = None
        for line in proc.stdout:
            if "editscope explorer:" in line:
                url = line.split("editscope explorer:")[1].split()[0]
                break
        assert url and url.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 30
        while True:
            try:
                code, body, _ = http(url.rstrip("/") + "/api/runs")
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert code == 200 and body[0]["id"] == "single"
        assert http(url.rstrip("/") + "/api/playground")[0] == 404
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_failed_reload_keeps_the_last_good_load_and_retries(runs, monkeypatch):
    monkeypatch.setattr(catalog_module, "CHECK_EVERY", 0.0)
    catalog = RunCatalog([runs["single"]])
    catalog.load_all()
    run = catalog.get("single")
    good = run.results()
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise sqlite3.OperationalError("database disk image is malformed")

    monkeypatch.setattr(catalog_module, "load_results", broken)
    run._stamp = None  # as if the store had changed
    run.load()
    assert run.results() is good and "malformed" in run.error and not run.reloading and calls
    monkeypatch.undo()
    run._stamp = None
    run.load()
    assert run.error is None and run.results() is not good and run.status() == "complete"
