"""Causal tracing cost: one prompt traced with rows starting at their first restored block and
token (the default; earlier tokens from the corrupted run's KV cache) and with full passes, in
one process (ratio measured in one run; machines are noisy).

    python benchmarks/bench_trace.py [--model smollm2-135m] [--samples 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import editscope as es
import editscope.analysis.tracing as tracing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt", default="The Eiffel Tower is located in the city of")
    ap.add_argument("--subject", default="The Eiffel Tower")
    ap.add_argument("--samples", type=int, default=4)
    args = ap.parse_args()
    model = es.load_model(args.model)
    full = tracing.patched_probabilities
    got, secs = {}, {}
    for skip in (True, False):
        tracing.patched_probabilities = lambda *a, **k: full(*a, **{**k, "skip_early": skip})
        t = time.perf_counter()
        got[skip] = tracing.trace(model, args.prompt, None, args.subject, samples=args.samples, cache=False)
        secs[skip] = time.perf_counter() - t
    tracing.patched_probabilities = full
    r = got[True]
    diff = max(float(np.abs(got[True].grid(k) - got[False].grid(k)).max()) for k in r.scores)
    print(f"{model.name}: {len(r.tokens)} tokens, {args.samples} samples, kinds {', '.join(r.scores)}; "
          f"target {r.target!r} P clean {r.p_clean:.3f}")
    print(f"rows from their first restored block and token {secs[True]:.1f} s, full passes {secs[False]:.1f} s -> "
          f"{secs[False] / secs[True]:.2f}x; largest difference {diff:.1e}")


if __name__ == "__main__":
    main()
