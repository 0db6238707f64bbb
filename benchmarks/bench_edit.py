"""Per-method edit latency on the default model: 20 CounterFact edits, one at a time (single-edit protocol).

    python benchmarks/bench_edit.py                       # every registered method, defaults
    python benchmarks/bench_edit.py --methods ft-m lora --n 5
    python benchmarks/bench_edit.py --batched --n 20      # ROME/MEMIT/AlphaEdit: batched residuals vs alone

For each method and edit: apply with default hyperparameters (timed: the whole ``apply_edit`` call,
guard included), check whether greedy decoding now produces the new target (efficacy top-1) and
whether P(new) > P(true) (efficacy prob, ROME's ES), then undo. Prints median and p90 latency,
both efficacies with 95% Wilson intervals, and how many edits the guard rolled back.

``--batched``: the single-edit protocol (edit, score, undo, next) for ROME, MEMIT and AlphaEdit run
twice in one process: each edit computing its own target residual, and with the n residuals
optimised as one batch first (``es.prepare_edits``) and then taken by the edits. Prints edits per
second both ways and the ratio, ES/PS/NS both ways (they must agree), and the largest relative
difference between the two runs' weight updates.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import editscope as es
from editscope.probes.datasets import load_counterfact
from editscope.scoring import encode_pairs, score_encoded
from editscope.stats import wilson_interval


def efficacy(model: es.Model, req: es.EditRequest) -> tuple[bool, bool]:
    """(greedy produces target_new exactly, P(target_new) > P(target_true))."""
    conts = [req.continuation] + ([req.continuation_true] if req.target_true else [])
    s = score_encoded(model, encode_pairs(model, [req.prompt] * len(conts), conts))
    prob = s[0].logprob > s[1].logprob if len(s) > 1 else s[0].greedy_match
    return s[0].greedy_match, prob


def batched(model: es.Model, cases, methods: list[str]) -> None:
    """One-at-a-time vs prepared-in-a-batch single edits; see the module docstring."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_locate import cell, prob_scores

    reqs = [c.requests[0] for c in cases]
    print(f"{'method':10s} {'mode':8s} {'edits/s':>8s} {'seconds':>8s} {'ES':>22s} {'PS':>22s} {'NS':>22s} {'failed':>6s}")
    for name in methods:
        runs = {}
        for mode in ("alone", "batched"):
            scores: dict[str, list[bool]] = {"target": [], "paraphrase": [], "near": []}
            updates, failed = [], 0
            t = time.perf_counter()
            if mode == "batched":
                es.prepare_edits(model, reqs, name)
            for case, req in zip(cases, reqs):
                try:
                    h = es.apply_edit(model, req, name)
                except es.EditFailed:
                    failed += 1
                    updates.append(None)
                    scores["target"].append(False)
                    scores["paraphrase"] += [False] * sum(p.category == "paraphrase" for p in case.probes)
                    continue
                updates.append({n: d.clone() for n, d in h.delta().items()})
                t_score = time.perf_counter()
                for cat, xs in prob_scores(model, case).items():
                    scores.setdefault(cat, []).extend(xs)
                t -= time.perf_counter() - t_score  # scoring is not part of the edit's cost
                h.undo()
            seconds = time.perf_counter() - t
            runs[mode] = updates
            print(f"{name:10s} {mode:8s} {len(reqs) / seconds:8.3f} {seconds:8.1f} {cell(scores['target']):>22s} "
                  f"{cell(scores['paraphrase']):>22s} {cell(scores['near']):>22s} {failed:6d}")
            if mode == "alone":
                alone_s = seconds
        diff = max((float((b[n] - a[n]).norm() / a[n].norm()) for a, b in zip(runs["alone"], runs["batched"])
                    if a is not None and b is not None for n in a), default=float("nan"))
        print(f"{name:10s} batched/alone edits per second: {alone_s / seconds:.2f}x; largest relative weight-update "
              f"difference {diff:.1e}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    ap.add_argument("--n", type=int, default=20, help="CounterFact records (first n)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batched", action="store_true", help="ROME/MEMIT/AlphaEdit: batched target residuals vs alone")
    ap.add_argument("--model", default="smollm2-135m", help="built-in name, .gguf path, folder or hub id")
    args = ap.parse_args()
    model = es.load_model(args.model, dtype=args.dtype)
    cases = load_counterfact(limit=args.n)
    if args.batched:
        print(f"{model.name} {model.dtype}, {torch.get_num_threads()} threads; {len(cases)} CounterFact records, "
              "single-edit protocol (edit, score, undo)\n")
        batched(model, cases, args.methods or ["rome", "memit", "alphaedit"])
        return
    reqs = [c.requests[0] for c in cases]
    methods = args.methods or [m["name"] for m in es.list_methods()]
    fp = model.fingerprint()
    print(f"{model.name} {model.dtype}, {torch.get_num_threads()} threads; {len(reqs)} CounterFact edits "
          f"({cases.report.summary()})\n")
    print(f"{'method':16s} {'median s':>9s} {'p90 s':>7s} {'top1':>22s} {'prob (ES)':>22s} {'failed':>7s}")
    for name in methods:
        times, top1, prob, failed = [], [], [], 0
        for req in reqs:
            t = time.perf_counter()
            try:
                h = es.apply_edit(model, [req], name)
            except es.EditFailed:
                failed += 1
                times.append(time.perf_counter() - t)
                top1.append(False)
                prob.append(False)
                continue
            times.append(time.perf_counter() - t)
            a, b = efficacy(model, req)
            top1.append(a)
            prob.append(b)
            h.undo()
        assert model.fingerprint() == fp, "undo did not restore the model"
        q = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]

        def cell(xs):
            iv = wilson_interval(sum(xs), len(xs))
            return f"{sum(xs) / len(xs):.2f} [{iv.low:.2f},{iv.high:.2f}]"

        print(f"{name:16s} {statistics.median(times):9.2f} {q:7.2f} {cell(top1):>22s} {cell(prob):>22s} {failed:7d}")


if __name__ == "__main__":
    main()
