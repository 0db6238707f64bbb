"""A derived model against its goals (issue "an arithmetic-competent model"): held-out greedy exact match
per operation (goal >= 0.95 each), general ability kept (ME-PPL_50 perplexity within 10% of the base
model's; LAMBADA and PIQA accuracy within 2 points), and the build time (goal <= 2 h on this CPU).

    python benchmarks/bench_derive.py                          # smollm2-135m-arith (built if needed)
    python benchmarks/bench_derive.py --recipe NAME --limit 500

Builds the recipe when it is not cached (resumable: rerun after an interruption), then evaluates base
and derived model on the same examples in this one run and prints each figure with its goal.
"""

from __future__ import annotations

import argparse
import time

from editscope.metrics import load_corpus, perplexity
from editscope.metrics.downstream import run_task
from editscope.models.derive import RECIPES, _load_base, derive, manifest_of
from editscope.models.model import load_model


def general(model, limit: int) -> dict[str, float]:
    ppl = perplexity(model, load_corpus("me_ppl_50")).ppl
    lam = run_task(model, "lambada", limit=limit).metrics["acc"]
    piqa = run_task(model, "piqa", limit=limit).metrics["acc"]
    return {"me_ppl_50": ppl, "lambada": lam, "piqa": piqa}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="smollm2-135m-arith")
    ap.add_argument("--limit", type=int, default=500, help="LAMBADA and PIQA examples (same for both models)")
    args = ap.parse_args()
    recipe = RECIPES[args.recipe]
    t = time.perf_counter()
    folder = derive(recipe)
    waited = time.perf_counter() - t
    m = manifest_of(recipe)
    print(f"{recipe.name}: {folder} (build {m['build_seconds']:.0f} s recorded; this call {waited:.0f} s; "
          f"goal <= 7200 s: {'met' if m['build_seconds'] <= 7200 else 'NOT met'})")
    for op, r in m["held_out_accuracy"].items():
        print(f"held-out {op}: {r['correct']}/{r['n']} = {r['accuracy']:.3f} "
              f"(goal >= 0.95: {'met' if r['accuracy'] >= 0.95 else 'NOT met'})")
    base = general(_load_base(recipe), args.limit)
    new = general(load_model(str(folder)), args.limit)
    ratio = new["me_ppl_50"] / base["me_ppl_50"]
    print(f"ME-PPL_50 perplexity: base {base['me_ppl_50']:.2f}, derived {new['me_ppl_50']:.2f}, ratio {ratio:.3f} "
          f"(goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")
    for task in ("lambada", "piqa"):
        d = new[task] - base[task]
        print(f"{task} accuracy ({args.limit} examples): base {base[task]:.3f}, derived {new[task]:.3f}, "
              f"difference {d:+.3f} (goal >= -0.02: {'met' if d >= -0.02 else 'NOT met'})")


if __name__ == "__main__":
    main()
