"""Edit throughput for many edits: each method's edits per second one at a time (one
``apply_edit`` per record, stacked as a sequential chain would) and batched (one call for the same
records), on the same CounterFact records in one process, with their ratio.

    python benchmarks/bench_lifelong.py                       # 100 records, every lifelong-capable method
    python benchmarks/bench_lifelong.py --n 20 --methods ultraedit locft-bf

Each mode starts from the base weights (the previous mode's edits undone) and is timed over its
``apply_edit`` calls only (guard included; key statistics are computed before timing). Prints, per
method, edits/s one at a time, edits/s batched, the ratio, and the batched call's mean target loss
before and after (so that a fast call that edits nothing shows). A method that takes one request per
call (ROME) has no batched mode. Machines are noisy: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch

import editscope as es
from editscope.methods import get_method
from editscope.probes.datasets import load_counterfact

METHODS = ("ultraedit", "locft-bf", "emmet", "memit", "alphaedit", "ft-m", "rome")


def timed_chain(model, reqs, method: str, batched: bool) -> tuple[float, dict]:
    handles, info = [], {}
    t = time.perf_counter()
    try:
        if batched:
            h = es.apply_edit(model, reqs, method)
            handles.append(h)
            info = {"before": sum(h.info["target_loss_before"]) / len(reqs),
                    "after": sum(h.info["target_loss_after"]) / len(reqs)}
        else:
            for r in reqs:
                try:
                    handles.append(es.apply_edit(model, [r], method))
                except es.methods.EditFailed:
                    pass  # rolled back: timed, not counted as an edit
        return time.perf_counter() - t, {**info, "applied": len(handles) if not batched else len(reqs)}
    finally:
        for h in reversed(handles):
            h.undo()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="CounterFact records")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    model = es.load_model(args.model)
    reqs = [c.requests[0] for c in load_counterfact(limit=args.n)]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, model {args.model}, {len(reqs)} records")
    print(f"{'method':<11} {'one at a time':>15} {'batched':>12} {'ratio':>7}   batched target loss")
    for name in args.methods:
        m = get_method(name)
        es.apply_edit(model, reqs[:1], name).undo()  # warm-up: key statistics, context templates
        one_s, one = timed_chain(model, reqs, name, batched=False)
        one_rate = one["applied"] / one_s
        if m.one_at_a_time:
            print(f"{name:<11} {one_rate:>11.2f} e/s {'-':>12} {'-':>7}   (one request per call)")
            continue
        bat_s, bat = timed_chain(model, reqs, name, batched=True)
        bat_rate = len(reqs) / bat_s
        print(f"{name:<11} {one_rate:>11.2f} e/s {bat_rate:>8.2f} e/s {bat_rate / one_rate:>6.1f}x   "
              f"{bat['before']:.2f} -> {bat['after']:.2f} nats/token")


if __name__ == "__main__":
    main()
