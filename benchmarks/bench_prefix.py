"""Evaluating an in-context edit: the shared demonstration prefix run once (KV cache) vs in every row.

    python benchmarks/bench_prefix.py --n 60

An IKE edit prepends the same ~500 tokens of demonstrations to every prompt. editscope's scoring and
greedy decoding notice that every sequence of a call starts with the same tokens, run them once and
reuse their keys and values; this script evaluates one IKE edit ("2+2=" -> "5", k=16) on the first
``n`` probes of the arithmetic suite both ways in one run and prints the seconds, the ratio and how
far the two results differ (they are the same computation up to float rounding).
"""

from __future__ import annotations

import argparse
import time

import torch

import editscope as es
import editscope.scoring as scoring
import editscope.scoring.forward as forward
from editscope.probes.registry import get_suite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60, help="probes of the arithmetic suite (n=8 grid) evaluated")
    ap.add_argument("--k", type=int, default=16, help="IKE demonstrations")
    args = ap.parse_args()
    model = es.load_model("smollm2-135m")
    suite = get_suite("arithmetic", n=8)
    probes = es.ProbeSet(list(suite)[: args.n], name=f"arithmetic-first-{args.n}")
    es.evaluate(model, probes)
    h = es.apply_edit(model, es.EditRequest("2+2=", "5"), "ike", k=args.k)
    context = len(scoring.encode_prompts(model, ["2+2="])[0])
    print(f"{model.name}, {torch.get_num_threads()} threads; IKE k={args.k}: {context} prompt tokens for '2+2=' "
          f"with the context; {len(probes)} probes\n")
    t = time.perf_counter()
    shared = es.evaluate(model, probes)
    t_shared = time.perf_counter() - t
    saved = forward.SHARED_PREFIX_MIN
    forward.SHARED_PREFIX_MIN = 10**9  # every row runs the whole context (read by SharedPrefix.of)
    try:
        t = time.perf_counter()
        full = es.evaluate(model, probes)
        t_full = time.perf_counter() - t
    finally:
        forward.SHARED_PREFIX_MIN = saved
    h.undo()
    same = sum(a["unchanged"] == b["unchanged"] and a["greedy"] == b["greedy"] for a, b in zip(shared.rows, full.rows))
    diff = max(abs(a["logprob"] - b["logprob"]) for a, b in zip(shared.rows, full.rows) if a["logprob"] is not None)
    print(f"{'evaluate (IKE edited)':32s} {'seconds':>8s} {'probes/s':>9s}")
    print(f"{'context in every row':32s} {t_full:8.1f} {len(probes) / t_full:9.2f}")
    print(f"{'shared prefix, run once':32s} {t_shared:8.1f} {len(probes) / t_shared:9.2f}")
    print(f"\nspeedup {t_full / t_shared:.1f}x; identical greedy/unchanged on {same}/{len(probes)} probes; "
          f"largest target log-probability difference {diff:.2e} nats")


if __name__ == "__main__":
    main()
