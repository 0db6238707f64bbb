"""`--backend ray` on a local Ray cluster (no network): the same rows as the local backend, a worker
killed mid-unit, a driver killed mid-study, and the refusals before any unit runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from editscope.runner import ResultsStore, parse_config, run_study

ray = pytest.importorskip("ray")

# A lab's fine-tuning variant that kills its own process the first time it edits "3+3=" (the marker
# file says it did), and one that takes its time (so that the driver can be killed mid-study).
PLUGIN = '''
import os, time
from pathlib import Path
from editscope.methods.base import register_method
from editscope.methods.finetune import FTM


@register_method
class CrashOnce(FTM):
    name = "crash-once-ft"
    summary = "FT-M that kills its worker on its first 3+3= edit"

    def run(self, model, requests, hp):
        marker = Path(os.environ["EDITSCOPE_TEST_CRASH_MARKER"])
        if requests[0].prompt == "3+3=" and not marker.exists():
            marker.write_text("crashed")
            os._exit(1)
        return super().run(model, requests, hp)


@register_method
class SlowFT(FTM):
    name = "slow-ft"
    summary = "FT-M that takes a second per edit"

    def run(self, model, requests, hp):
        time.sleep(1.0)
        return super().run(model, requests, hp)
'''

EDITS = [{"prompt": f"{a}+{a}=", "target_new": str(2 * a + 1)} for a in (1, 2, 3, 4)]
FT = {"layer": 1, "lr": 0.1, "steps": 3}


def study(name: str, methods: list, kind: str = "single") -> dict:
    return {"name": name, "model": "tiny:llama", "seed": 0, "plugins": ["raylab_plugin"], "edits": EDITS,
            "methods": methods, "probes": [{"suite": "arithmetic", "args": {"n": 3, "paraphrases": False}}],
            "protocol": {"kind": kind}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One local Ray cluster (2 CPUs) for the module; its workers inherit the environment set here."""
    folder = tmp_path_factory.mktemp("raylab")
    (folder / "raylab_plugin.py").write_text(textwrap.dedent(PLUGIN))
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "EDITSCOPE_TEST_CRASH_MARKER")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), saved["PYTHONPATH"]) if p)
    os.environ["EDITSCOPE_TEST_CRASH_MARKER"] = str(folder / "crashed")
    sys.path.insert(0, str(folder))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield folder
    ray.shutdown()
    sys.path.remove(str(folder))
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def rows(run: Path) -> dict:
    """Each stored unit's status and evaluation rows, keyed by (method, unit): storage order left out."""
    s = ResultsStore(run / "results.sqlite")
    try:
        units = s.units()
        keys = [(u.method, u.unit) for u in units]
        assert len(keys) == len(set(keys)), "a unit is stored twice"
        out = {(u.method, u.unit): {"status": u.status, "fingerprint": u.fingerprint, "rows": []} for u in units}
        for r in s.rows():
            out[(r["method"], r["unit"])]["rows"].append(r)
        return out
    finally:
        s.close()


def assert_same(a: dict, b: dict, tol: float = 1e-4) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        assert x["status"] == y["status"] and x["fingerprint"] == y["fingerprint"], key
        assert len(x["rows"]) == len(y["rows"]), key
        for rx, ry in zip(sorted(x["rows"], key=_order), sorted(y["rows"], key=_order)):
            for f in rx:
                if isinstance(rx[f], float) and isinstance(ry[f], float):
                    assert abs(rx[f] - ry[f]) <= tol * max(1.0, abs(rx[f])), (key, f, rx[f], ry[f])
                else:
                    assert rx[f] == ry[f], (key, f, rx[f], ry[f])


@contextmanager
def threads_of(workers: int):
    """Run the in-process comparison at the torch thread count of a Ray worker (the cluster's CPUs
    shared by ``workers``): float results depend on it, so equal rows need equal counts."""
    import ray

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(ray.cluster_resources().get("CPU", 1)) // workers))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _order(r: dict) -> tuple:
    return (r["probe_set"], r["index"])


def test_ray_gives_the_local_rows_and_reruns_what_a_killed_worker_lost(cluster, tmp_path):
    rome = {"layer": 1, "n_contexts": 2, "context_len": 4, "stats_tokens": 600, "stats_corpus": ["me_ppl_50"],
            "v_lr": 1.0, "v_steps": 6, "v_fail_loss": 100.0, "fact_token": "last"}
    # single units (ROME's batched residuals cut into the same chunks), a worker that dies in a unit
    single = study("ray-single", [{"method": "rome", "hparams": rome}, {"method": "crash-once-ft", "hparams": FT}])
    cfg = parse_config(single)
    remote = run_study(cfg, tmp_path / "single-ray", progress=False, backend="ray", workers=2)
    assert (cluster / "crashed").exists(), "a worker was killed mid-unit"
    got = rows(remote)  # (rows() asserts that no unit is stored twice)
    assert sorted(u for m, u in got if m == "crash-once-ft") == [f"edit-{i:04d}" for i in range(4)]
    assert ResultsStore(remote / "results.sqlite").get_meta("status") == "complete"
    with threads_of(2):
        assert_same(got, rows(run_study(cfg, tmp_path / "single-local", progress=False)))  # no crash now
    # a sequential chain runs whole on one worker
    cfg = parse_config(study("ray-chain", [{"method": "ft-m", "hparams": FT}], kind="sequential"))
    remote = run_study(cfg, tmp_path / "chain-ray", progress=False, backend="ray", workers=1)
    with threads_of(1):
        assert_same(rows(remote), rows(run_study(cfg, tmp_path / "chain-local", progress=False)))
    assert ray.is_initialized(), "a cluster the caller started is left running"


def test_a_killed_driver_resumes_to_the_same_rows(cluster, tmp_path):
    spec = study("ray-driver", [{"method": "slow-ft", "hparams": FT}], kind="sequential")
    (tmp_path / "study.json").write_text(json.dumps(spec))
    out = tmp_path / "ray"
    address = ray.get_runtime_context().gcs_address
    script = ("import json, sys; from editscope.runner import parse_config, run_study; "
              "run_study(parse_config(json.load(open(sys.argv[1]))), sys.argv[2], progress=False, backend='ray', "
              "address=sys.argv[3], workers=1)")
    driver = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "study.json"), str(out), address],
                              env={**os.environ, "PYTHONPATH": os.environ["PYTHONPATH"]})
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "results.sqlite").exists():
            s = ResultsStore(out / "results.sqlite")
            n = len(s.units())
            s.close()
            if n >= 3:  # the base and two steps of the chain
                break
        assert driver.poll() is None, "the driver finished before it could be killed"
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    s = ResultsStore(out / "results.sqlite")
    assert 3 <= len(s.units()) < 5 and s.get_meta("status") == "running"
    s.close()
    cfg = parse_config(spec)
    with threads_of(1):  # the local backend finishes what the Ray run began (replaying its chain exactly)
        run_study(cfg, out, resume=True, progress=False)
        assert_same(rows(out), rows(run_study(cfg, tmp_path / "local", progress=False)))


def test_bad_backend_input_is_refused_before_any_unit_runs(tmp_path, monkeypatch):
    from editscope.errors import InputError
    from editscope.runner.ray_backend import BackendError, check_address

    cfg = parse_config({**study("ray-bad", [{"method": "ft-m", "hparams": FT}]), "plugins": []})
    with pytest.raises(BackendError, match="no Ray cluster answers there"):
        check_address("127.0.0.1:9")
    with pytest.raises(BackendError, match="give HOST:PORT"):
        check_address("not-an-address")
    with pytest.raises(BackendError, match="--workers 0"):
        run_study(cfg, tmp_path / "w0", backend="ray", workers=0, progress=False)
    with pytest.raises(InputError, match="backend 'spark'"):
        run_study(cfg, tmp_path / "spark", backend="spark", progress=False)
    from typer.testing import CliRunner

    from editscope.cli import app

    (tmp_path / "s.yaml").write_text(json.dumps({**study("ray-bad", ["ft-m"]), "plugins": []}))
    for args, match in [(["--backend", "spark"], "give one of local, ray"),
                        (["--workers", "2"], "go with --backend ray"),
                        (["--backend", "ray", "--address", "127.0.0.1:9"], "no Ray cluster answers there")]:
        r = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "cli"), *args])
        assert r.exit_code != 0 and match in " ".join(r.output.split()), (args, r.output)
    (tmp_path / "s.yaml").unlink()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(BackendError, match=r"pip install 'editscope\[ray\]'"):
        run_study(cfg, tmp_path / "noray", backend="ray", progress=False)
    assert not any(tmp_path.iterdir()), "nothing was written"


def test_a_resumed_study_starts_its_longest_chains_first():
    from editscope.runner.ray_backend import Job, longest_chains_first
    from editscope.runner.unit_results import Stored

    units = [f"step{i}" for i in range(4)]
    jobs = [Job(m, list(units), True) for m in ("rome", "memit", "grace", "wise")]
    # rome has 3 of its 4 edits stored, memit 1, grace and wise none: the two untouched chains go first
    # (plan order between them), then memit, then rome
    done = {("rome", u) for u in units[:3]} | {("memit", units[0])}
    order = [j.method for j in longest_chains_first(jobs, Stored(frozenset(done)))]
    assert order == ["grace", "wise", "memit", "rome"]
    assert [j.method for j in longest_chains_first(jobs, Stored())] == ["rome", "memit", "grace", "wise"]
