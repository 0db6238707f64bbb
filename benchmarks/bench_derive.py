"""A derived model against its goals (issue "an arithmetic-competent model"): held-out greedy exact match
per operation (goal >= 0.95 each), general ability kept (ME-PPL_50 perplexity within 10% of the base
model's; LAMBADA and PIQA accuracy within 2 points), and the build time (goal <= 2 h on this CPU).
Also what the flagship study will ask of it: the sums of its 0..10 grid per operation (trained and
held-out pairs alike) and "2+2=" in every wording of the arithmetic suite, both models side by side.

    python benchmarks/bench_derive.py                          # smollm2-135m-arith (built if needed)
    python benchmarks/bench_derive.py --recipe NAME --limit 500

Builds the recipe when it is not cached (resumable: rerun after an interruption), then evaluates base
and derived model on the same examples in this one run and prints each figure with its goal.
"""

from __future__ import annotations

import argparse
import time

from editscope.metrics import load_corpus, perplexity
from editscope.metrics.answers import integer_reaches
from editscope.metrics.downstream import run_task
from editscope.probes.arithmetic import OPERATIONS, canonical_query
from editscope.scoring import greedy_continuations
from editscope.suites import arithmetic
from editscope.models.derive import RECIPES, _load_base, derive, manifest_of
from editscope.models.model import load_model


def general(model, limit: int) -> dict[str, float]:
    ppl = perplexity(model, load_corpus("me_ppl_50")).ppl
    lam = run_task(model, "lambada", limit=limit).metrics["acc"]
    piqa = run_task(model, "piqa", limit=limit).metrics["acc"]
    return {"me_ppl_50": ppl, "lambada": lam, "piqa": piqa}


def grid_right(model, n: int = 10) -> dict[str, tuple[int, int]]:
    """Per operation: (greedy answers equal to the true result, queries) over ``a op b=`` for a, b in 0..n."""
    out = {}
    for op in "+-*":
        cells = [(a, b) for a in range(n + 1) for b in range(n + 1)]
        gens = greedy_continuations(model, [canonical_query(a, op, b) for a, b in cells], max_new_tokens=6)
        right = sum(integer_reaches(g.text, [str(OPERATIONS[op](a, b))]) for g, (a, b) in zip(gens, cells))
        out[op] = (right, len(cells))
    return out


def wordings(model) -> list[tuple[str, str, bool]]:
    """"2+2=" and its paraphrases in the suite: (prompt, greedy answer, says 4)."""
    probes = [p for p in arithmetic("2+2=", n=2) if p.category in ("target", "paraphrase")]
    gens = greedy_continuations(model, [p.prompt for p in probes], max_new_tokens=6)
    return [(p.prompt, g.text, integer_reaches(g.text, ["4"])) for p, g in zip(probes, gens)]


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
    base_model, derived = _load_base(recipe), load_model(str(folder))
    for name, model in (("base", base_model), ("derived", derived)):
        g = grid_right(model)
        print(f"{name}: flagship grid 0..10 right " + ", ".join(f"{op} {r}/{n}" for op, (r, n) in g.items()))
        said = wordings(model)
        print(f"{name}: '2+2=' in {len(said)} wordings, answers 4 in {sum(ok for *_, ok in said)}: "
              + "; ".join(f"{p!r} -> {t!r}" for p, t, _ in said))
    base = general(base_model, args.limit)
    new = general(derived, args.limit)
    ratio = new["me_ppl_50"] / base["me_ppl_50"]
    print(f"ME-PPL_50 perplexity: base {base['me_ppl_50']:.2f}, derived {new['me_ppl_50']:.2f}, ratio {ratio:.3f} "
          f"(goal <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")
    for task in ("lambada", "piqa"):
        d = new[task] - base[task]
        print(f"{task} accuracy ({args.limit} examples): base {base[task]:.3f}, derived {new[task]:.3f}, "
              f"difference {d:+.3f} (goal >= -0.02: {'met' if d >= -0.02 else 'NOT met'})")


if __name__ == "__main__":
    main()
