"""The same study with the local backend and with `--backend ray` on this machine: wall time of
each (cold run folders, warm caches: the first run fills the model, statistics and base-output
caches for both) and a check that both stored the same units.

    python benchmarks/bench_backends.py                       # 32 CounterFact ROME edits + ME-PPL_50
    python benchmarks/bench_backends.py --limit 64 --workers 1 2 --warm

Units go to Ray workers in the chunks of 16 whose ROME residuals are batched (cut as the local
backend cuts them, so that both store the same numbers): use at least 16 x workers records, or the
extra workers have nothing to do.

On one machine Ray's workers share its cores, so the figure to expect is the overhead (process
start, imports and a model load per worker, a round trip per unit), not a speed-up; see
docs/scaling.md for what N machines give.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from editscope.runner import ResultsStore, parse_config, run_study


def study(limit: int) -> dict:
    return {"name": "bench-backends", "model": "smollm2-135m", "seed": 0, "methods": [{"method": "rome"}],
            "edits": [{"dataset": "counterfact", "limit": limit, "case_probes": False}],
            "perplexity": {"corpus": "me_ppl_50"}, "protocol": {"kind": "single"}}


def scalars(run: Path) -> dict:
    s = ResultsStore(run / "results.sqlite")
    try:
        return {(x["method"], x["unit"], x["name"]): x["value"] for x in s.scalars()}
    finally:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=32, help="CounterFact records (one ROME edit each)")
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="Ray worker counts to try")
    ap.add_argument("--warm", action="store_true", help="run the study once first to fill the caches (model, key "
                                                        "statistics) when they may be cold")
    args = ap.parse_args()
    cfg = parse_config(study(args.limit))
    with tempfile.TemporaryDirectory() as d:
        if args.warm:
            run_study(cfg, Path(d) / "warm", progress=False)  # fills every cache the timed runs read
        times, runs = {}, {}
        t = time.perf_counter()
        runs["local"] = run_study(cfg, Path(d) / "local", progress=False)
        times["local"] = time.perf_counter() - t
        for n in args.workers:
            t = time.perf_counter()
            runs[f"ray x{n}"] = run_study(cfg, Path(d) / f"ray{n}", progress=False, backend="ray", workers=n)
            times[f"ray x{n}"] = time.perf_counter() - t
        ref = scalars(runs["local"])
        print(f"{args.limit} ROME edits + ME-PPL_50 on smollm2-135m ({len(ref)} scalars per run)")
        print(f"{'backend':10}{'wall s':>9}{'vs local':>10}  same scalars (1e-4)")
        for k, v in times.items():
            got = scalars(runs[k])
            same = got.keys() == ref.keys() and all(
                abs((got[x] or 0) - (ref[x] or 0)) <= 1e-4 * max(1.0, abs(ref[x] or 0)) for x in ref)
            print(f"{k:10}{v:9.1f}{v / times['local']:10.2f}  {same}")


if __name__ == "__main__":
    main()
